"""Task `lm`: language models of text (characters, words or subwords) and of polyphonic music.

    rnnkit train lm [DATA]        DATA: a text file, a folder of .txt files, a JSB-style JSON
                                  file of chorales, or a built-in dataset (shakespeare,
                                  jsb_chorales); default shakespeare
    rnnkit generate RUN [--prompt TEXT] [--length N] [--temperature T] [--top-k K] [--top-p P]

Text is cut 90/5/5 % into train/valid/test at line starts (the built-in corpus comes split),
tokenized by a tokenizer fitted on the training part (`tokenizer.json` in the run), and read as
one long stream with truncated BPTT (`TrainConfig.bptt_k1`, default 100 steps) by a
`LanguageModel`. Metrics: loss (nats per token), perplexity, nats and bits per character.

Chorales are piano rolls, one sequence each, batched with padding and lengths (no truncation:
`bptt_k1` does not apply); a `MusicModel` reports the negative log-likelihood per frame.

`generate` prints text as it is sampled (one token per step of the model) or writes a MIDI
file. The models live in `rnnkit.models.language_model` and `rnnkit.models.music`.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from dataclasses import dataclass, field
from functools import partial
from itertools import islice
from pathlib import Path
from typing import Any, Literal, TextIO

import numpy as np
import torch

from rnnkit.data import datasets
from rnnkit.data.batching import collate
from rnnkit.data.bpe import BPETokenizer
from rnnkit.data.music import midi_to_roll, notes_to_roll, read_jsb_json, roll_to_midi
from rnnkit.data.stream import StreamBatches
from rnnkit.data.tabular import read_text
from rnnkit.data.tokenizer import CharTokenizer, Tokenizer, WordTokenizer, load_tokenizer
from rnnkit.models.language_model import LanguageModel, LanguageModelConfig
from rnnkit.models.music import MusicModel, MusicModelConfig
from rnnkit.models.sampling import SamplingConfig
from rnnkit.tasks import base
from rnnkit.tasks.base import Run, Task, TaskError
from rnnkit.train import Stream, TrainConfig, fit, seed_everything
from rnnkit.train import evaluate as evaluate_model

KINDS = ("language_model", "music")  # built-in datasets this task trains on
TOKENIZER_FILE = "tokenizer.json"
BPE_MIN_VOCAB = 260  # every byte and the 4 special tokens
SAMPLE_MIDI = "sample.mid"  # the chorale a music run writes at the end of training
NOTE_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")


@dataclass(frozen=True)
class LMOptions:
    """Model and data options of `rnnkit train lm` (one flag each)."""

    level: Literal["char", "word", "bpe"] = field(
        default="char", metadata={"help": "text tokens: characters, words or byte-level BPE"}
    )
    cell: Literal["lstm", "gru", "rnn"] = field(default="lstm", metadata={"help": "recurrent cell"})
    embedding_dim: int | None = field(
        default=None, metadata={"help": "token embedding size (none: hidden_size; text only)"}
    )
    hidden_size: int = field(default=256, metadata={"help": "recurrent state size"})
    num_layers: int = field(default=1, metadata={"help": "stacked recurrent layers"})
    dropout: float = field(
        default=0.0, metadata={"help": "dropout on inputs, between layers and on outputs"}
    )
    tie_weights: bool = field(
        default=True,
        metadata={
            "help": "output layer shares the embedding matrix (text; projected if sizes differ)"
        },
    )
    max_vocab: int = field(
        default=10_000, metadata={"help": "vocabulary size for word and bpe levels"}
    )
    limit: int | None = field(
        default=None,
        metadata={"help": "keep the first N characters (text) or chorales (music) of each split"},
    )
    steps_per_beat: int = field(
        default=1, metadata={"help": "music: time steps per beat of the piano rolls (MIDI output)"}
    )
    sample_length: int | None = field(
        default=None,
        metadata={
            "help": "tokens (music: frames) sampled after training (none: 500 or 64; 0: none)"
        },
    )


@dataclass(frozen=True)
class GenerateOptions:
    """Flags of `rnnkit generate RUN`."""

    prompt: str = field(
        default="",
        metadata={"help": "text to continue (default: a new line); music: a MIDI file"},
    )
    length: int | None = field(
        default=None, metadata={"help": "tokens to generate (none: 500; music: 64 frames)"}
    )
    temperature: float = field(
        default=0.8, metadata={"help": "divides the logits: 1 the model's own distribution"}
    )
    top_k: int | None = field(default=None, metadata={"help": "sample from the k likeliest"})
    top_p: float | None = field(
        default=None, metadata={"help": "sample from the smallest set with mass >= p (nucleus)"}
    )
    seed: int = field(default=0, metadata={"help": "random seed: the same seed, the same output"})
    out: str | None = field(
        default=None,
        metadata={
            "help": "music: the MIDI file to write (default RUN/generated.mid); text: a file "
            "to write the printed sample to as well"
        },
    )


# --- data -------------------------------------------------------------------------------------


def load_corpus(source: str | Path, limit: int | None) -> tuple[str, dict[str, Any]]:
    """("text", {split: str}) or ("music", {split: [roll (T, 88) uint8, ...]}) of DATA."""
    if isinstance(source, str):  # a built-in dataset, checked by base.resolve_data
        kind = "text" if datasets.info(source).task == "language_model" else "music"
        return kind, datasets.load(source, limit=limit)
    if source.suffix.lower() == ".json":
        notes = read_jsb_json(source)
        missing = [split for split in datasets.SPLITS if split not in notes]
        if missing:
            raise TaskError(f"{source}: no {missing} splits; expected train, valid and test")
        rolls = {split: [notes_to_roll(steps) for steps in notes[split]] for split in notes}
        return "music", {split: rolls[split][:limit] for split in datasets.SPLITS}
    splits = split_text(read_corpus_text(source))
    return "text", {split: text[:limit] for split, text in splits.items()}


def read_corpus_text(path: Path) -> str:
    """A text file, or every .txt file of a folder (sorted by name) one after the other."""
    if not path.is_dir():
        return read_text(path)
    files = sorted(path.glob("*.txt"))
    if not files:
        raise TaskError(f"{path}: the folder has no .txt files")
    return "\n".join(read_text(file) for file in files)


def split_text(text: str) -> dict[str, str]:
    """90/5/5 % of the text as train/valid/test, each cut at the start of a line."""
    cuts = []
    for fraction in (0.90, 0.95):
        position = round(len(text) * fraction)
        newline = text.find("\n", position)
        cuts.append(position if newline < 0 else newline + 1)
    splits = {"train": text[: cuts[0]], "valid": text[cuts[0] : cuts[1]], "test": text[cuts[1] :]}
    short = [name for name, part in splits.items() if len(part) < 2]
    if short:
        raise TaskError(f"the text ({len(text)} characters) is too short to split; {short} empty")
    return splits


def fit_tokenizer(text: str, options: LMOptions) -> Tokenizer:
    """The tokenizer of options.level, fitted on the training text."""
    if options.level == "char":
        return CharTokenizer.fit([text])
    if options.level == "word":
        return WordTokenizer.fit([text], max_size=options.max_vocab)
    if options.max_vocab < BPE_MIN_VOCAB:
        raise TaskError(f"bpe needs max_vocab >= {BPE_MIN_VOCAB} (256 bytes + 4 specials)")
    return BPETokenizer.fit(text.splitlines(keepends=True), vocab_size=options.max_vocab)


def token_stream(ids: list[int], rows: int) -> Stream:
    """The stream of `ids` cut into `rows` rows (fewer when it is short); targets = next ids."""
    rows = max(1, min(rows, (len(ids) - 1) // 2))
    batches = StreamBatches(ids, batch_size=rows, bptt=1)
    return Stream(batches.inputs, batches.targets)  # (S, L) each


def frame_samples(rolls: list[np.ndarray]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(inputs, targets) per piano roll: the frames after a silent one, and the frames."""
    samples = []
    for roll in rolls:
        frames = torch.as_tensor(np.asarray(roll), dtype=torch.float32)  # (T, P)
        inputs = torch.cat([torch.zeros_like(frames[:1]), frames[:-1]])  # (T, P): x_0 = silence
        samples.append((inputs, frames))
    return samples


