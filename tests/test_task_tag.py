"""The `tag` task: entity F1 by hand, tokenizing and batching, and end-to-end runs from the
command line (UPOS on the built-in treebank sample, BIO entities from a column-CoNLL file)."""

from __future__ import annotations

import json
import random
from collections import Counter

import pytest
import torch

import rnnkit.tasks
from rnnkit import cli
from rnnkit.data import Batch, datasets
from rnnkit.models.tagger import Tagger, TaggerConfig
from rnnkit.tasks.tag import collate_tagged, entity_scores, entity_spans, is_bio, tokenize

torch.set_num_threads(1)

SMALL = ["--hidden-size", "32", "--embedding-dim", "32", "--char-hidden-size", "16"]
SMALL += ["--char-embedding-dim", "16", "--lr", "0.01", "--no-progress"]


# --- entity spans and scores, by hand ---------------------------------------------------------


@pytest.mark.parametrize(
    ("tags", "spans"),
    [
        (["B-PER", "I-PER", "O", "B-LOC"], {(0, 2, "PER"), (3, 4, "LOC")}),
        (["I-PER", "I-PER", "O"], {(0, 2, "PER")}),  # I- without B- starts an entity
        (["O", "I-MISC"], {(1, 2, "MISC")}),  # ... also at the end
        (["B-PER", "I-LOC", "I-LOC"], {(0, 1, "PER"), (1, 3, "LOC")}),  # type change: new one
        (["B-PER", "B-PER", "I-PER"], {(0, 1, "PER"), (1, 3, "PER")}),  # B- ends the previous
        (["O", "O"], set()),
    ],
)
def test_entity_spans_by_hand(tags, spans):
    assert entity_spans(tags) == spans


def test_entity_scores_by_hand():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    predicted = [["B-PER", "O", "O", "B-LOC"], ["I-ORG", "B-LOC"]]
    # gold spans: PER(0,2) LOC(3,4) ORG(0,1) = 3; predicted: PER(0,1) LOC(3,4) ORG(0,1) LOC(1,2) = 4
    # exact matches: LOC(3,4), ORG(0,1) = 2  ->  P = 2/4, R = 2/3, F1 = 2PR/(P+R) = 4/7
    scores = entity_scores(gold, predicted)
    assert scores["entity_precision"] == pytest.approx(0.5)
    assert scores["entity_recall"] == pytest.approx(2 / 3)
    assert scores["entity_f1"] == pytest.approx(4 / 7)
    assert entity_scores([["O"]], [["O"]]) == {
        "entity_precision": 0.0,
        "entity_recall": 0.0,
        "entity_f1": 0.0,
    }


def test_is_bio():
    assert is_bio(["O", "B-PER", "I-PER"])
    assert not is_bio(["NOUN", "VERB"])
    assert not is_bio(["O"])
    assert not is_bio(["O", "B-"])


def test_tokenize_splits_punctuation_and_clitics():
    assert tokenize("I don't think it's e-mail, U.S.A.") == [
        "I", "do", "n't", "think", "it", "'s", "e-mail", ",", "U.S.A", ".",
    ]  # fmt: skip


def test_collate_pads_words_chars_and_tags():
    batch = collate_tagged([([5, 6], [[7, 8, 9], [4]], [1, 0]), ([3], [[2, 2]], [2])])
    assert batch.inputs["words"].tolist() == [[5, 6], [3, 0]]
    assert batch.inputs["chars"].tolist() == [[[7, 8, 9], [4, 0, 0]], [[2, 2, 0], [0, 0, 0]]]
    assert batch.lengths.tolist() == [2, 1]
    assert batch.targets.tolist() == [[1, 0], [2, -100]]


def test_tagger_word_dropout_makes_words_unknown_in_training_only():
    torch.manual_seed(0)
    config = TaggerConfig(vocab_size=20, num_tags=3, dropout=0.0, word_dropout=0.999999)
    model = Tagger(config)
    lengths = torch.tensor([3, 1])
    words = Batch(inputs={"words": torch.tensor([[5, 6, 7], [8, 0, 0]])}, lengths=lengths)
    unknown = Batch(inputs={"words": torch.tensor([[1, 1, 1], [1, 0, 0]])}, lengths=lengths)
    torch.testing.assert_close(model(words), model(unknown))  # training: all became <unk>
    model.eval()
    assert not torch.allclose(model(words), model(unknown))
    assert model.predict(words)[1, 1:].tolist() == [0, 0]  # past the length


