"""The `tag` task: one tag per token (part of speech, named entities) with `rnnkit.models.Tagger`.

    rnnkit train tag                          # UPOS on the built-in UD English EWT sample
    rnnkit train tag path/to/ud_english_ewt/  # a folder of *train*/*dev*/*test* .conllu files
    rnnkit train tag ner.txt --no-crf         # one CoNLL-U or column-CoNLL file (cut 80/10/10)
    rnnkit predict RUN "The cat sat on the mat."

DATA is a built-in tagging dataset, a CoNLL-U file (`.conllu`, tags from `--tag-column`), a
column-CoNLL file (token first, tag last: CoNLL-2000/2003), or a folder holding one file per
split (names containing train, dev or valid, and test). Metrics: token accuracy, and for BIO
tag sets (every tag O, B-X or I-X) the exact-span entity precision, recall and F1 of conlleval.
The run keeps `words.json`, `chars.json` (vocabularies) and `tags.json` (the tag list).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from rnnkit.data import (
    Batch,
    TaggedSentence,
    Vocab,
    datasets,
    pad_sequences,
    read_conll,
    read_conllu,
)
from rnnkit.data.files import read_json, write_json
from rnnkit.models.crf import IGNORE_INDEX
from rnnkit.models.tagger import Tagger, TaggerConfig
from rnnkit.tasks.base import (
    Run,
    Task,
    TaskError,
    is_main_process,
    record_metrics,
    resolve_data,
    run_info,
)
from rnnkit.train import TrainConfig, fit, seed_everything

MAX_WORD_CHARS = 30  # the character RNN reads at most this many characters of a word
SPLIT_NAMES = {"train": ("train",), "valid": ("dev", "valid"), "test": ("test",)}


@dataclass(frozen=True)
class TagOptions:
    """Model and data options of `rnnkit train tag`."""

    cell: str = field(
        default="lstm", metadata={"help": "recurrent cell", "choices": ("lstm", "gru", "rnn")}
    )
    hidden_size: int = field(default=128, metadata={"help": "word RNN units per direction"})
    num_layers: int = field(default=1, metadata={"help": "stacked word RNN layers"})
    bidirectional: bool = field(default=True, metadata={"help": "read sentences both ways"})
    dropout: float = field(default=0.33, metadata={"help": "dropout on token features"})
    embedding_dim: int = field(default=100, metadata={"help": "word embedding size"})
    char_embedding_dim: int = field(default=30, metadata={"help": "character embedding size"})
    char_hidden_size: int = field(
        default=50, metadata={"help": "character RNN units per direction (0: no character RNN)"}
    )
    crf: bool = field(default=True, metadata={"help": "CRF output with Viterbi (else softmax)"})
    word_dropout: float = field(
        default=0.05, metadata={"help": "training: words become <unk> with this probability"}
    )
    lowercase: bool = field(default=True, metadata={"help": "lower-case words (not characters)"})
    min_freq: int = field(default=1, metadata={"help": "rarer training words become <unk>"})
    tag_column: str = field(default="upos", metadata={"help": "CoNLL-U column of the tags"})
    limit: int | None = field(
        default=None, metadata={"help": "keep the first N sentences of each split"}
    )


# --- data -------------------------------------------------------------------------------------


def _read_file(path: Path, options: TagOptions) -> list[TaggedSentence]:
    if path.suffix == ".conllu":
        return read_conllu(path, tag=options.tag_column)
    return read_conll(path)


def _split_files(folder: Path) -> dict[str, Path]:
    """The train, valid and test file of a folder, found by name."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    found = {}
    for split, words in SPLIT_NAMES.items():
        matches = [p for p in files if any(word in p.name.lower() for word in words)]
        if len(matches) != 1:
            raise TaskError(
                f"{folder}: expected one file with {' or '.join(words)!r} in its name, "
                f"found {[p.name for p in matches]}"
            )
        found[split] = matches[0]
    return found


