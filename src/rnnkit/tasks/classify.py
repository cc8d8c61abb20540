"""The `classify` task: text classification (sentiment by default), with transfer learning.

    rnnkit train classify [DATA] [--pooling max] [--init-from LM_RUN] ...
    rnnkit evaluate RUN [DATA]
    rnnkit predict RUN "a sentence" ...

DATA is the built-in `rotten_tomatoes` (fresh vs rotten snippets), a CSV/TSV file with `text`
and `label` columns (split 80/10/10 into train/valid/test by a fixed shuffle), or a folder with
`train`, `valid` and `test` files (.csv or .tsv). The tokenizer (words by default) is fitted on
the training texts; the labels are the sorted set of training labels. Metrics: accuracy and
macro F1, next to those of always predicting the most frequent training label.

With `--init-from LM_RUN` (a run of the `lm` task on text) the classifier takes the language
model's tokenizer and encoder architecture, and its encoder starts from the language model's
weights (ULMFiT-style transfer): embedding and recurrent layers are copied by name.

Run directory extras: tokenizer.json, labels.json (the label names, index = class id).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from rnnkit.data import CharTokenizer, WordTokenizer, collate, datasets, read_labelled
from rnnkit.data.tokenizer import Tokenizer, load_tokenizer
from rnnkit.models.classifier import Classifier, ClassifierConfig
from rnnkit.models.encoder import TextEncoder, copy_encoder_weights
from rnnkit.tasks import base
from rnnkit.tasks.base import Run, Task, TaskError
from rnnkit.train import TrainConfig, evaluate, fit, seed_everything
from rnnkit.train.metrics import make_metric

METRICS = ("accuracy", "f1")
SPLITS = ("train", "valid", "test")
Examples = list[tuple[str, str]]  # (text, label)
Samples = list[tuple[list[int], int]]  # (token ids, class id)


@dataclass(frozen=True)
class ClassifyOptions:
    """Model and data options of `rnnkit train classify` (one flag each)."""

    cell: Literal["lstm", "gru", "rnn"] = field(
        default="lstm", metadata={"help": "recurrent cell of the encoder"}
    )
    embedding_dim: int = field(default=128, metadata={"help": "features per token embedding"})
    hidden_size: int = field(default=128, metadata={"help": "recurrent state size per direction"})
    num_layers: int = field(default=1, metadata={"help": "stacked recurrent layers"})
    bidirectional: bool = field(default=True, metadata={"help": "read the text both ways"})
    dropout: float = field(
        default=0.4, metadata={"help": "dropout on embeddings, between layers and before the head"}
    )
    pooling: Literal["last", "mean", "max", "attention"] = field(
        default="max", metadata={"help": "how the encoder's outputs become one vector"}
    )
    tokenizer: Literal["word", "char"] = field(
        default="word", metadata={"help": "tokens: words and punctuation, or characters"}
    )
    lowercase: bool = field(default=True, metadata={"help": "lower-case the text first"})
    min_freq: int = field(
        default=2, metadata={"help": "tokens seen fewer times in training become <unk>"}
    )
    max_vocab: int = field(default=20_000, metadata={"help": "largest vocabulary (with specials)"})
    max_length: int = field(default=256, metadata={"help": "tokens kept per text (the first)"})
    text_column: str = field(default="text", metadata={"help": "text column of a CSV/TSV DATA"})
    label_column: str = field(default="label", metadata={"help": "label column of a CSV/TSV DATA"})
    train_size: int | None = field(
        default=None, metadata={"help": "use only the first N training examples (none: all)"}
    )
    init_from: str | None = field(
        default=None,
        metadata={
            "help": "an lm run: start from its tokenizer and encoder weights (transfer)",
            "metavar": "RUN",
        },
    )


# --- data -------------------------------------------------------------------------------------


def read_splits(data: str | None, options: ClassifyOptions) -> tuple[dict[str, Examples], str]:
    """{split: [(text, label), ...]} of DATA, and the source to record for `evaluate`."""
    source = base.resolve_data(data, TASK.default_data, ("classify",))
    if isinstance(source, str):
        return datasets.load(source), source
    if source.is_dir():
        files = {split: _split_file(source, split) for split in SPLITS}
        splits = {split: read_labelled(path, *_columns(options)) for split, path in files.items()}
    else:
        splits = split_examples(read_labelled(source, *_columns(options)))
    return splits, str(source.resolve())  # absolute: `evaluate` may run from elsewhere


def _columns(options: ClassifyOptions) -> tuple[str, str]:
    return options.text_column, options.label_column


def _split_file(folder: Path, split: str) -> Path:
    for suffix in (".csv", ".tsv"):
        if (folder / f"{split}{suffix}").is_file():
            return folder / f"{split}{suffix}"
    raise TaskError(f"{folder}: a DATA folder needs {split}.csv or {split}.tsv")


def split_examples(examples: Examples) -> dict[str, Examples]:
    """80/10/10 % train/valid/test of one file, by a shuffle that is the same on every run."""
    if len(examples) < 10:
        raise TaskError(f"{len(examples)} examples are too few to split into train/valid/test")
    order = torch.randperm(len(examples), generator=torch.Generator().manual_seed(0)).tolist()
    shuffled = [examples[i] for i in order]
    cut1, cut2 = round(0.8 * len(examples)), round(0.9 * len(examples))
    return {"train": shuffled[:cut1], "valid": shuffled[cut1:cut2], "test": shuffled[cut2:]}


def fit_tokenizer(texts: list[str], options: ClassifyOptions) -> Tokenizer:
    cls = WordTokenizer if options.tokenizer == "word" else CharTokenizer
    return cls.fit(
        texts, min_freq=options.min_freq, max_size=options.max_vocab, lowercase=options.lowercase
    )


def to_samples(
    examples: Examples, tokenizer: Tokenizer, labels: list[str], max_length: int
) -> Samples:
    """(token ids, class id) per example; a label the run never saw is a TaskError."""
    index = {label: i for i, label in enumerate(labels)}
    unknown = sorted({label for _, label in examples} - set(index))
    if unknown:
        raise TaskError(f"labels {unknown[:5]} were not seen in training; the run knows {labels}")
    return [(encode(text, tokenizer, max_length), index[label]) for text, label in examples]


def encode(text: str, tokenizer: Tokenizer, max_length: int) -> list[int]:
    ids = tokenizer.encode(text)[:max_length]
    if not ids:
        raise TaskError(f"the text {text!r} has no tokens; give some text")
    return ids


# --- train ------------------------------------------------------------------------------------


def train(data: str | None, options: ClassifyOptions, config: TrainConfig) -> dict[str, float]:
    """Fit a classifier on DATA, save it in config.run_dir, return its test metrics."""
    seed_everything(config.seed)  # the model's initial weights too, not only training
    splits, source = read_splits(data, options)
    if options.train_size is not None:
        splits["train"] = splits["train"][: options.train_size]
    labels = sorted({label for _, label in splits["train"]})
    if len(labels) < 2:
        raise TaskError(f"the training data has {len(labels)} label(s) {labels}; need at least 2")
    lm = _language_model_run(options.init_from) if options.init_from else None
    if lm is not None:
        options = _options_of_encoder(options, lm)
    tokenizer = (
        lm.extras["tokenizer"]
        if lm is not None
        else fit_tokenizer([text for text, _ in splits["train"]], options)
    )
    samples = {s: to_samples(splits[s], tokenizer, labels, options.max_length) for s in SPLITS}
    model = Classifier(_model_config(options, tokenizer.vocab_size, len(labels)))
    if lm is not None:
        copy_encoder_weights(lm.model, model)
    config = dataclasses.replace(
        config, metrics=_with_metrics(config.metrics), num_classes=len(labels)
    )
    majority = _most_frequent([label for _, label in splits["train"]])
    info = base.run_info(TASK, options, model, data=source, majority_label=majority)
    _save_extras(config.run_dir, tokenizer, labels)
    lengths = [len(ids) for ids, _ in samples["train"]]  # batches of similar lengths
    fit(
        model, samples["train"], samples["valid"], config,
        collate=collate, run_info=info, lengths=lengths,
    )  # fmt: skip
    metrics = _metrics(model, samples["test"], config, labels.index(majority))
    base.record_metrics(config.run_dir, "test", metrics)
    return metrics


def _model_config(options: ClassifyOptions, vocab_size: int, num_classes: int) -> ClassifierConfig:
    return ClassifierConfig(
        vocab_size=vocab_size,
        num_classes=num_classes,
        embedding_dim=options.embedding_dim,
        hidden_size=options.hidden_size,
        num_layers=options.num_layers,
        cell=options.cell,
        bidirectional=options.bidirectional,
        dropout=options.dropout,
        pooling=options.pooling,
    )


def _with_metrics(requested: tuple[str, ...]) -> tuple[str, ...]:
    return METRICS + tuple(name for name in requested if name not in METRICS)


def _most_frequent(labels: list[str]) -> str:
    return max(sorted(set(labels)), key=labels.count)  # ties: the first label in sorted order


def _save_extras(run_dir: str | None, tokenizer: Tokenizer, labels: list[str]) -> None:
    if run_dir is None or not base.is_main_process():
        return
    from rnnkit.data.files import write_json

    tokenizer.save(Path(run_dir) / "tokenizer.json")
    write_json(Path(run_dir) / "labels.json", {"labels": labels})


def _metrics(model: Classifier, samples: Samples, config: TrainConfig, majority: int) -> dict:
    """Loss, accuracy and F1 of the model; accuracy and F1 of always answering `majority`."""
    scores = evaluate(model, samples, METRICS, config, collate=collate)
    targets = torch.tensor([label for _, label in samples])
    constant = torch.full_like(targets, majority)
    for name in METRICS:
        metric = make_metric(name, config.num_classes, None)
        scores[f"majority_{name}"] = float(metric(constant, targets))
    return scores


# --- transfer from a language model -----------------------------------------------------------


def _language_model_run(run_dir: str) -> Run:
    """The run to transfer from: it must hold a text tokenizer and a TextEncoder."""
    run = base.load_run(run_dir)
    encoder = getattr(run.model, "encoder", None)
    if "tokenizer" not in run.extras or not isinstance(encoder, TextEncoder):
        raise TaskError(
            f"--init-from {run_dir}: a {run.task.name!r} run without a text encoder; transfer "
            "needs a text language model run (`rnnkit train lm`)"
        )
    if encoder.bidirectional:
        raise TaskError(
            f"--init-from {run_dir}: its encoder is bidirectional; transfer needs a forward-only "
            "encoder, such as a language model's (`rnnkit train lm`)"
        )
    return run


def _options_of_encoder(options: ClassifyOptions, lm: Run) -> ClassifyOptions:
    """The options with the language model's encoder architecture (it must match to copy)."""
    encoder = lm.model.encoder
    taken = {
        "cell": encoder.cell,
        "embedding_dim": encoder.embedding_dim,
        "hidden_size": encoder.hidden_size,
        "num_layers": encoder.num_layers,
        "bidirectional": False,
    }
    changed = {k: v for k, v in taken.items() if getattr(options, k) != v}
    if changed and base.is_main_process():
        print(f"--init-from {lm.run_dir}: encoder taken from the language model: {changed}")
    return dataclasses.replace(options, **taken)


