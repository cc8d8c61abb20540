"""Gradient clipping (by norm, on by default, and by value) and the non-finite guard."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from torch import nn

from rnnkit import RNN
from rnnkit.data import Batch
from rnnkit.train import NonFiniteLossError, TrainConfig, fit

torch.set_num_threads(1)


class ExplodingRNN(nn.Module):
    """A ReLU Elman RNN with recurrent weight 1.6 * I: h_T and its gradients grow like 1.6^T."""

    def __init__(self, hidden_size: int = 8) -> None:
        super().__init__()
        self.rnn = RNN(1, hidden_size, nonlinearity="relu", batch_first=True)
        with torch.no_grad():
            self.rnn.weight_hh_l0.copy_(1.6 * torch.eye(hidden_size))
            self.rnn.weight_ih_l0.fill_(0.5)
            self.rnn.bias_ih_l0.fill_(0.1)
            self.rnn.bias_hh_l0.zero_()

    def loss(self, batch: Batch) -> torch.Tensor:
        outputs, _ = self.rnn(batch.inputs)  # (B, T, H)
        return (outputs[:, -1] - batch.targets[:, None]).pow(2).mean()


def _exploding_batch() -> Batch:
    generator = torch.Generator().manual_seed(0)
    inputs = torch.rand(4, 30, 1, generator=generator)  # (B, T, 1)
    return Batch(inputs=inputs, lengths=None, targets=torch.zeros(4))


def _total_norm(model: nn.Module) -> float:
    return float(
        torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in model.parameters()]))
    )


def test_clipping_by_norm_is_on_by_default():
    assert TrainConfig(device="cpu").clip_norm == 1.0


def test_after_a_clipped_step_the_total_gradient_norm_is_at_most_max_norm():
    batch = _exploding_batch()
    reference = ExplodingRNN()
    reference.loss(batch).backward()
    raw_norm = _total_norm(reference)
    assert math.isfinite(raw_norm) and raw_norm > 1e6  # the set-up does explode

    model = copy.deepcopy(reference)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    config = TrainConfig(
        device="cpu",
        epochs=1,
        batch_size=4,
        optimizer="sgd",
        lr=1e-3,
        momentum=0.0,
        clip_norm=0.5,
        progress=False,
    )
    history = fit(model, batch, config=config)

    assert _total_norm(model) <= 0.5 * (1 + 1e-6)  # the step's gradients, left in .grad
    assert history[0]["grad_norm"] == pytest.approx(raw_norm, rel=1e-5)  # logged before clipping
    for name, p in model.named_parameters():  # SGD moved by lr * the clipped gradient
        clipped = reference.get_parameter(name).grad * (0.5 / raw_norm)
        torch.testing.assert_close(p.detach(), before[name] - 1e-3 * clipped, rtol=1e-5, atol=1e-7)


def test_clipping_by_value_bounds_every_gradient_element():
    model = ExplodingRNN()
    config = TrainConfig(
        device="cpu", epochs=1, batch_size=4, clip_norm=None, clip_value=0.01, progress=False
    )
    fit(model, _exploding_batch(), config=config)
    grads = torch.cat([p.grad.flatten() for p in model.parameters()])
    assert grads.abs().max() == pytest.approx(0.01)  # some elements were clipped, none exceed


class ScriptedLoss(nn.Module):
    """loss = (w - 1)^2 * factor, with `factor` taken from a script at each training call."""

    def __init__(self, script: list[str]) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))
        self.script = script  # "ok", "nan" (loss NaN), "inf" (loss Inf), "nan_grad" (grad NaN)
        self.calls = 0

    def loss(self, batch: Batch) -> torch.Tensor:
        kind = self.script[self.calls % len(self.script)]
        self.calls += 1
        loss = (self.w - 1).pow(2).sum()
        if kind == "nan":
            return loss * float("nan")
        if kind == "inf":
            return loss * float("inf")
        if kind == "nan_grad":
            return loss + torch.sqrt(self.w - self.w).sum()  # finite loss, d/dw sqrt(0) -> NaN
        return loss


def _dummy_data(n: int) -> Batch:
    return Batch(inputs=torch.zeros(n, 1, 1), lengths=None, targets=torch.zeros(n))


def test_non_finite_steps_are_skipped_and_counted(tmp_path):
    model = ScriptedLoss(["ok", "nan", "ok", "inf", "nan_grad", "ok"])
    config = TrainConfig(
        device="cpu", epochs=1, batch_size=1, lr=0.1, run_dir=str(tmp_path), progress=False
    )
    history = fit(model, _dummy_data(6), config=config)

    assert history[0]["skipped_steps"] == 3
    assert json.loads((tmp_path / "metrics.json").read_text())["nonfinite_steps"] == 3
    assert math.isfinite(history[0]["train_loss"])  # the mean of the three finite losses
    assert torch.isfinite(model.w).all() and 0 < model.w.item() < 1  # three real steps

    reference = ScriptedLoss(["ok"])
    fit(
        reference,
        _dummy_data(3),
        config=TrainConfig(device="cpu", epochs=1, batch_size=1, lr=0.1, progress=False),
    )
    assert torch.equal(model.w, reference.w)  # the skipped steps left no trace in AdamW


def test_too_many_non_finite_steps_in_a_row_stop_with_advice():
    model = ScriptedLoss(["ok", "nan"] + ["nan_grad"] * 10)
    config = TrainConfig(
        device="cpu", epochs=1, batch_size=1, max_nonfinite_steps=4, progress=False
    )
    with pytest.raises(NonFiniteLossError, match=r"4 steps in a row.*learning rate.*clip"):
        fit(model, _dummy_data(12), config=config)
    assert model.calls == 5  # one good step, then four bad ones in a row: the fourth stops
