"""`rnnkit train translate` end to end: the synthetic `reverse` check and a tiny bible run.

Reversing digit strings must reach >= 99 % exact-sequence accuracy from the command line; the
reloaded run must evaluate to the same metrics; a tiny English -> Spanish run must train,
reload, translate a line and write its attention heat-map. The target-id mapping between
`Vocab` (pad 0, unk 1, bos 2, eos 3) and Seq2Seq (PAD 0, BOS 1, EOS 2) is checked by hand.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from rnnkit.cli import main
from rnnkit.data import WordTokenizer
from rnnkit.models.seq2seq import BOS, EOS, PAD, Seq2Seq
from rnnkit.tasks import load_run
from rnnkit.tasks.translate import (
    _kept,
    attention_figure,
    reverse_pairs,
    to_model,
    to_vocab,
    translation_scores,
)

torch.set_num_threads(1)
SMALL = ["--hidden-size", "32", "--embedding-dim", "16", "--dropout", "0", "--no-progress"]
SMALL += ["--device", "cpu"]  # metrics compared exactly with a CPU evaluation


@pytest.fixture(autouse=True)
def _in_tmp_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


def test_target_ids_follow_seq2seq_specials():
    # Vocab: <pad> 0, <unk> 1, <bos> 2, <eos> 3; Seq2Seq: PAD 0, BOS 1, EOS 2, <unk> goes to 3
    assert to_model([0, 1, 2, 3, 4, 17]) == [PAD, 3, BOS, EOS, 4, 17]
    assert to_vocab(to_model(list(range(10)))) == list(range(10))


def test_reverse_pairs_are_reversed_and_seeded():
    pairs = reverse_pairs(50, seed=3)
    assert pairs == reverse_pairs(50, seed=3) != reverse_pairs(50, seed=4)
    for source, target in pairs:
        assert target.split() == source.split()[::-1] and 1 <= len(source.split()) <= 8


def test_translations_are_scored_against_the_reference_text_where_unk_matches_nothing():
    """A model that outputs the reference's vocabulary ids, `<unk>` for a word the vocabulary
    lacks, is not exact there, and its BLEU is sacrebleu's against the true lower-cased text."""
    import sacrebleu

    tokenizers = {
        side: WordTokenizer.fit(["The dog eats.", "A cat sleeps."], lowercase=True)
        for side in ("source", "target")
    }
    pairs = [("The dog eats.", "The dog eats."), ("A cat sleeps.", "A zebra sleeps.")]
    kept = _kept(pairs, tokenizers, max_length=10)
    target = tokenizers["target"]
    hypotheses = [to_vocab(sample[1][:-1]) for sample, _ in kept]  # the references' ids
    assert "<unk>" in target.vocab.decode(hypotheses[1])  # "zebra" is not in the vocabulary
    scores = translation_scores(hypotheses, [tokens for _, tokens in kept], target)
    assert scores["exact_accuracy"] == 0.5
    expected = sacrebleu.corpus_bleu(
        ["the dog eats.", "a <unk> sleeps."], [["the dog eats.", "a zebra sleeps."]]
    )
    assert scores["bleu"] == pytest.approx(expected.score) and scores["bleu"] < 100


@pytest.mark.slow
def test_reverse_reaches_99_percent_and_reloads_to_the_same_metrics(tmp_path, capsys):
    run_dir = tmp_path / "reverse"
    args = ["train", "translate", "reverse", *SMALL, "--epochs", "8", "--run-dir", str(run_dir)]
    assert main(args) == 0
    recorded = json.loads((run_dir / "metrics.json").read_text())["test"]
    assert recorded["exact_accuracy"] >= 0.99
    run = load_run(run_dir)
    assert isinstance(run.model, Seq2Seq)
    assert run.task.evaluate(run, None) == recorded  # exactly: same weights, same batches
    capsys.readouterr()
    assert main(["predict", str(run_dir), "1 2 3 4 5", "9 0 7"]) == 0
    assert capsys.readouterr().out.splitlines() == ["5 4 3 2 1", "7 0 9"]
    maps = tmp_path / "maps"
    assert main(["predict", str(run_dir), "1 2 3 4 5", "--plots", str(maps)]) == 0
    assert capsys.readouterr().out.splitlines() == ["5 4 3 2 1", f"wrote {maps}/attention-1.png"]
    assert (maps / "attention-1.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ids = run.extras["tokenizers"]["source"].encode("1 2 3 4 5")
    figure = attention_figure(run.model, (ids, []), run.extras["tokenizers"], run.options)
    weights = figure.axes[0].images[0].get_array()  # (output tokens, source tokens)
    assert weights.argmax(axis=1)[:5].tolist() == [4, 3, 2, 1, 0]  # each digit from its mirror


@pytest.mark.slow
def test_tiny_bible_run_trains_reloads_predicts_and_plots(tmp_path, capsys):
    run_dir = tmp_path / "bible"
    tiny = ["--hidden-size", "16", "--embedding-dim", "16", "--no-progress", "--epochs", "1"]
    tiny += ["--device", "cpu"]
    args = ["train", "translate", *tiny, "--train-size", "300", "--max-length", "12"]
    assert main([*args, "--run-dir", str(run_dir)]) == 0
    recorded = json.loads((run_dir / "metrics.json").read_text())["test"]
    assert set(recorded) >= {"loss", "bleu", "exact_accuracy"}
    run = load_run(run_dir)
    assert run.task.evaluate(run, None) == recorded
    capsys.readouterr()
    assert main(["predict", str(run_dir), "And God said, Let there be light."]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and lines[0].strip()
    png = Path(run_dir) / "plots" / "attention.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