# --- a trained run ----------------------------------------------------------------------------


def load_extras(run_dir: Path) -> dict[str, Any]:
    """{"tokenizer": Tokenizer, "labels": [label names]} of a classify run."""
    labels_file = Path(run_dir) / "labels.json"
    try:
        labels = json.loads(labels_file.read_text(encoding="utf-8"))["labels"]
    except (OSError, ValueError, KeyError) as error:
        raise TaskError(f"{labels_file}: cannot read the labels ({error})") from None
    return {"tokenizer": load_tokenizer(Path(run_dir) / "tokenizer.json"), "labels": labels}


def evaluate_run(run: Run, data: str | None) -> dict[str, float]:
    """The metrics of `train` on DATA: a built-in dataset's or a folder's test split, a whole
    file, or (None) the test split of the data the run was trained on."""
    options = run.options
    source = base.resolve_data(data or run.info.get("data"), TASK.default_data, ("classify",))
    if isinstance(source, str):
        examples = datasets.load(source)["test"]
    elif source.is_dir():
        examples = read_labelled(_split_file(source, "test"), *_columns(options))
    elif data is None:
        examples = split_examples(read_labelled(source, *_columns(options)))["test"]
    else:
        examples = read_labelled(source, *_columns(options))
    labels, tokenizer = run.extras["labels"], run.extras["tokenizer"]
    samples = to_samples(examples, tokenizer, labels, options.max_length)
    majority = labels.index(run.info["majority_label"])
    return _metrics(run.model, samples, run.train_config, majority)