collate_frames = partial(collate, target_padding_value=0)  # padded frames are masked by lengths


# --- training and evaluation ------------------------------------------------------------------


def train(data: str | None, options: LMOptions, config: TrainConfig) -> dict[str, float]:
    """Train on DATA (default shakespeare), evaluate on its test split, print a sample."""
    seed_everything(config.seed)  # the model's initial weights depend on the seed too
    source = base.resolve_data(data, TASK.default_data, KINDS)
    kind, splits = load_corpus(source, options.limit)
    recorded = source if isinstance(source, str) else str(Path(source).resolve())
    if kind == "music":
        return _train_music(recorded, splits, options, config)
    return _train_text(recorded, splits, options, config)


def _train_text(source: str, splits: dict, options: LMOptions, config: TrainConfig) -> dict:
    if config.bptt_k1 is None:
        raise TaskError("text language models train with truncated BPTT: set bptt_k1")
    tokenizer = fit_tokenizer(splits["train"], options)
    train_ids, valid_ids = tokenizer.encode(splits["train"]), tokenizer.encode(splits["valid"])
    metrics = tuple(dict.fromkeys((*config.metrics, "perplexity")))
    config = dataclasses.replace(config, metrics=metrics)
    model = LanguageModel(
        LanguageModelConfig(
            vocab_size=tokenizer.vocab_size,
            embedding_dim=options.embedding_dim or options.hidden_size,
            hidden_size=options.hidden_size,
            num_layers=options.num_layers,
            cell=options.cell,
            dropout=options.dropout,
            tie_weights=options.tie_weights,
        )
    )
    train_stream = token_stream(train_ids, config.batch_size)
    valid_stream = token_stream(valid_ids, config.eval_batch_size or config.batch_size)
    info = base.run_info(TASK, options, model, data=source)
    fit(model, train_stream, valid_stream, config, run_info=info)
    if config.run_dir is not None and base.is_main_process():
        tokenizer.save(Path(config.run_dir) / TOKENIZER_FILE)
    result = text_metrics(model, splits["test"], tokenizer, config)
    base.record_metrics(config.run_dir, "test", result)
    if options.sample_length != 0 and base.is_main_process():
        sampling = GenerateOptions(length=options.sample_length)
        print(f"\n--- a sample at temperature {sampling.temperature} ---")
        sample_text(model.cpu().eval(), tokenizer, sampling)
    return result