def read_splits(source: str | Path, options: TagOptions) -> dict[str, list[TaggedSentence]]:
    """{"train", "valid", "test": sentences} of a built-in dataset name, a folder or a file."""
    if isinstance(source, str):
        splits = datasets.load(source)
    elif source.is_dir():
        splits = {split: _read_file(p, options) for split, p in _split_files(source).items()}
    else:
        sentences = _read_file(source, options)
        if len(sentences) < 10:
            raise TaskError(f"{source}: {len(sentences)} sentences; at least 10 are needed")
        cut = [round(len(sentences) * f) for f in (0.8, 0.9)]
        splits = {
            "train": sentences[: cut[0]],
            "valid": sentences[cut[0] : cut[1]],
            "test": sentences[cut[1] :],
        }
    return {split: sentences[: options.limit] for split, sentences in splits.items()}


def _word_key(word: str, options: TagOptions) -> str:
    return word.lower() if options.lowercase else word


def build_extras(train: list[TaggedSentence], options: TagOptions) -> dict[str, Any]:
    """The vocabularies of words and characters and the tag list, from the training sentences."""
    words = Vocab.build(
        ([_word_key(w, options) for w in s.tokens] for s in train), min_freq=options.min_freq
    )
    chars = Vocab.build(list(w[:MAX_WORD_CHARS]) for s in train for w in s.tokens)
    counts = Counter(tag for s in train for tag in s.tags)
    tags = sorted(counts, key=lambda t: (-counts[t], t))
    return {"words": words, "chars": chars, "tags": tags}


def encode(
    tokens: list[str], tags: list[str] | None, extras: dict[str, Any], options: TagOptions
) -> tuple[list[int], list[list[int]], list[int]]:
    """(word ids, character ids per word, tag ids) of one sentence; unknown tags are -100."""
    word_ids = extras["words"].encode(_word_key(w, options) for w in tokens)
    char_ids = [extras["chars"].encode(w[:MAX_WORD_CHARS]) for w in tokens]
    tag_index = {tag: i for i, tag in enumerate(extras["tags"])}
    tag_ids = [tag_index.get(t, IGNORE_INDEX) for t in tags] if tags is not None else []
    return word_ids, char_ids, tag_ids


def collate_tagged(samples: list[tuple[list[int], list[list[int]], list[int]]]) -> Batch:
    """A Batch: inputs {"words": (B, T), "chars": (B, T, W)}, lengths (B,), targets (B, T)."""
    words, lengths = pad_sequences([s[0] for s in samples])  # (B, T), (B,)
    width = max(len(chars) for s in samples for chars in s[1])
    chars = torch.zeros(len(samples), words.shape[1], width, dtype=torch.int64)  # (B, T, W)
    for b, (_, word_chars, _) in enumerate(samples):
        for t, ids in enumerate(word_chars):
            chars[b, t, : len(ids)] = torch.tensor(ids, dtype=torch.int64)
    targets = torch.full(words.shape, IGNORE_INDEX, dtype=torch.int64)  # (B, T)
    for b, (_, _, tags) in enumerate(samples):
        targets[b, : len(tags)] = torch.tensor(tags, dtype=torch.int64)
    return Batch(inputs={"words": words, "chars": chars}, lengths=lengths, targets=targets)


# --- metrics ----------------------------------------------------------------------------------


def is_bio(tags: list[str]) -> bool:
    """Whether a tag set is BIO: every tag is O, B-<type> or I-<type>, and some are not O."""
    return any(t != "O" for t in tags) and all(
        t == "O" or (t[:2] in ("B-", "I-") and len(t) > 2) for t in tags
    )


def entity_spans(tags: list[str]) -> set[tuple[int, int, str]]:
    """(start, end, type) of each entity of a BIO sequence, end exclusive.

    As in conlleval: an entity ends at O, at B-, or at an I- of another type; an I-X that does
    not continue an X entity (no B- before it) starts a new one.
    """
    spans = set()
    start, kind = None, None
    for i, tag in enumerate([*tags, "O"]):
        prefix, _, label = tag.partition("-")
        continues = prefix == "I" and start is not None and label == kind
        if start is not None and not continues:
            spans.add((start, i, kind))
            start, kind = None, None
        if prefix in ("B", "I") and not continues:
            start, kind = i, label
    return spans


