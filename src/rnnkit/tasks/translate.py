"""The `translate` task: sentence-to-sentence translation with an attentional Seq2Seq.

    rnnkit train translate [DATA] [--attention multiplicative] [--beam 4] ...
    rnnkit evaluate RUN [DATA]
    rnnkit predict RUN "a sentence" ...

DATA is the built-in `bible_en_es` (English -> Spanish verses), `reverse` (a synthetic check:
space-separated digit strings and the same digits reversed, generated from fixed seeds), a
CSV/TSV file of pairs (columns `--source-column`, `--target-column`; split 80/10/10 by a fixed
shuffle) or a folder with `train`, `valid` and `test` files (.csv or .tsv). Pairs with more than
`--max-length` tokens on either side are dropped; `--train-size N` keeps the N shortest
training pairs. Source and target have their own word tokenizers, fitted on the training pairs.

Target ids: a `Vocab` numbers its specials pad 0, unk 1, bos 2, eos 3 while Seq2Seq expects
PAD 0, BOS 1, EOS 2. The target side therefore swaps the four special ids (`to_model`,
`to_vocab`); every other id is the same in both numberings.

Test metrics: BLEU (sacrebleu's corpus_bleu on the detokenized text) and exact-sequence
accuracy, both of beam search with `--beam` and `--length-penalty`; the loss is teacher-forced.
The end of training also writes plots/attention.png, the attention weights of one test sentence
(the longest of the first 20).

Run directory extras: source_tokenizer.json, target_tokenizer.json.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from matplotlib.figure import Figure

from rnnkit import plots
from rnnkit.data import WordTokenizer, collate, datasets, read_pairs
from rnnkit.data.batch import Batch
from rnnkit.data.tokenizer import load_tokenizer
from rnnkit.models.seq2seq import EOS, PAD, Seq2Seq, Seq2SeqConfig
from rnnkit.tasks import base
from rnnkit.tasks.base import Run, Task, TaskError
from rnnkit.train import TrainConfig, evaluate, fit, seed_everything

SPLITS = ("train", "valid", "test")
REVERSE = "reverse"  # the synthetic check, generated rather than read
REVERSE_SIZES = {"train": 3000, "valid": 200, "test": 200}
Pairs = list[tuple[str, str]]  # (source text, target text)
Samples = list[tuple[list[int], list[int]]]  # (source ids, target ids in Seq2Seq numbering)

# Vocab ids pad 0, unk 1, bos 2, eos 3 <-> Seq2Seq ids PAD 0, BOS 1, EOS 2 (unk becomes 3)
_TO_MODEL = (0, 3, 1, 2)
_TO_VOCAB = (0, 2, 3, 1)


@dataclass(frozen=True)
class TranslateOptions:
    """Model and data options of `rnnkit train translate` (one flag each)."""

    cell: Literal["lstm", "gru", "rnn"] = field(
        default="lstm", metadata={"help": "recurrent cell of the encoder and the decoder"}
    )
    embedding_dim: int = field(default=128, metadata={"help": "features per token embedding"})
    hidden_size: int = field(default=128, metadata={"help": "recurrent state size"})
    num_layers: int = field(default=1, metadata={"help": "stacked encoder layers"})
    bidirectional: bool = field(default=True, metadata={"help": "encoder reads both ways"})
    attention: Literal["additive", "multiplicative"] = field(
        default="additive", metadata={"help": "Bahdanau (additive) or Luong general attention"}
    )
    dropout: float = field(default=0.2, metadata={"help": "dropout on embeddings and outputs"})
    teacher_forcing: float = field(
        default=1.0, metadata={"help": "probability of feeding the gold previous token"}
    )
    beam: int = field(default=4, metadata={"help": "beam width of decoding (1: greedy)"})
    length_penalty: float = field(
        default=0.6, metadata={"help": "GNMT length penalty alpha of beam search (0: none)"}
    )
    max_length: int = field(
        default=30, metadata={"help": "pairs with more tokens on either side are dropped"}
    )
    lowercase: bool = field(default=True, metadata={"help": "lower-case the text first"})
    min_freq: int = field(
        default=1, metadata={"help": "tokens seen fewer times in training become <unk>"}
    )
    max_vocab: int = field(default=20_000, metadata={"help": "largest vocabulary per side"})
    train_size: int | None = field(
        default=None, metadata={"help": "keep the N shortest training pairs (none: all)"}
    )
    source_column: str = field(default="source", metadata={"help": "source column of a file"})
    target_column: str = field(default="target", metadata={"help": "target column of a file"})


# --- data -------------------------------------------------------------------------------------


def reverse_pairs(count: int, seed: int, max_digits: int = 8) -> Pairs:
    """`count` pairs ("3 1 4", "4 1 3") of 1..max_digits random digits, from `seed`."""
    rng = random.Random(seed)
    pairs = []
    for _ in range(count):
        digits = [str(rng.randrange(10)) for _ in range(rng.randint(1, max_digits))]
        pairs.append((" ".join(digits), " ".join(reversed(digits))))
    return pairs


def read_splits(data: str | None, options: TranslateOptions) -> tuple[dict[str, Pairs], str]:
    """{split: [(source, target), ...]} of DATA, and the source to record for `evaluate`."""
    if data == REVERSE:
        seeds = {"train": 0, "valid": 1, "test": 2}
        return {s: reverse_pairs(n, seeds[s]) for s, n in REVERSE_SIZES.items()}, REVERSE
    source = base.resolve_data(data, TASK.default_data, ("translate",))
    if isinstance(source, str):
        return datasets.load(source), source
    if source.is_dir():
        splits = {split: _read(_split_file(source, split), options) for split in SPLITS}
    else:
        splits = split_pairs(_read(source, options))
    return splits, str(source.resolve())  # absolute: `evaluate` may run from elsewhere


def _read(path: Path, options: TranslateOptions) -> Pairs:
    return read_pairs(path, options.source_column, options.target_column)


def _split_file(folder: Path, split: str) -> Path:
    for suffix in (".csv", ".tsv"):
        if (folder / f"{split}{suffix}").is_file():
            return folder / f"{split}{suffix}"
    raise TaskError(f"{folder}: a DATA folder needs {split}.csv or {split}.tsv")


def split_pairs(pairs: Pairs) -> dict[str, Pairs]:
    """80/10/10 % train/valid/test of one file, by a shuffle that is the same on every run."""
    if len(pairs) < 10:
        raise TaskError(f"{len(pairs)} pairs are too few to split into train/valid/test")
    order = torch.randperm(len(pairs), generator=torch.Generator().manual_seed(0)).tolist()
    shuffled = [pairs[i] for i in order]
    cut1, cut2 = round(0.8 * len(pairs)), round(0.9 * len(pairs))
    return {"train": shuffled[:cut1], "valid": shuffled[cut1:cut2], "test": shuffled[cut2:]}


def to_model(ids: list[int]) -> list[int]:
    """Target vocab ids -> Seq2Seq ids (the four specials swapped, see the module)."""
    return [_TO_MODEL[i] if i < len(_TO_MODEL) else i for i in ids]


def to_vocab(ids: list[int]) -> list[int]:
    """Seq2Seq ids -> target vocab ids; the inverse of `to_model`."""
    return [_TO_VOCAB[i] if i < len(_TO_VOCAB) else i for i in ids]


def to_samples(pairs: Pairs, tokenizers: dict[str, WordTokenizer], max_length: int) -> Samples:
    """(source ids, target ids ending in EOS) of the pairs no longer than max_length tokens."""
    return [sample for sample, _ in _kept(pairs, tokenizers, max_length)]


def _kept(
    pairs: Pairs, tokenizers: dict[str, WordTokenizer], max_length: int
) -> list[tuple[tuple[list[int], list[int]], list[str]]]:
    """(sample, the target's tokens as text) of each pair `to_samples` keeps: the reference
    translations are scored on these, so that a word outside the vocabulary, `<unk>` in the
    sample, is never matched by an `<unk>` of the model's."""
    kept = []
    for source, target in pairs:
        source_ids = tokenizers["source"].encode(source)
        target_tokens = tokenizers["target"].tokenize(target)
        if 0 < len(source_ids) <= max_length and len(target_tokens) <= max_length:
            target_ids = tokenizers["target"].vocab.encode(target_tokens)
            kept.append(((source_ids, to_model(target_ids) + [EOS]), target_tokens))
    return kept


def collate_pairs(samples: Samples) -> Batch:
    """A Batch with targets (B, T) padded with PAD (0), as Seq2Seq's loss expects."""
    return collate(samples, target_padding_value=PAD)


# --- train ------------------------------------------------------------------------------------


def train(data: str | None, options: TranslateOptions, config: TrainConfig) -> dict[str, float]:
    """Fit a Seq2Seq on DATA, save it in config.run_dir, return its test metrics."""
    seed_everything(config.seed)
    splits, source = read_splits(data, options)
    tokenizers = {
        side: WordTokenizer.fit(
            [pair[i] for pair in splits["train"]],
            min_freq=options.min_freq,
            max_size=options.max_vocab,
            lowercase=options.lowercase,
        )
        for i, side in enumerate(("source", "target"))
    }
    samples = {s: to_samples(splits[s], tokenizers, options.max_length) for s in SPLITS}
    if options.train_size is not None:  # the shortest pairs: the easiest to learn first
        by_length = sorted(samples["train"], key=lambda s: len(s[0]) + len(s[1]))
        samples["train"] = by_length[: options.train_size]
    for split in SPLITS:
        if not samples[split]:
            raise TaskError(f"no {split} pairs of at most --max-length {options.max_length}")
    model = Seq2Seq(_model_config(options, tokenizers))
    info = base.run_info(TASK, options, model, data=source)
    _save_extras(config.run_dir, tokenizers)
    lengths = [len(source) + len(target) for source, target in samples["train"]]  # buckets
    fit(
        model, samples["train"], samples["valid"], config,
        collate=collate_pairs, run_info=info, lengths=lengths,
    )  # fmt: skip
    metrics = _metrics(model, splits["test"], tokenizers, options, config)
    base.record_metrics(config.run_dir, "test", metrics)
    if config.run_dir is not None and base.is_main_process():
        shown = max(samples["test"][:20], key=lambda sample: len(sample[0]))  # a long one
        folder = Path(config.run_dir) / "plots"
        folder.mkdir(exist_ok=True)
        plots.save_png(
            attention_figure(model, shown, tokenizers, options), folder / "attention.png"
        )
    return metrics


def _model_config(options: TranslateOptions, tokenizers: dict[str, Any]) -> Seq2SeqConfig:
    return Seq2SeqConfig(
        source_vocab_size=tokenizers["source"].vocab_size,
        target_vocab_size=tokenizers["target"].vocab_size,  # same count in both numberings
        embedding_dim=options.embedding_dim,
        hidden_size=options.hidden_size,
        num_layers=options.num_layers,
        cell=options.cell,
        bidirectional=options.bidirectional,
        attention=options.attention,
        dropout=options.dropout,
        teacher_forcing=options.teacher_forcing,
    )


def _save_extras(run_dir: str | None, tokenizers: dict[str, Any]) -> None:
    if run_dir is None or not base.is_main_process():
        return
    for side, tokenizer in tokenizers.items():
        tokenizer.save(Path(run_dir) / f"{side}_tokenizer.json")


# --- decoding and metrics ---------------------------------------------------------------------


def decode(
    model: Seq2Seq, sources: list[list[int]], options: TranslateOptions, batch_size: int
) -> list[tuple[list[int], torch.Tensor]]:
    """(target vocab ids without EOS, attention (L, S)) of beam search, per source."""
    model.eval()
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(sources), batch_size):
        batch = collate([(ids, None) for ids in sources[start : start + batch_size]])
        decoded = model.beam_search(
            batch.inputs.to(device),
            batch.lengths.to(device),
            beam=min(options.beam, model.config.target_vocab_size),
            max_len=options.max_length + 1,
            length_penalty=options.length_penalty,
        )
        for tokens, weights, length in zip(
            decoded.tokens.tolist(), decoded.attention.cpu(), batch.lengths.tolist(), strict=True
        ):
            steps = tokens.index(EOS) if EOS in tokens else len(tokens)
            out.append((to_vocab(tokens[:steps]), weights[: steps + 1, :length]))
    return out


