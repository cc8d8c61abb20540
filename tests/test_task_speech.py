"""`rnnkit train speech` end to end on synthesized spoken digits, at a small size.

Train from the command line, reload the run, evaluate to the same metrics; the CTC loss falls
during training; the feature normalisation is saved as JSON; `predict` reads a WAV written by
espeak-ng. Tests that synthesize speech are skipped, with the reason, without espeak-ng or flite.
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from rnnkit.cli import main
from rnnkit.data.speech import find_espeak
from rnnkit.tasks import load_run
from rnnkit.tasks import speech as speech_task
from rnnkit.tasks.speech import collate, fit_normalization, normalize, split_sizes

torch.set_num_threads(1)
SMALL = [
    *("--utterances", "40", "--hidden-size", "16", "--num-layers", "1"),
    *("--conv-channels", "16", "--beam-width", "3", "--epochs", "4", "--no-progress"),
]
ESPEAK = shutil.which("espeak-ng")
MISSING = (
    "espeak-ng or flite is not installed (apt-get install espeak-ng flite); "
    "speech synthesis tests skipped"
)


def _need_synthesizers() -> None:
    if ESPEAK is None or shutil.which("flite") is None:
        print(MISSING)
        pytest.skip(MISSING)


@pytest.fixture(autouse=True)
def _in_tmp_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="module")
def speech_run(tmp_path_factory) -> Path:
    _need_synthesizers()
    run_dir = tmp_path_factory.mktemp("speech") / "run"
    assert main(["train", "speech", *SMALL, "--run-dir", str(run_dir)]) == 0
    return run_dir


@pytest.mark.slow
def test_train_load_evaluate_gives_the_same_metrics(speech_run, capsys):
    recorded = json.loads((speech_run / "metrics.json").read_text())["test"]
    run = load_run(speech_run)
    assert run.task.evaluate(run, None) == recorded  # same synthesis, weights and batches
    for name in ("cer_greedy", "wer_greedy", "cer_beam", "wer_beam"):
        assert recorded[name] >= 0.0  # can exceed 1 (insertions); no quality at this size
    for name in ("greedy", "beam"):
        assert recorded[f"cer_{name}"] == recorded[f"wer_{name}"]  # a digit: a char and a word
        assert 0.0 <= recorded[f"utterance_error_{name}"] <= 1.0
    print("test metrics of the small run:", recorded)
    normalization = json.loads((speech_run / "normalization.json").read_text())
    assert normalization["kind"] == "log_mel" and len(normalization["std"]) == 40


@pytest.mark.slow
def test_training_reduces_the_ctc_loss(speech_run):
    with open(speech_run / "history.csv", newline="") as file:
        losses = [float(row["train_loss"]) for row in csv.DictReader(file)]
    assert len(losses) == 4 and losses[-1] < losses[0]


@pytest.mark.slow
def test_predict_transcribes_a_wav_file(speech_run, tmp_path, capsys):
    wav = tmp_path / "four two.wav"
    subprocess.run([ESPEAK, "-w", str(wav), "four two"], check=True, capture_output=True)
    capsys.readouterr()
    assert main(["predict", str(speech_run), str(wav)]) == 0
    line = capsys.readouterr().out.strip()
    text, path = line.split("\t")
    assert path == str(wav) and (text == "" or text.isdigit())


def test_train_without_espeak_is_a_one_line_error(monkeypatch, capsys):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert main(["train", "speech", *SMALL, "--run-dir", "run"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("rnnkit: error: "), err
    assert "apt-get install espeak-ng" in err
    with pytest.raises(Exception, match="espeak-ng"):
        find_espeak()


def test_normalization_and_collate():
    rng = np.random.default_rng(0)
    features = [rng.normal(3.0, 2.0, size=(n, 4)).astype(np.float32) for n in (5, 9)]
    normalization = fit_normalization(features, "log_mel")
    frames = np.concatenate([normalize(x, normalization) for x in features])
    np.testing.assert_allclose(frames.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(frames.std(axis=0), 1.0, atol=1e-5)
    batch = collate([(features[0], [4, 0, 7]), (features[1], [1])])
    assert batch.inputs.shape == (2, 9, 4) and batch.lengths.tolist() == [5, 9]
    assert batch.targets.dtype == torch.int64
    assert batch.targets.tolist() == [[4, 0, 7], [1, -1, -1]]
    assert split_sizes(400) == {"train": 300, "valid": 50, "test": 50}


def test_each_split_is_synthesized_with_its_own_voices(monkeypatch):
    calls = []

    def fake(count, seed, kind, voices):
        calls.append((count, seed, kind, voices))
        return []

    monkeypatch.setattr(speech_task, "spoken_digits", fake)
    speech_task.synthesize_splits(None, speech_task.SpeechOptions(utterances=80))
    assert calls == [
        (60, 0, "log_mel", "train"),
        (10, 1, "log_mel", "valid"),
        (10, 2, "log_mel", "test"),
    ]


def test_error_rates_of_decoded_digits(monkeypatch):
    monkeypatch.setattr(speech_task, "evaluate", lambda *args, **kwargs: {"loss": 1.5})
    hypotheses = {None: ["407", "2", "55"], 3: ["407", "1", "5"]}
    monkeypatch.setattr(speech_task, "decode", lambda model, samples, width: hypotheses[width])
    samples = [(None, [4, 0, 7]), (None, [1]), (None, [5, 5])]
    scores = speech_task._metrics(None, samples, None, beam_width=3)
    assert scores["loss"] == 1.5
    assert scores["cer_greedy"] == scores["wer_greedy"] == 1 / 6  # one substitution in 6 digits
    assert scores["utterance_error_greedy"] == 1 / 3
    assert scores["cer_beam"] == 1 / 6 and scores["utterance_error_beam"] == 1 / 3  # a deletion