def _train_music(source: str, splits: dict, options: LMOptions, config: TrainConfig) -> dict:
    samples = {split: frame_samples(rolls) for split, rolls in splits.items()}
    # whole chorales, no truncation; validation in one batch, so val_loss is exact per frame
    config = dataclasses.replace(
        config,
        bptt_k1=None,
        bptt_k2=None,
        eval_batch_size=config.eval_batch_size or len(samples["valid"]),
    )
    model = MusicModel(
        MusicModelConfig(
            num_pitches=splits["train"][0].shape[1],
            hidden_size=options.hidden_size,
            num_layers=options.num_layers,
            cell=options.cell,
            dropout=options.dropout,
        )
    )
    info = base.run_info(TASK, options, model, data=source)
    fit(model, samples["train"], samples["valid"], config, collate=collate_frames, run_info=info)
    result = music_metrics(model, samples["test"], config.eval_batch_size)
    base.record_metrics(config.run_dir, "test", result)
    if options.sample_length != 0 and config.run_dir is not None and base.is_main_process():
        sampling = GenerateOptions(length=options.sample_length)
        print(f"\n--- a sample at temperature {sampling.temperature} ---")
        out = Path(config.run_dir) / SAMPLE_MIDI
        sample_music(model.cpu().eval(), sampling, out, options)
    return result