def _metrics(
    model: Seq2Seq,
    pairs: Pairs,
    tokenizers: dict[str, WordTokenizer],
    options: TranslateOptions,
    config: TrainConfig,
) -> dict[str, float]:
    """Teacher-forced loss; BLEU and exact-sequence accuracy of beam search, against the
    reference translations as text (lower-cased with --lowercase), not as vocabulary ids."""
    kept = _kept(pairs, tokenizers, options.max_length)
    if not kept:
        raise TaskError(f"no test pairs of at most --max-length {options.max_length}")
    samples = [sample for sample, _ in kept]
    scores = evaluate(model, samples, (), config, collate=collate_pairs)
    batch_size = config.eval_batch_size or config.batch_size
    hypotheses = [ids for ids, _ in decode(model, [s for s, _ in samples], options, batch_size)]
    references = [tokens for _, tokens in kept]
    return scores | translation_scores(hypotheses, references, tokenizers["target"])


def translation_scores(
    hypotheses: list[list[int]], references: list[list[str]], target: WordTokenizer
) -> dict[str, float]:
    """{"bleu": sacrebleu's corpus BLEU, "exact_accuracy"} of hypotheses (target vocabulary
    ids) against the references' tokens as text (`_kept`): `<unk>` matches nothing."""
    import sacrebleu

    hypothesis_tokens = [target.vocab.decode(ids) for ids in hypotheses]
    exact = sum(h == r for h, r in zip(hypothesis_tokens, references, strict=True))
    bleu = sacrebleu.corpus_bleu(
        [target.join(tokens) for tokens in hypothesis_tokens],
        [[target.join(tokens) for tokens in references]],
    )
    return {"bleu": float(bleu.score), "exact_accuracy": exact / len(references)}


