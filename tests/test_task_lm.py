"""Task `lm` end to end through the command line: train on the built-in corpora at a small size,
reload, evaluate to the same metrics, generate reproducibly (text and MIDI), and fail clearly."""

from __future__ import annotations

import json
import math
import os
from itertools import islice

import pytest
import torch

import rnnkit
from rnnkit.cli import main
from rnnkit.data import BPETokenizer, CharTokenizer, WordTokenizer, datasets, midi_to_roll
from rnnkit.models.language_model import LanguageModel
from rnnkit.models.music import MusicModel
from rnnkit.tasks import load_run
from rnnkit.tasks.lm import IncrementalDecoder, read_corpus_text, split_text

torch.set_num_threads(1)

SMALL = ["--hidden-size", "32", "--epochs", "1", "--device", "cpu", "--seed", "0"]


def _test_metrics(run_dir) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())["test"]


@pytest.fixture(scope="module")
def text_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("lm") / "run"
    argv = ["train", "lm", "--limit", "20000", "--batch-size", "8", "--bptt-k1", "25", *SMALL]
    assert main([*argv, "--sample-length", "30", "--run-dir", str(run_dir)]) == 0
    return run_dir


@pytest.fixture(scope="module")
def music_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("music") / "run"
    argv = ["train", "lm", "jsb_chorales", "--limit", "12", "--batch-size", "4", *SMALL]
    assert main([*argv, "--sample-length", "8", "--run-dir", str(run_dir)]) == 0
    return run_dir


# --- pieces -----------------------------------------------------------------------------------


