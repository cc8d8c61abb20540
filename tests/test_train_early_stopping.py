"""Early stopping on a scripted validation curve, restoring the best weights, plateau schedule."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from torch import nn

from rnnkit.data import Batch
from rnnkit.train import TrainConfig, fit

torch.set_num_threads(1)


class ScriptedValidation(nn.Module):
    """Trains w towards 1; its validation loss is read from `curve`, one value per evaluation.

    Each evaluation also records the weights it saw, so a test knows every epoch's weights.
    """

    def __init__(self, curve: list[float]) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(3))
        self.curve = curve
        self.seen: list[torch.Tensor] = []  # w at each evaluation, i.e. after each epoch

    def loss(self, batch: Batch) -> torch.Tensor:
        if self.training:
            return (self.w - 1).pow(2).sum()
        self.seen.append(self.w.detach().clone())
        return torch.tensor(self.curve[len(self.seen) - 1])


def _data(n: int) -> Batch:
    return Batch(inputs=torch.zeros(n, 2, 1), lengths=None, targets=torch.zeros(n))


def test_early_stopping_stops_at_the_right_epoch_and_restores_the_best_weights():
    curve = [5.0, 4.0, 3.0, 3.5, 3.2, 3.1, 3.6, 2.0, 1.0]  # best at epoch 3, then 3 worse
    model = ScriptedValidation(curve)
    config = TrainConfig(
        epochs=9, batch_size=2, eval_batch_size=4, lr=0.05, patience=3, progress=False
    )

    history = fit(model, _data(4), _data(4), config)

    assert [row["epoch"] for row in history] == [1, 2, 3, 4, 5, 6]
    assert [row["val_loss"] for row in history] == pytest.approx(curve[:6])
    assert len(model.seen) == 6
    assert torch.equal(model.w.detach(), model.seen[2])  # the weights of epoch 3
    assert not torch.equal(model.seen[2], model.seen[5])  # and training did move them


def test_min_delta_decides_what_counts_as_an_improvement():
    curve = [5.0, 4.95, 4.9, 4.0, 3.0]  # steps of 0.05 do not count with min_delta = 0.1
    model = ScriptedValidation(curve)
    config = TrainConfig(epochs=5, batch_size=4, patience=2, min_delta=0.1, progress=False)
    history = fit(model, _data(4), _data(4), config)
    assert len(history) == 3
    assert torch.equal(model.w.detach(), model.seen[0])


def test_plateau_schedule_halves_the_lr_after_patience_bad_epochs():
    """As early stopping counts: after `plateau_patience` epochs in a row without improving by
    more than min_delta (torch's ReduceLROnPlateau waits one epoch more, and asks 1e-4)."""
    curve = [5.0, 4.0, 3.0, 3.5, 3.2, 3.1, 3.3]
    model = ScriptedValidation(curve)
    config = TrainConfig(
        epochs=7,
        batch_size=4,
        lr=0.1,
        schedule="plateau",
        plateau_patience=1,
        plateau_factor=0.5,
        progress=False,
    )
    history = fit(model, _data(4), _data(4), config)
    lrs = [row["lr"] for row in history]  # the lr used during each epoch
    assert lrs == pytest.approx([0.1, 0.1, 0.1, 0.1, 0.05, 0.025, 0.0125])
    tiny_gains = [1.0 - 4e-5 * epoch for epoch in range(5)]  # improving every epoch
    history = fit(ScriptedValidation(tiny_gains), _data(4), _data(4), replace(config, epochs=5))
    assert [row["lr"] for row in history] == pytest.approx([0.1] * 5)
    slow = [5.0, 4.0, 3.0, 2.9, 2.8, 2.7, 2.6]  # from 3.0 on, gains under min_delta a step
    patient = replace(config, epochs=7, plateau_patience=2, min_delta=0.25)
    history = fit(ScriptedValidation(slow), _data(4), _data(4), patient)  # 2.7: 0.3 below 3.0
    assert [row["lr"] for row in history] == pytest.approx([0.1] * 5 + [0.05, 0.05])