def attention_figure(
    model: Seq2Seq,
    sample: tuple[list[int], list[int]],
    tokenizers: dict[str, Any],
    options: TranslateOptions,
) -> Figure:
    """The attention map of beam search translating `sample`'s source (`plots.plot_attention`)."""
    ((ids, weights),) = decode(model, [sample[0]], options, batch_size=1)
    source_tokens = tokenizers["source"].vocab.decode(sample[0], skip_specials=False)
    output_tokens = tokenizers["target"].vocab.decode(ids, skip_specials=False) + ["<eos>"]
    output_tokens = output_tokens[: len(weights)]  # no <eos> row when decoding hit max_len
    return plots.plot_attention(weights.numpy(), source_tokens, output_tokens)


# --- a trained run ----------------------------------------------------------------------------


def load_extras(run_dir: Path) -> dict[str, Any]:
    """{"tokenizers": {"source": ..., "target": ...}} of a translate run."""
    return {
        "tokenizers": {
            side: load_tokenizer(Path(run_dir) / f"{side}_tokenizer.json")
            for side in ("source", "target")
        }
    }


def evaluate_run(run: Run, data: str | None) -> dict[str, float]:
    """The test metrics of `train` on DATA: the test split of a built-in dataset, `reverse` or
    a folder, a whole file, or (None) the test split of the data the run was trained on."""
    options = run.options
    data = data or run.info.get("data")
    if data == REVERSE:
        pairs = read_splits(REVERSE, options)[0]["test"]
    else:
        source = base.resolve_data(data, TASK.default_data, ("translate",))
        if isinstance(source, str):
            pairs = datasets.load(source)["test"]
        elif source.is_dir():
            pairs = _read(_split_file(source, "test"), options)
        elif data == run.info.get("data"):
            pairs = split_pairs(_read(source, options))["test"]
        else:
            pairs = _read(source, options)
    return _metrics(run.model, pairs, run.extras["tokenizers"], options, run.train_config)