def test_split_text_cuts_at_line_starts():
    text = "".join(f"line {i:03d}\n" for i in range(200))  # 9 characters a line
    splits = split_text(text)
    assert "".join(splits.values()) == text
    # each cut is the first line start after 90 % (1620) and 95 % (1710) of the characters
    assert [len(part) // 9 for part in splits.values()] == [181, 10, 9]
    assert all(part.startswith("line ") for part in splits.values())


def test_a_folder_reads_its_text_files_in_name_order(tmp_path):
    (tmp_path / "b.txt").write_text("second\n")
    (tmp_path / "a.txt").write_text("first\n")
    (tmp_path / "notes.md").write_text("not text\n")
    assert read_corpus_text(tmp_path) == "first\n\nsecond\n"


@pytest.mark.parametrize("kind", ["char", "word", "bpe"])
def test_incremental_decoder_pieces_join_to_the_whole_text(kind):
    text = datasets.load("shakespeare", limit=3000)["train"] + " ¿qué? 漢字 é\n"
    if kind == "bpe":
        tokenizer = BPETokenizer.fit([text], vocab_size=300)
    else:
        tokenizer = {"char": CharTokenizer, "word": WordTokenizer}[kind].fit([text])
    ids = tokenizer.encode(text)
    decoder = IncrementalDecoder(tokenizer, ids[:5])
    pieces = [decoder.add(token) for token in ids[5:]]
    assert tokenizer.decode(ids[:5]) + "".join(pieces) == tokenizer.decode(ids)


# --- text -------------------------------------------------------------------------------------


@pytest.mark.slow
def test_text_run_reloads_and_evaluates_to_the_same_metrics(text_run, tmp_path, capsys):
    model = rnnkit.load(text_run)
    assert isinstance(model, LanguageModel) and not model.training
    run = load_run(text_run)
    metrics = run.task.evaluate(run, None)
    assert metrics == _test_metrics(text_run)  # exactly: same weights, same stream
    assert metrics["nats_per_char"] == metrics["loss"]  # one token per character
    assert math.isclose(metrics["bits_per_char"], metrics["loss"] / math.log(2))
    assert math.isclose(metrics["perplexity"], math.exp(metrics["loss"]))
    assert metrics["loss"] < math.log(run.extras["tokenizer"].vocab_size)  # beats uniform
    for name in ("loss.png", "metrics.png"):
        assert (text_run / "plots" / name).stat().st_size > 1000
    assert main(["evaluate", str(text_run)]) == 0
    assert f"{metrics['nats_per_char']:.4f}" in capsys.readouterr().out
    test_file = tmp_path / "test.txt"  # a file is evaluated whole: here, the test split itself
    test_file.write_text(datasets.load("shakespeare", limit=20000)["test"], encoding="utf-8")
    assert run.task.evaluate(run, str(test_file)) == metrics


@pytest.mark.slow
def test_generate_with_a_seed_is_reproducible(text_run, capsys):
    def generate(*flags: str) -> str:
        assert main(["generate", str(text_run), "--length", "80", *flags]) == 0
        return capsys.readouterr().out

    first = generate("--seed", "3", "--prompt", "ROMEO.", "--top-p", "0.95")
    assert first == generate("--seed", "3", "--prompt", "ROMEO.", "--top-p", "0.95")
    assert first != generate("--seed", "4", "--prompt", "ROMEO.", "--top-p", "0.95")
    assert first.startswith("ROMEO.") and len(first) == len("ROMEO.") + 80 + 1  # + newline
    greedy = generate("--seed", "1", "--top-k", "1")
    assert greedy == generate("--seed", "2", "--temperature", "0")  # top-1 is the argmax
    out = text_run / "sample.txt"  # --out writes the printed sample to a file as well
    printed = generate("--seed", "3", "--prompt", "ROMEO.", "--top-p", "0.95", "--out", str(out))
    assert printed == first + f"wrote {out}\n" and out.read_text(encoding="utf-8") == first


@pytest.mark.slow
def test_a_reader_that_leaves_early_ends_the_command_quietly(text_run, monkeypatch, capsys):
    """`rnnkit evaluate RUN | head -1`: the closed pipe ends the command with exit 0 and no
    message (it said "rnnkit: error: [Errno 32] Broken pipe", exit 2)."""
    from rnnkit import cli

    def closed(*lines):
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(cli, "say", closed)
    with open(os.devnull, "w") as sink:  # main points stdout at os.devnull: not pytest's
        monkeypatch.setattr("sys.stdout", sink)
        assert main(["evaluate", str(text_run)]) == 0
    assert capsys.readouterr().err == ""


@pytest.mark.slow
def test_word_level_converts_loss_to_nats_per_character(tmp_path):
    run_dir = tmp_path / "words"
    argv = ["train", "lm", "--level", "word", "--limit", "8000", "--batch-size", "4"]
    argv += ["--bptt-k1", "20", "--sample-length", "0", *SMALL, "--run-dir", str(run_dir)]
    assert main(argv) == 0
    run = load_run(run_dir)
    metrics = run.task.evaluate(run, None)
    assert metrics == _test_metrics(run_dir)
    test_text = datasets.load("shakespeare", limit=8000)["test"]
    tokens = len(run.extras["tokenizer"].encode(test_text))
    assert tokens < len(test_text) / 2  # words, not characters
    assert math.isclose(metrics["nats_per_char"], metrics["loss"] * tokens / len(test_text))


# --- music ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_music_run_reloads_evaluates_and_writes_midi(music_run, tmp_path, capsys):
    run = load_run(music_run)
    assert isinstance(run.model, MusicModel)
    metrics = run.task.evaluate(run, None)
    assert metrics == _test_metrics(music_run)
    assert 0 < metrics["nll_per_frame"] < 88 * math.log(2)  # beats a coin per key
    assert (music_run / "sample.mid").is_file() and (music_run / "plots" / "loss.png").is_file()
    out = tmp_path / "chorale.mid"
    argv = ["generate", str(music_run), "--out", str(out), "--length", "16", "--seed", "5"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    roll = midi_to_roll(out)
    assert roll.shape == (16, 88)
    frames = run.model.generate(None, 0.8, torch.Generator().manual_seed(5))
    expected = torch.stack(list(islice(frames, 16)))
    assert (roll == expected.numpy()).all()  # the MIDI file holds exactly the sampled frames
    assert str(out) in printed and len(printed.splitlines()) == 17  # a line per frame + path
    continued = tmp_path / "continued.mid"  # --prompt: continue a MIDI file, written in front
    assert main(["generate", str(music_run), "--prompt", str(out), "--out", str(continued)]) == 0
    assert (midi_to_roll(continued)[:16] == roll).all()
    assert len(midi_to_roll(continued)) == 16 + 64


# --- errors -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_errors_are_one_line_with_exit_code_2(music_run, text_run, tmp_path, capsys):
    cases = [
        (["train", "lm", "rotten_tomatoes"], "classify dataset"),
        (["train", "lm", str(tmp_path / "missing.txt")], "no such file"),
        (
            ["train", "lm", "--level", "bpe", "--max-vocab", "100", "--run-dir", str(tmp_path)],
            "260",
        ),
        (["evaluate", str(music_run), "shakespeare"], "music model"),
        (["evaluate", str(text_run), "jsb_chorales"], "text model"),
        (["generate", str(text_run), "--top-p", "1.5"], "top_p"),
        (["generate", str(text_run), "--length", "-1"], "length"),
        (["generate", str(music_run), "--prompt", str(tmp_path / "none.mid")], "no such file"),
    ]
    for argv, words in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("rnnkit: error:") and err.count("\n") == 1, err
        assert words in err, err