def probabilities(run: Run, texts: list[str]) -> torch.Tensor:
    """(N, C) class probabilities of `texts` under the run's model."""
    tokenizer, max_length = run.extras["tokenizer"], run.options.max_length
    batch = collate([(encode(text, tokenizer, max_length), None) for text in texts])
    with torch.no_grad():
        return run.model.probabilities(batch.to(next(run.model.parameters()).device)).cpu()


def predict(run: Run, inputs: list[str]) -> list[str]:
    """One line per text: `label<TAB>probability<TAB>text`."""
    probs = probabilities(run, inputs)
    best, ids = probs.max(dim=-1)
    labels = run.extras["labels"]
    return [
        f"{labels[i]}\t{p:.3f}\t{text}"
        for text, p, i in zip(inputs, best.tolist(), ids.tolist(), strict=True)
    ]


TASK = Task(
    name="classify",
    summary="text classification (sentiment: fresh vs rotten); --init-from an lm run",
    options=ClassifyOptions,
    default_data="rotten_tomatoes",
    train=train,
    load_extras=load_extras,
    evaluate=evaluate_run,
    predict=predict,
    # accuracy and F1 are always computed (num_classes is set from the training labels);
    # early stopping keeps the weights of the epoch with the best validation accuracy
    train_defaults={
        "epochs": 15,
        "lr": 2e-3,
        "metrics": METRICS,
        "num_classes": 2,
        "monitor": "val_accuracy",
        "patience": 3,
    },
)