# --- end to end from the command line ---------------------------------------------------------


@pytest.fixture(scope="module")
def upos_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("tag") / "run"
    args = ["train", "tag", "--limit", "200", "--epochs", "3", "--run-dir", str(run_dir), *SMALL]
    assert cli.main(args) == 0
    return run_dir


@pytest.mark.slow
def test_upos_run_reloads_and_evaluates_to_the_same_metrics(upos_run, capsys):
    recorded = json.loads((upos_run / "metrics.json").read_text())["test"]
    run = rnnkit.tasks.load_run(upos_run)
    assert isinstance(rnnkit.tasks.load(upos_run), Tagger)
    assert run.task.evaluate(run, None) == recorded  # exactly the same numbers
    sample = datasets.load("ud_english_ewt", limit=200)["test"]
    counts = Counter(tag for sentence in sample for tag in sentence.tags)
    majority = counts.most_common(1)[0][1] / sum(counts.values())
    assert recorded["accuracy"] > majority + 0.2  # far above always guessing NOUN
    assert set(recorded) == {"loss", "accuracy"}  # UPOS is not a BIO tag set
    assert (upos_run / "plots" / "loss.png").stat().st_size > 1000
    capsys.readouterr()
    assert cli.main(["evaluate", str(upos_run)]) == 0
    assert f"accuracy  {recorded['accuracy']:.4f}" in capsys.readouterr().out


@pytest.mark.slow
def test_predict_prints_token_tag_pairs(upos_run, capsys):
    capsys.readouterr()
    assert cli.main(["predict", str(upos_run), "The cat sat on the mat.", "Go home"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    pairs = [pair.rsplit("/", 1) for pair in lines[0].split()]
    assert [word for word, _ in pairs] == ["The", "cat", "sat", "on", "the", "mat", "."]
    tags = json.loads((upos_run / "tags.json").read_text())["tags"]
    assert all(tag in tags for _, tag in pairs)


@pytest.mark.slow
def test_errors_are_one_line_with_exit_code_2(upos_run, tmp_path, capsys):
    capsys.readouterr()
    assert cli.main(["forecast", str(upos_run)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rnnkit: error:") and "'tag' run" in err and err.count("\n") == 1
    assert cli.main(["train", "tag", str(tmp_path / "missing.conllu"), "--epochs", "1"]) == 2
    assert "no such file" in capsys.readouterr().err


def write_ner_file(path, sentences: int = 240) -> None:
    """A column-CoNLL file of easy BIO entities: people, places and companies in templates."""
    rng = random.Random(0)
    first, last = ["John", "Mary", "Alice", "Bob"], ["Smith", "Jones", "Brown"]
    places, companies = ["Paris", "London", "Berlin", "Rome"], ["Acme", "Globex", "Initech"]
    lines = ["-DOCSTART- O", ""]
    for _ in range(sentences):
        person = [(rng.choice(first), "B-PER")] + [(rng.choice(last), "I-PER")] * rng.randint(0, 1)
        words = [*person, ("works", "O"), ("for", "O"), (rng.choice(companies), "B-ORG")]
        words += [("in", "O"), (rng.choice(places), "B-LOC"), (".", "O")]
        lines += [f"{word} {tag}" for word, tag in words] + [""]
    path.write_text("\n".join(lines), encoding="utf-8")


@pytest.mark.slow
def test_bio_file_gets_entity_f1_with_softmax_and_reloads(tmp_path):
    data, run_dir = tmp_path / "ner.txt", tmp_path / "run"
    write_ner_file(data)
    args = ["train", "tag", str(data), "--no-crf", "--epochs", "4", "--run-dir", str(run_dir)]
    assert cli.main([*args, *SMALL]) == 0
    recorded = json.loads((run_dir / "metrics.json").read_text())["test"]
    assert set(recorded) == {"loss", "accuracy", "entity_precision", "entity_recall", "entity_f1"}
    assert recorded["entity_f1"] > 0.8  # the templates are easy
    run = rnnkit.tasks.load_run(run_dir)
    assert run.model.crf is None
    assert run.task.evaluate(run, None) == recorded
    whole = run.task.evaluate(run, str(data))  # a file given to evaluate is scored whole
    assert whole != recorded and whole["entity_f1"] > 0.8