def predict(run: Run, inputs: list[str]) -> list[str]:
    """One line per sentence: its translation by beam search."""
    tokenizers = run.extras["tokenizers"]
    sources = [tokenizers["source"].encode(text) for text in inputs]
    for text, ids in zip(inputs, sources, strict=True):
        if not ids:
            raise TaskError(f"the text {text!r} has no tokens; give some text")
    decoded = decode(run.model, sources, run.options, run.train_config.batch_size)
    return [tokenizers["target"].decode(ids) for ids, _ in decoded]


def plot_predictions(run: Run, inputs: list[str], folder: Path) -> list[Path]:
    """The attention map of each sentence's translation: folder/attention-<n>.png (n from 1)."""
    tokenizers = run.extras["tokenizers"]
    paths = []
    for number, text in enumerate(inputs, start=1):
        ids = tokenizers["source"].encode(text)
        if not ids:
            raise TaskError(f"the text {text!r} has no tokens; give some text")
        path = folder / f"attention-{number}.png"
        plots.save_png(attention_figure(run.model, (ids, []), tokenizers, run.options), path)
        paths.append(path)
    return paths


TASK = Task(
    name="translate",
    summary="translation with an attentional encoder-decoder (English -> Spanish verses)",
    options=TranslateOptions,
    default_data="bible_en_es",
    train=train,
    load_extras=load_extras,
    evaluate=evaluate_run,
    predict=predict,
    plot_predictions=plot_predictions,
    # early stopping keeps the weights of the epoch with the lowest validation loss
    train_defaults={"epochs": 20, "lr": 2e-3, "monitor": "val_loss", "patience": 3},
)
