"""Metrics by name against hand-computed values; samples + collate; the progress bar."""

from __future__ import annotations

import math
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rnnkit import GRU
from rnnkit.data import Batch
from rnnkit.train import METRIC_NAMES, TrainConfig, evaluate, fit, seed_everything

torch.set_num_threads(1)


class Classifier(nn.Module):
    """GRU over (B, T, 3); the last output is classified into 3 classes."""

    def __init__(self) -> None:
        super().__init__()
        self.rnn = GRU(3, 8, batch_first=True)
        self.head = nn.Linear(8, 3)

    def logits(self, batch: Batch) -> torch.Tensor:
        outputs, _ = self.rnn(batch.inputs)  # (B, T, 8)
        return self.head(outputs[:, -1])  # (B, 3)

    def loss(self, batch: Batch) -> torch.Tensor:
        return F.cross_entropy(self.logits(batch), batch.targets)

    def predict(self, batch: Batch) -> torch.Tensor:
        return self.logits(batch).argmax(dim=-1)  # (B,) labels


def _classes(n: int, seed: int) -> Batch:
    """The label is the channel with the largest sum over time."""
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(n, 6, 3, generator=generator)
    return Batch(inputs=inputs, lengths=None, targets=inputs.sum(dim=1).argmax(dim=-1))


def _macro_scores(preds: torch.Tensor, targets: torch.Tensor, classes: int) -> dict[str, float]:
    """Macro-averaged precision, recall and F1, written out."""
    precision, recall, f1 = [], [], []
    for c in range(classes):
        tp = ((preds == c) & (targets == c)).sum().item()
        predicted, actual = (preds == c).sum().item(), (targets == c).sum().item()
        precision.append(tp / predicted if predicted else 0.0)
        recall.append(tp / actual if actual else 0.0)
        f1.append(2 * tp / (predicted + actual) if tp else 0.0)
    mean = lambda values: sum(values) / classes  # noqa: E731
    return {"precision": mean(precision), "recall": mean(recall), "f1": mean(f1)}


def test_classification_metrics_and_perplexity_equal_hand_computed_values():
    seed_everything(0)
    model = Classifier()
    val = _classes(50, seed=2)
    config = TrainConfig(
        device="cpu",
        epochs=3,
        batch_size=16,
        eval_batch_size=16,  # four batches of 16, 16, 16, 2: the metrics accumulate
        lr=0.02,
        metrics=("accuracy", "f1", "precision", "recall", "perplexity"),
        num_classes=3,
        monitor="val_accuracy",
        progress=False,
    )
    history = fit(model, _classes(160, seed=1), val, config)

    model.eval()
    with torch.no_grad():
        preds = model.predict(val)
        loss = model.loss(val).item()
    last = history[-1]
    assert last["val_accuracy"] == pytest.approx((preds == val.targets).float().mean().item())
    for name, value in _macro_scores(preds, val.targets, 3).items():
        assert last[f"val_{name}"] == pytest.approx(value, rel=1e-5), name
    assert last["val_loss"] == pytest.approx(loss, rel=1e-5)
    assert last["val_perplexity"] == pytest.approx(math.exp(loss), rel=1e-5)
    assert last["val_accuracy"] > 0.5  # and it learned something
    assert (
        TrainConfig(
            device="cpu", metrics=("accuracy",), num_classes=3, monitor="val_accuracy"
        ).monitor_mode
        == "max"
    )


def test_regression_metrics_equal_hand_computed_values():
    seed_everything(0)
    model = nn.Module()  # a regressor whose prediction is inputs.sum(), targets nearby
    model.scale = nn.Parameter(torch.ones(()))
    model.loss = lambda b: F.mse_loss(model.predict(b), b.targets)
    model.predict = lambda b: b.inputs.sum(dim=(1, 2)) * model.scale
    data = Batch(torch.rand(20, 4, 1) + 0.1, None, torch.rand(20) * 2 + 0.5)
    regression = [n for n in METRIC_NAMES if n in ("mae", "mse", "rmse", "mape", "smape", "r2")]
    scores = evaluate(model, data, regression)
    preds, targets = model.predict(data).detach(), data.targets
    assert scores["mae"] == pytest.approx((preds - targets).abs().mean().item(), rel=1e-5)
    assert scores["rmse"] == pytest.approx(math.sqrt(scores["mse"]), rel=1e-5)
    assert scores["mape"] == pytest.approx(
        ((preds - targets) / targets).abs().mean().item(), rel=1e-4
    )
    assert set(scores) == {"loss", *regression}


