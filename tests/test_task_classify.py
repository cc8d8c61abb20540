"""`rnnkit train classify` end to end on the built-in snippets, at a small size.

Train from the command line, reload the run, evaluate to the same metrics; the majority-class
baseline against a count by hand; `predict` lines against the model's own probabilities; a CSV
of the user's with other column names; and `--init-from` an lm run, whose encoder tensors the
classifier must start from exactly.
"""

from __future__ import annotations

import io
import json
from collections import Counter
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import rnnkit
from rnnkit.cli import main
from rnnkit.data import collate, datasets
from rnnkit.models.classifier import Classifier
from rnnkit.tasks import load_run

torch.set_num_threads(1)
SMALL = ["--hidden-size", "12", "--embedding-dim", "12", "--epochs", "2", "--no-progress"]
SMALL += ["--device", "cpu"]  # metrics compared exactly with a CPU evaluation


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("rnnkit: error: "), err
    assert "Traceback" not in err
    return err


@pytest.fixture(autouse=True)
def _in_tmp_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a default run directory (runs/...) lands in the test's folder


@pytest.fixture(scope="module")
def classify_run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("classify") / "run"
    code = main(["train", "classify", *SMALL, "--train-size", "400", "--run-dir", str(run_dir)])
    assert code == 0
    return run_dir


@pytest.mark.slow
def test_train_load_evaluate_gives_the_same_metrics(classify_run, capsys):
    recorded = json.loads((classify_run / "metrics.json").read_text())["test"]
    run = load_run(classify_run)
    assert run.task.evaluate(run, None) == recorded  # exactly: same weights, same batches
    assert main(["evaluate", str(classify_run)]) == 0
    printed = capsys.readouterr().out
    assert f"accuracy           {recorded['accuracy']:.4f}" in printed
    model = rnnkit.load(classify_run)
    assert isinstance(model, Classifier) and not model.training
    saved = load_file(classify_run / "model.safetensors")
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(tensor, saved[name], rtol=0, atol=0)
    assert {p.name for p in (classify_run / "plots").iterdir()} >= {"loss.png", "metrics.png"}


@pytest.mark.slow
def test_majority_baseline_matches_a_count_by_hand(classify_run):
    recorded = json.loads((classify_run / "metrics.json").read_text())["test"]
    splits = datasets.load("rotten_tomatoes")
    train_labels = Counter(label for _, label in splits["train"][:400])
    majority = max(sorted(train_labels), key=train_labels.__getitem__)
    test_labels = [label for _, label in splits["test"]]
    share = test_labels.count(majority) / len(test_labels)
    assert recorded["majority_accuracy"] == pytest.approx(share, abs=1e-7)
    assert recorded["majority_f1"] == pytest.approx(share / (1 + share), abs=1e-7)  # (F1 + 0) / 2
    assert 0.4 < recorded["accuracy"] <= 1.0


@pytest.mark.slow
def test_predict_prints_label_and_probability_per_sentence(classify_run, capsys, monkeypatch):
    sentences = ["A moving, beautifully acted film.", "Dull, long and pointless."]
    assert main(["predict", str(classify_run), *sentences]) == 0
    lines = capsys.readouterr().out.splitlines()
    run = load_run(classify_run)
    tokenizer, labels = run.extras["tokenizer"], run.extras["labels"]
    batch = collate([(tokenizer.encode(text), None) for text in sentences])
    with torch.no_grad():
        probabilities = run.model.probabilities(batch)
    assert len(lines) == len(sentences)
    for line, text, row in zip(lines, sentences, probabilities, strict=True):
        label, probability, echoed = line.split("\t")
        assert echoed == text
        assert label == labels[int(row.argmax())]
        assert float(probability) == pytest.approx(float(row.max()), abs=5e-4)
        assert 0.5 <= float(probability) <= 1.0  # two classes: the chosen one has at least half
    monkeypatch.setattr("sys.stdin", io.StringIO("\n".join(sentences) + "\n"))
    assert main(["predict", str(classify_run), "-"]) == 0  # one input per line of stdin
    assert capsys.readouterr().out.splitlines() == lines
    assert main(["predict", str(classify_run), "Fine.", "--plots", "maps"]) == 2
    err = capsys.readouterr().err
    assert "draws no figures; --plots needs a run of 'translate'" in err and err.count("\n") == 1
    monkeypatch.setattr("sys.stdin", io.StringIO("\n  \n"))  # stdin without text
    assert main(["predict", str(classify_run), "-"]) == 2
    assert "nothing to predict: standard input (-) gave no line" in capsys.readouterr().err