def entity_scores(gold: list[list[str]], predicted: list[list[str]]) -> dict[str, float]:
    """Exact-span entity precision, recall and F1 over sentences of BIO tags (0 when undefined)."""
    correct = found = expected = 0
    for gold_tags, predicted_tags in zip(gold, predicted, strict=True):
        gold_spans, predicted_spans = entity_spans(gold_tags), entity_spans(predicted_tags)
        correct += len(gold_spans & predicted_spans)
        found += len(predicted_spans)
        expected += len(gold_spans)
    precision = correct / found if found else 0.0
    recall = correct / expected if expected else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"entity_precision": precision, "entity_recall": recall, "entity_f1": f1}


@torch.no_grad()
def tag_sentences(
    model: Tagger, token_lists: list[list[str]], extras: dict[str, Any], options: TagOptions
) -> list[list[str]]:
    """The predicted tags of each sentence (on the model's device, in eval mode)."""
    model.eval()
    device = next(model.parameters()).device
    predicted = []
    for i in range(0, len(token_lists), 64):
        chunk = token_lists[i : i + 64]
        batch = collate_tagged([encode(tokens, None, extras, options) for tokens in chunk])
        ids = model.predict(batch.to(device)).cpu()  # (B, T)
        for row, tokens in zip(ids.tolist(), chunk, strict=True):
            predicted.append([extras["tags"][k] for k in row[: len(tokens)]])
    return predicted


@torch.no_grad()
def score(
    model: Tagger, sentences: list[TaggedSentence], extras: dict[str, Any], options: TagOptions
) -> dict[str, float]:
    """{"loss", "accuracy"} (+ entity scores for BIO tag sets) on CPU, so a reloaded run
    evaluates to exactly the numbers its training run recorded."""
    model.cpu().eval()
    loss_sum, tokens = 0.0, 0
    for i in range(0, len(sentences), 64):
        chunk = sentences[i : i + 64]
        batch = collate_tagged([encode(s.tokens, s.tags, extras, options) for s in chunk])
        tagged = int((batch.targets != IGNORE_INDEX).sum())
        loss_sum += float(model.loss(batch)) * tagged
        tokens += tagged
    predicted = tag_sentences(model, [s.tokens for s in sentences], extras, options)
    gold = [s.tags for s in sentences]
    right = sum(
        p == g for ps, gs in zip(predicted, gold, strict=True) for p, g in zip(ps, gs, strict=True)
    )
    total = sum(len(gs) for gs in gold)
    scores = {"loss": loss_sum / max(tokens, 1), "accuracy": right / total}
    if is_bio(extras["tags"]):
        scores.update(entity_scores(gold, predicted))
    return scores


# --- the task ---------------------------------------------------------------------------------


def build_model(extras: dict[str, Any], options: TagOptions) -> Tagger:
    """A fresh Tagger for the vocabularies and tag list in `extras` and the options."""
    config = TaggerConfig(
        vocab_size=len(extras["words"]),
        num_tags=len(extras["tags"]),
        num_chars=len(extras["chars"]) if options.char_hidden_size else 0,
        embedding_dim=options.embedding_dim,
        char_embedding_dim=options.char_embedding_dim,
        char_hidden_size=options.char_hidden_size,
        cell=options.cell,
        hidden_size=options.hidden_size,
        num_layers=options.num_layers,
        bidirectional=options.bidirectional,
        dropout=options.dropout,
        word_dropout=options.word_dropout,
        crf=options.crf,
    )
    return Tagger(config)