def test_samples_with_collate_train_exactly_like_the_same_data_as_one_batch():
    data = _classes(48, seed=1)
    samples = [(data.inputs[i], int(data.targets[i])) for i in range(48)]  # a list of samples

    def collate(items: list) -> Batch:
        return Batch(torch.stack([x for x, _ in items]), None, torch.tensor([y for _, y in items]))

    config = TrainConfig(device="cpu", epochs=2, batch_size=10, lr=0.02, progress=False)
    seed_everything(0)
    from_batch = Classifier()
    history_batch = fit(from_batch, data, config=config)
    seed_everything(0)
    from_samples = Classifier()
    history_samples = fit(from_samples, samples, config=config, collate=collate)
    assert history_batch == history_samples
    for a, b in zip(from_batch.parameters(), from_samples.parameters(), strict=True):
        assert torch.equal(a, b)


def test_progress_bar_shows_loss_and_throughput_on_a_terminal(monkeypatch, capsys):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    fit(
        Classifier(), _classes(32, seed=1), config=TrainConfig(device="cpu", epochs=1, batch_size=8)
    )
    shown = capsys.readouterr().err
    assert "epoch 1/1" in shown and "loss=" in shown and "ex_per_s=" in shown

    fit(
        Classifier(),
        _classes(32, seed=1),
        config=TrainConfig(device="cpu", epochs=1, progress=False),
    )
    assert capsys.readouterr().err == ""


class TokenMean(nn.Module):
    """loss = the mean of (x - w)^2 over the true steps of the batch (a per-token loss)."""

    def __init__(self, counts_tokens: bool) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor(0.5))
        if counts_tokens:
            self.loss_weight = lambda batch: int(batch.lengths.sum())

    def loss(self, batch: Batch) -> torch.Tensor:
        steps = torch.arange(batch.inputs.shape[1])
        valid = steps[None, :] < batch.lengths[:, None]  # (B, T)
        return ((batch.inputs - self.w) ** 2)[valid].mean()


def test_evaluate_weights_batches_by_what_the_loss_averages_over():
    """With `loss_weight` the loss is the mean over all tokens, whatever the batch size; without
    it, a mean of per-batch means weighted by sequences."""
    g = torch.Generator().manual_seed(0)
    lengths = torch.tensor([1, 9, 2, 8, 3])
    inputs = torch.randn(5, 9, generator=g)
    data = Batch(inputs=inputs, lengths=lengths, targets=torch.zeros(5))
    valid = torch.arange(9)[None, :] < lengths[:, None]
    exact = float(((inputs - 0.5) ** 2)[valid].mean())
    for batch_size in (1, 2, 5):
        config = TrainConfig(device="cpu", batch_size=batch_size)
        got = evaluate(TokenMean(counts_tokens=True), data, (), config)["loss"]
        assert got == pytest.approx(exact, rel=1e-6)
    per_batch = [float(((inputs[i] - 0.5) ** 2)[valid[i]].mean()) for i in range(5)]
    sequences = evaluate(
        TokenMean(counts_tokens=False), data, (), TrainConfig(device="cpu", batch_size=1)
    )
    assert sequences["loss"] == pytest.approx(sum(per_batch) / 5, rel=1e-6)
    assert abs(sequences["loss"] - exact) > 0.01  # the two weightings differ on this data


class TokenClassifier(nn.Module):
    """Per-token cross-entropy of a linear map over (B, T, 3), targets -100 where untagged,
    averaged over the tagged tokens (as the tagger's loss and `loss_weight`)."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(3, 4)

    def loss(self, batch: Batch) -> torch.Tensor:
        logits = self.head(batch.inputs)
        return F.cross_entropy(logits.flatten(0, 1), batch.targets.flatten(), ignore_index=-100)

    def loss_weight(self, batch: Batch) -> int:
        return int((batch.targets != -100).sum())


def test_a_batch_with_nothing_to_score_leaves_the_evaluation_loss_alone():
    """A sequence whose targets are all padding (its cross-entropy is 0/0 = NaN) adds nothing:
    the loss and perplexity are the mean over the tagged tokens at every batch size; data with
    no target at all is an error that says so."""
    torch.manual_seed(0)
    model = TokenClassifier()
    inputs = torch.randn(3, 5, 3)
    targets = torch.randint(0, 4, (3, 5))
    targets[1] = -100  # the middle sentence is untagged
    targets[2, 3:] = -100
    data = Batch(inputs=inputs, lengths=torch.full((3,), 5), targets=targets)
    with torch.no_grad():
        logits = model.head(inputs)
        tagged = targets != -100
        exact = float(F.cross_entropy(logits[tagged], targets[tagged]))
    for batch_size in (1, 2, 3):
        config = TrainConfig(device="cpu", batch_size=batch_size)
        scores = evaluate(model, data, ("perplexity",), config)
        assert scores["loss"] == pytest.approx(exact, rel=1e-6)
        assert scores["perplexity"] == pytest.approx(math.exp(exact), rel=1e-6)
    untagged = Batch(inputs=inputs, lengths=data.lengths, targets=torch.full((3, 5), -100))
    with pytest.raises(ValueError, match="nothing to score: every target"):
        evaluate(model, untagged, (), TrainConfig(device="cpu", batch_size=2))
