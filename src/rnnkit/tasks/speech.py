"""The `speech` task: recognise spoken digit strings with a CTC speech model.

    rnnkit train speech [spoken_digits] [--features mfcc] [--conv-channels 64] [--utterances 400]
    rnnkit evaluate RUN
    rnnkit predict RUN recording.wav ...

DATA is the built-in `spoken_digits`: digit strings synthesized with espeak-ng and flite
(programs that must be installed: `apt-get install espeak-ng flite`), with a random voice,
speed and pitch per utterance. The train, valid and test splits come from different random
seeds and disjoint sets of voices (`rnnkit.data.speech.VOICE_SPLITS`): the test error rates
are those of voices the model never heard.

Features (log-mel or MFCC, `rnnkit.data.audio`) are normalised per feature dimension,
x' = (x - mean) / std, with mean and std over all training frames. Metrics on the test split:
CTC loss, and character and word error rates (CER, WER; equal on digit strings, where each
digit is a character and a word) and the utterance error rate of greedy and beam-search
decoding.

Run directory extras: normalization.json ({"kind", "mean", "std"}).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from rnnkit.data.audio import wav_features
from rnnkit.data.batch import Batch
from rnnkit.data.batching import pad_sequences
from rnnkit.data.speech import SynthesizerMissing, spoken_digits
from rnnkit.models.speech import PAD_LABEL, SpeechConfig, SpeechModel, cer, wer
from rnnkit.tasks import base
from rnnkit.tasks.base import Run, Task, TaskError
from rnnkit.train import TrainConfig, evaluate, fit, seed_everything

SPLITS = ("train", "valid", "test")
SEEDS = {"train": 0, "valid": 1, "test": 2}  # as `rnnkit.datasets.load("spoken_digits")`
SHARES = {"train": 0.75, "valid": 0.125, "test": 0.125}  # of --utterances (300/50/50 of 400)
NUM_LABELS = 10  # digits 0-9
Sample = tuple[np.ndarray, list[int]]  # (features (T, F), digit labels)


@dataclass(frozen=True)
class SpeechOptions:
    """Model and data options of `rnnkit train speech` (one flag each)."""

    features: Literal["log_mel", "mfcc"] = field(
        default="log_mel", metadata={"help": "frame features: 40 log-mel bands or 13 MFCCs"}
    )
    utterances: int = field(
        default=400,
        metadata={"help": "utterances synthesized in all (3/4 train, 1/8 valid, 1/8 test)"},
    )
    conv_channels: int = field(
        default=64, metadata={"help": "channels of the convolutional front end (0: none)"}
    )
    conv_stride: int = field(default=2, metadata={"help": "time subsampling of the front end"})
    cell: Literal["lstm", "gru"] = field(default="lstm", metadata={"help": "recurrent cell"})
    hidden_size: int = field(default=128, metadata={"help": "recurrent state size per direction"})
    num_layers: int = field(default=2, metadata={"help": "stacked bidirectional layers"})
    dropout: float = field(default=0.1, metadata={"help": "between layers and before the head"})
    beam_width: int = field(default=8, metadata={"help": "beams of the beam-search metrics"})


# --- data -------------------------------------------------------------------------------------


def split_sizes(utterances: int) -> dict[str, int]:
    """Utterances per split: 75/12.5/12.5 %, at least one each."""
    if utterances < 3:
        raise TaskError(f"--utterances must be >= 3 (one per split), got {utterances}")
    return {s: max(1, round(SHARES[s] * utterances)) for s in SPLITS}


def synthesize_splits(
    data: str | None, options: SpeechOptions, splits: tuple[str, ...] = SPLITS
) -> dict[str, list[tuple[np.ndarray, str]]]:
    """{split: [(features (T, F), digit string), ...]}, each split spoken by its own voices; a
    TaskError when espeak-ng or flite is missing."""
    if not isinstance(base.resolve_data(data, TASK.default_data, ("speech",)), str):
        raise TaskError(f"{data}: the speech task reads only the built-in spoken_digits")
    sizes = split_sizes(options.utterances)
    try:
        return {
            s: spoken_digits(sizes[s], seed=SEEDS[s], kind=options.features, voices=s)
            for s in splits
        }
    except SynthesizerMissing as error:
        raise TaskError(str(error)) from None


def fit_normalization(features: list[np.ndarray], kind: str) -> dict[str, Any]:
    """{"kind", "mean": [F], "std": [F]} over all frames of the training utterances."""
    frames = np.concatenate(features, axis=0)  # (sum T, F)
    std = np.maximum(frames.std(axis=0), 1e-5)
    return {"kind": kind, "mean": frames.mean(axis=0).tolist(), "std": std.tolist()}


def normalize(features: np.ndarray, normalization: dict[str, Any]) -> np.ndarray:
    """x' = (x - mean) / std per feature dimension, as float32."""
    mean = np.asarray(normalization["mean"], dtype=np.float32)
    std = np.asarray(normalization["std"], dtype=np.float32)
    return ((features - mean) / std).astype(np.float32)


def to_samples(utterances: list[tuple[np.ndarray, str]], normalization: dict) -> list[Sample]:
    return [(normalize(x, normalization), [int(d) for d in digits]) for x, digits in utterances]