def train(data: str | None, options: TagOptions, config: TrainConfig) -> dict[str, float]:
    """Read DATA, build vocabularies and a Tagger, fit, and score the test split."""
    seed_everything(config.seed)  # the model's initial weights depend on the seed too
    source = resolve_data(data, TASK.default_data, ("tag",))
    splits = read_splits(source, options)
    extras = build_extras(splits["train"], options)
    model = build_model(extras, options)
    samples = {
        split: [encode(s.tokens, s.tags, extras, options) for s in sentences]
        for split, sentences in splits.items()
    }
    metrics = tuple(dict.fromkeys((*config.metrics, "accuracy")))
    config = replace(
        config, metrics=metrics, num_classes=len(extras["tags"]), ignore_index=IGNORE_INDEX
    )
    if config.run_dir is not None and is_main_process():
        save_extras(Path(config.run_dir), extras)
    data_id = str(source.resolve()) if isinstance(source, Path) else source
    info = run_info(TASK, options, model, data=data_id)
    lengths = [len(words) for words, _, _ in samples["train"]]  # batches of similar lengths
    fit(
        model, samples["train"], samples["valid"], config,
        collate=collate_tagged, run_info=info, lengths=lengths,
    )  # fmt: skip
    scores = score(model, splits["test"], extras, options)
    record_metrics(config.run_dir, "test", scores)
    return scores


def save_extras(run_dir: Path, extras: dict[str, Any]) -> None:
    """words.json, chars.json and tags.json in the run directory."""
    extras["words"].save(run_dir / "words.json")
    extras["chars"].save(run_dir / "chars.json")
    write_json(run_dir / "tags.json", {"kind": "tags", "tags": extras["tags"]})


def load_extras(run_dir: Path) -> dict[str, Any]:
    """The vocabularies and tag list that `train` saved."""
    tags = read_json(Path(run_dir) / "tags.json", "tag list")
    return {
        "words": Vocab.load(Path(run_dir) / "words.json"),
        "chars": Vocab.load(Path(run_dir) / "chars.json"),
        "tags": list(tags["tags"]),
    }


def evaluate(run: Run, data: str | None) -> dict[str, float]:
    """Scores on the test split of DATA (default: the data the run was trained on); a single
    file given here is scored whole."""
    options = run.options
    source = resolve_data(data if data is not None else run.info["data"], "", ("tag",))
    if data is not None and isinstance(source, Path) and source.is_file():
        sentences = _read_file(source, options)
    else:
        sentences = read_splits(source, options)["test"]
    return score(run.model, sentences, run.extras, options)


CLITIC = r"['’](?:s|re|ve|ll|d|m)\b"  # 's 're 've 'll 'd 'm: their own tokens in UD
TOKEN = re.compile(
    rf"\w+(?=n't\b)|n't\b|\w+(?={CLITIC})|{CLITIC}|\w+(?:[-.'’]\w+)*|[^\w\s]", re.IGNORECASE
)


def tokenize(text: str) -> list[str]:
    """Words and punctuation marks, with English clitics split off as in UD (do n't, it 's)."""
    return TOKEN.findall(text)


def predict(run: Run, inputs: list[str]) -> list[str]:
    """One line per input sentence: token/TAG pairs."""
    token_lists = [tokenize(text) for text in inputs]
    empty = [text for text, tokens in zip(inputs, token_lists, strict=True) if not tokens]
    if empty:
        raise TaskError(f"nothing to tag in {empty[0]!r}")
    tagged = tag_sentences(run.model, token_lists, run.extras, run.options)
    return [
        " ".join(f"{w}/{t}" for w, t in zip(tokens, tags, strict=True))
        for tokens, tags in zip(token_lists, tagged, strict=True)
    ]


TASK = Task(
    name="tag",
    summary="tag each token (part of speech, named entities): word + character biRNN, CRF",
    options=TagOptions,
    default_data="ud_english_ewt",
    train=train,
    load_extras=load_extras,
    evaluate=evaluate,
    predict=predict,
    train_defaults={"epochs": 10, "batch_size": 32, "lr": 2e-3},
)