def text_metrics(
    model: LanguageModel, text: str, tokenizer: Tokenizer, config: TrainConfig
) -> dict[str, float]:
    """Loss (nats per token), perplexity, and nats and bits per character of `text`.

    The text is read as `config.eval_batch_size` (or batch_size) parallel rows in windows of
    bptt_k1 steps, carrying the state along each row, as validation does during training.
    """
    ids = tokenizer.encode(text)
    stream = token_stream(ids, config.eval_batch_size or config.batch_size)
    loss = evaluate_model(model, stream, (), config)["loss"]
    nats_per_char = loss * len(ids) / len(text)  # tokens per character converts the units
    return {
        "loss": loss,
        "perplexity": math.exp(min(loss, 700.0)),
        "nats_per_char": nats_per_char,
        "bits_per_char": nats_per_char / math.log(2),
    }


@torch.no_grad()
def music_metrics(model: MusicModel, samples: list, batch_size: int) -> dict[str, float]:
    """Negative log-likelihood per frame (nats; sum over keys, mean over all frames)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total, frames = 0.0, 0
    for start in range(0, len(samples), batch_size):
        batch = collate_frames(samples[start : start + batch_size]).to(device)
        nll, count = model.frame_nll(batch)
        total, frames = total + float(nll.double()), frames + int(count)
    model.train(was_training)
    return {"nll_per_frame": total / frames}


def load_extras(run_dir: Path) -> dict[str, Any]:
    """{"tokenizer": ...} for a text run; {} for a music run."""
    path = Path(run_dir) / TOKENIZER_FILE
    return {"tokenizer": load_tokenizer(path)} if path.is_file() else {}


def evaluate(run: Run, data: str | None) -> dict[str, float]:
    """The run's metrics on DATA: a built-in dataset's or a JSON file's test split, all of a
    text file or folder; None: the test split of the data it was trained on (and its limit)."""
    if data is None:
        source = base.resolve_data(run.info["data"], "", KINDS)
        kind, splits = load_corpus(source, run.options.limit)
    else:
        source = base.resolve_data(data, "", KINDS)
        if isinstance(source, Path) and source.suffix.lower() != ".json":
            kind, splits = "text", {"test": read_corpus_text(source)}
        else:
            kind, splits = load_corpus(source, None)
    is_music = isinstance(run.model, MusicModel)
    if is_music != (kind == "music"):
        what = "a music" if is_music else "a text"
        raise TaskError(f"{run.run_dir} is {what} model; {source} holds {kind}")
    if is_music:
        batch_size = run.train_config.eval_batch_size or run.train_config.batch_size
        return music_metrics(run.model, frame_samples(splits["test"]), batch_size)
    return text_metrics(run.model, splits["test"], run.extras["tokenizer"], run.train_config)


# --- generation -------------------------------------------------------------------------------


class IncrementalDecoder:
    """The text of a growing sequence of token ids, one new piece per token, in constant time.

    Each piece is decode(context + new)[len(decode(context)):], with the last few ids as
    context, so word glue and spacing come out right; a piece that ends inside a UTF-8
    character (byte-level BPE) waits for the bytes that complete it.
    """

    context_size = 8  # ids of context kept

    def __init__(self, tokenizer: Tokenizer, prompt: list[int]) -> None:
        self.tokenizer = tokenizer
        self.context = list(prompt[-self.context_size :])
        self.pending: list[int] = []  # ids whose text is not printed yet

    def add(self, token: int) -> str:
        """The text that `token` adds (may be empty while a character is incomplete)."""
        self.pending.append(token)
        before = self.tokenizer.decode(self.context)
        after = self.tokenizer.decode(self.context + self.pending)
        if after.endswith("\ufffd") and len(self.pending) < 4:  # at most 4 bytes per character
            return ""
        self.context = (self.context + self.pending)[-self.context_size :]
        self.pending = []
        return after[len(before) :] if after.startswith(before) else after


def sampling_config(options: GenerateOptions) -> SamplingConfig:
    try:
        return SamplingConfig(options.temperature, options.top_k, options.top_p)
    except ValueError as error:
        raise TaskError(str(error)) from None


def sample_text(
    model: LanguageModel, tokenizer: Tokenizer, options: GenerateOptions, out: TextIO | None = None
) -> str:
    """Print the prompt and the sampled continuation to `out` (stdout) as it comes; return both."""
    out = out or sys.stdout
    length = 500 if options.length is None else options.length
    prompt = options.prompt or "\n"
    ids = tokenizer.encode(prompt)
    if not ids:
        raise TaskError(f"the prompt {prompt!r} has no tokens")
    generator = torch.Generator().manual_seed(options.seed)
    tokens = model.generate(ids, sampling_config(options), generator)
    decoder = IncrementalDecoder(tokenizer, ids)
    pieces = [options.prompt]
    out.write(options.prompt)
    for token in islice(tokens, length):
        pieces.append(decoder.add(token))
        out.write(pieces[-1])
        out.flush()
    out.write("\n")
    return "".join(pieces)


def pitch_names(frame: torch.Tensor, low: int = 21) -> str:
    """The sounding keys of a frame (P,) as note names, e.g. "C4 E4 G4" (or "-" for silence)."""
    pitches = [low + int(p) for p in torch.nonzero(frame).flatten()]
    return " ".join(f"{NOTE_NAMES[p % 12]}{p // 12 - 1}" for p in pitches) or "-"


def sample_music(
    model: MusicModel, options: GenerateOptions, path: Path, lm_options: LMOptions
) -> Path:
    """Sample frames (printing each as note names); write the prompt's frames (a MIDI file, if
    given) and the sampled ones to the MIDI file `path`."""
    length = 64 if options.length is None else options.length
    prompt = torch.zeros(0, model.config.num_pitches)  # (T_prompt, P)
    if options.prompt:
        prompt = torch.as_tensor(midi_to_roll(options.prompt, lm_options.steps_per_beat))
    generator = torch.Generator().manual_seed(options.seed)
    temperature = sampling_config(options).temperature
    frames = [*prompt.float()]
    sampled = model.generate(prompt if len(prompt) else None, temperature, generator)
    for step, frame in enumerate(islice(sampled, length), start=len(prompt)):
        frames.append(frame)
        print(f"{step:4d}  {pitch_names(frame)}", flush=True)
    roll = torch.stack(frames).to(torch.uint8).numpy() if frames else prompt.to(torch.uint8).numpy()
    roll_to_midi(roll, path, steps_per_beat=lm_options.steps_per_beat)
    print(f"wrote {path} ({len(prompt)} steps of prompt, {len(frames) - len(prompt)} sampled)")
    return path


def generate(run: Run, options: GenerateOptions) -> str | Path:
    """Text: print the sample as it comes and return it. Music: write a MIDI file, return it."""
    if options.length is not None and options.length < 0:
        raise TaskError(f"length must be >= 0, got {options.length}")
    if isinstance(run.model, MusicModel):
        path = Path(options.out) if options.out else run.run_dir / "generated.mid"
        return sample_music(run.model, options, path, run.options)
    text = sample_text(run.model, run.extras["tokenizer"], options)
    if options.out:
        Path(options.out).write_text(text + "\n", encoding="utf-8")
        print(f"wrote {options.out}")
    return text


TASK = Task(
    name="lm",
    summary="language model of text (char/word/bpe) or music (JSB chorales); `generate` samples",
    options=LMOptions,
    default_data="shakespeare",
    train=train,
    load_extras=load_extras,
    evaluate=evaluate,
    generate=generate,
    generate_options=GenerateOptions,
    train_defaults={
        "epochs": 3,
        "batch_size": 32,
        "bptt_k1": 100,
        "lr": 5e-3,
        "schedule": "cosine",
    },
)