@pytest.mark.slow
def test_a_csv_with_other_columns_and_an_unseen_label(tmp_path, capsys):
    rows = datasets.load("rotten_tomatoes")["train"][:120]
    csv = tmp_path / "reviews.csv"
    csv.write_text("stars,review\n" + "".join(f'{y},"{x}"\n' for x, y in rows), encoding="utf-8")
    run_dir = tmp_path / "run"
    columns = ["--text-column", "review", "--label-column", "stars"]
    assert main(["train", "classify", str(csv), *SMALL, *columns, "--run-dir", str(run_dir)]) == 0
    run = load_run(run_dir)
    assert run.extras["labels"] == ["fresh", "rotten"]
    assert (
        run.task.evaluate(run, None) == json.loads((run_dir / "metrics.json").read_text())["test"]
    )
    test = run.task.evaluate(run, str(csv))  # the whole file
    assert 0.0 <= test["accuracy"] <= 1.0
    csv.write_text('stars,review\nmeh,"Neither here nor there."\n', encoding="utf-8")
    assert main(["evaluate", str(run_dir), str(csv)]) == 2
    assert "not seen in training" in _one_line_error(capsys)


@pytest.mark.slow
def test_init_from_an_lm_run_starts_from_its_encoder_and_tokenizer(classify_run, tmp_path, capsys):
    lm_dir, cls_dir = tmp_path / "lm", tmp_path / "classify"
    lm = ["train", "lm", "shakespeare", "--level", "word", "--limit", "6000", "--hidden-size", "12"]
    lm += ["--epochs", "1", "--bptt-k1", "10", "--batch-size", "4", "--sample-length", "0"]
    assert main([*lm, "--no-progress", "--run-dir", str(lm_dir)]) == 0
    tiny_steps = ["--lr", "1e-12", "--train-size", "64", "--epochs", "1", "--no-progress"]
    code = main(
        ["train", "classify", "--init-from", str(lm_dir), *tiny_steps, "--run-dir", str(cls_dir)]
    )
    assert code == 0
    assert "encoder taken from the language model" in capsys.readouterr().out
    language_model, classifier = load_run(lm_dir), load_run(cls_dir)
    assert classifier.options.hidden_size == 12 and classifier.options.bidirectional is False
    lm_weights = language_model.model.state_dict()
    encoder_names = [name for name in lm_weights if name.startswith("encoder.")]
    assert (
        "encoder.embedding.weight" in encoder_names and "encoder.rnn.weight_hh_l0" in encoder_names
    )
    weights = classifier.model.state_dict()
    for name in encoder_names:  # lr 1e-12: the copy, moved by at most ~1e-12 per step
        torch.testing.assert_close(weights[name], lm_weights[name], rtol=0, atol=1e-9)
    tokenizer_files = [json.loads((d / "tokenizer.json").read_text()) for d in (lm_dir, cls_dir)]
    assert tokenizer_files[0] == tokenizer_files[1]
    again = ["--init-from", str(cls_dir), *tiny_steps, "--run-dir", str(tmp_path / "again")]
    assert main(["train", "classify", *again]) == 0  # a forward-only classifier serves too
    capsys.readouterr()
    bidirectional = [
        "--init-from",
        str(classify_run),
        *tiny_steps,
        "--run-dir",
        str(tmp_path / "x"),
    ]
    assert main(["train", "classify", *bidirectional]) == 2
    assert "its encoder is bidirectional" in _one_line_error(capsys)