def collate(samples: list[Sample]) -> Batch:
    """inputs (B, T, F) padded with 0, lengths (B,), targets (B, S) int64 padded with -1."""
    inputs, lengths = pad_sequences([torch.from_numpy(x) for x, _ in samples], 0.0)
    labels = [torch.tensor(y, dtype=torch.long) for _, y in samples]
    targets, _ = pad_sequences(labels, PAD_LABEL)  # (B, S)
    return Batch(inputs=inputs, lengths=lengths, targets=targets.long())


# --- train ------------------------------------------------------------------------------------


def train(data: str | None, options: SpeechOptions, config: TrainConfig) -> dict[str, float]:
    """Fit a speech model on spoken digits, save it in config.run_dir, return test metrics."""
    seed_everything(config.seed)
    splits = synthesize_splits(data, options)
    normalization = fit_normalization([x for x, _ in splits["train"]], options.features)
    samples = {s: to_samples(splits[s], normalization) for s in SPLITS}
    num_features = samples["train"][0][0].shape[1]
    model = SpeechModel(_model_config(options, num_features))
    info = base.run_info(TASK, options, model, data=TASK.default_data)
    _save_extras(config.run_dir, normalization)
    lengths = [len(frames) for frames, _ in samples["train"]]  # batches of similar lengths
    fit(
        model, samples["train"], samples["valid"], config,
        collate=collate, run_info=info, lengths=lengths,
    )  # fmt: skip
    metrics = _metrics(model, samples["test"], config, options.beam_width)
    base.record_metrics(config.run_dir, "test", metrics)
    return metrics


def _model_config(options: SpeechOptions, num_features: int) -> SpeechConfig:
    return SpeechConfig(
        num_features=num_features,
        num_labels=NUM_LABELS,
        conv_channels=options.conv_channels,
        conv_stride=options.conv_stride,
        hidden_size=options.hidden_size,
        num_layers=options.num_layers,
        cell=options.cell,
        dropout=options.dropout,
    )


def _save_extras(run_dir: str | None, normalization: dict[str, Any]) -> None:
    if run_dir is None or not base.is_main_process():
        return
    from rnnkit.data.files import write_json

    write_json(Path(run_dir) / "normalization.json", normalization)


@torch.no_grad()
def decode(model: SpeechModel, samples: list[Sample], beam_width: int | None) -> list[str]:
    """Digit strings of `samples`: greedy decoding (beam_width None) or beam search."""
    model.eval()
    device = next(model.parameters()).device
    texts = []
    for start in range(0, len(samples), 32):
        batch = collate(samples[start : start + 32]).to(device)
        labels = (
            model.predict(batch) if beam_width is None else model.beam_search(batch, beam_width)
        )
        texts += ["".join(str(label) for label in row) for row in labels]
    return texts


def _metrics(
    model: SpeechModel, samples: list[Sample], config: TrainConfig, beam_width: int
) -> dict[str, float]:
    """CTC loss; CER, WER (each digit a word) and utterance error rate (the share of utterances
    with any error) of greedy and beam-search decoding. Each digit is one character and one
    word, so CER and WER coincide on digit strings; they differ on transcripts of words."""
    scores = evaluate(model, samples, (), config, collate=collate)
    references = ["".join(map(str, labels)) for _, labels in samples]
    for name, width in (("greedy", None), ("beam", beam_width)):
        hypotheses = decode(model, samples, width)
        scores[f"cer_{name}"] = cer(references, hypotheses)
        scores[f"wer_{name}"] = wer(_words(references), _words(hypotheses))
        wrong = sum(h != r for h, r in zip(hypotheses, references, strict=True))
        scores[f"utterance_error_{name}"] = wrong / len(references)
    return scores


def _words(texts: list[str]) -> list[str]:
    """Each digit a word: "407" -> "4 0 7" (so WER counts whole spoken digits)."""
    return [" ".join(text) for text in texts]


# --- a trained run ----------------------------------------------------------------------------


def load_extras(run_dir: Path) -> dict[str, Any]:
    """{"normalization": {"kind", "mean", "std"}} of a speech run."""
    path = Path(run_dir) / "normalization.json"
    try:
        return {"normalization": json.loads(path.read_text(encoding="utf-8"))}
    except (OSError, ValueError) as error:
        raise TaskError(f"{path}: cannot read the feature normalisation ({error})") from None


def evaluate_run(run: Run, data: str | None) -> dict[str, float]:
    """The test metrics of `train`, on the same synthesized test split."""
    test = synthesize_splits(data, run.options, ("test",))["test"]
    samples = to_samples(test, run.extras["normalization"])
    return _metrics(run.model, samples, run.train_config, run.options.beam_width)


def predict(run: Run, inputs: list[str]) -> list[str]:
    """One line per WAV file: `digits<TAB>file` (beam search; digits as text, e.g. "407")."""
    normalization = run.extras["normalization"]
    features = [wav_features(path, normalization["kind"]) for path in inputs]
    samples = [(normalize(x, normalization), [0]) for x in features]  # [0]: unused target
    texts = decode(run.model, samples, run.options.beam_width)
    return [f"{text}\t{path}" for text, path in zip(texts, inputs, strict=True)]


TASK = Task(
    name="speech",
    summary="speech recognition with CTC (spoken digits synthesized with espeak-ng and flite)",
    options=SpeechOptions,
    default_data="spoken_digits",
    train=train,
    load_extras=load_extras,
    evaluate=evaluate_run,
    predict=predict,
    train_defaults={"epochs": 30, "lr": 2e-3, "batch_size": 16, "monitor": "val_loss"},
)
