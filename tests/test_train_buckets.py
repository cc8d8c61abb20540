"""`fit(..., lengths=)`: batches of similar lengths, each sample once per epoch, in an order
that is a function of (seed, epoch) and splits over processes like the plain order does."""

from __future__ import annotations

import random

import pytest
import torch
from torch import nn

from rnnkit.data import Batch, pad_sequences
from rnnkit.train import TrainConfig, fit
from rnnkit.train.batches import train_order

torch.set_num_threads(1)
_RNG = random.Random(0)
LENGTHS = [_RNG.randint(1, 60) for _ in range(400)]


def _padding(order: list[list[int]]) -> int:
    return sum(len(b) * max(LENGTHS[i] for i in b) - sum(LENGTHS[i] for i in b) for b in order)


def _rows(*args, **kwargs) -> list[list[int]]:
    return [share.rows for share in train_order(*args, **kwargs)]


def test_bucketed_order_covers_every_sample_once_with_less_padding():
    plain = _rows(400, 16, seed=3, epoch=0, rank=0, world=1)
    bucketed = _rows(400, 16, seed=3, epoch=0, rank=0, world=1, lengths=LENGTHS)
    assert sorted(i for b in bucketed for i in b) == list(range(400))
    assert [len(b) for b in bucketed].count(16) == 25 and len(bucketed) == len(plain)
    assert _padding(bucketed) < 0.2 * _padding(plain)  # sorted pools of 800 samples
    assert bucketed == _rows(400, 16, 3, 0, 0, 1, LENGTHS)  # a function of (seed, epoch)
    assert bucketed != _rows(400, 16, 3, 1, 0, 1, LENGTHS)
    assert bucketed != _rows(400, 16, 4, 0, 0, 1, LENGTHS)


@pytest.mark.parametrize("bucketed", [False, True])
@pytest.mark.parametrize(
    ("n", "batch", "world"), [(50, 12, 2), (50, 18, 3), (50, 24, 4), (9, 4, 4), (13, 8, 8)]
)
def test_processes_share_out_each_global_batch(n, batch, world, bucketed):
    """Step s of every process together is the global batch one process sees at step s, each
    row once, and the weights of the processes' mean losses make DDP's average of them the
    batch's mean: sum over processes of weight * mean over its rows == world * batch mean,
    for any per-row losses. A process without a row takes one at weight 0."""
    lengths = LENGTHS[:n] if bucketed else None
    single = train_order(n, batch, 1, 2, 0, 1, lengths)
    assert all(share.weight == 1.0 for share in single)
    shares = [train_order(n, batch, 1, 2, rank, world, lengths) for rank in range(world)]
    assert [len(share) for share in shares] == [len(single)] * world
    losses = torch.rand(n, generator=torch.Generator().manual_seed(n))  # a loss per row
    for step, (global_batch, _) in enumerate(single):
        parts = [share[step] for share in shares]
        counted = [part.rows for part in parts if part.weight > 0]
        assert sorted(i for rows in counted for i in rows) == sorted(global_batch)  # once each
        assert all(part.rows for part in parts)  # every process computes something
        ddp = sum(part.weight * losses[part.rows].mean() for part in parts) / world
        torch.testing.assert_close(ddp, losses[global_batch].mean())


class LengthRecorder(nn.Module):
    """A model whose loss remembers the true lengths of each training batch it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))
        self.seen: list[list[int]] = []

    def loss(self, batch: Batch) -> torch.Tensor:
        if self.training:
            self.seen.append(batch.lengths.tolist())
        return ((batch.inputs.sum(dim=1) - self.w) ** 2).mean()


def _collate(samples):
    inputs, lengths = pad_sequences([torch.ones(n) for n, _ in samples], 0.0)
    return Batch(inputs=inputs, lengths=lengths, targets=torch.zeros(len(samples)))


def test_fit_trains_on_bucketed_batches():
    samples = [(n, None) for n in LENGTHS[:96]]
    model = LengthRecorder()
    config = TrainConfig(epochs=2, batch_size=8, patience=None, progress=False)
    fit(model, samples, None, config, collate=_collate, lengths=LENGTHS[:96])
    assert len(model.seen) == 24
    for epoch in (model.seen[:12], model.seen[12:]):
        assert sorted(n for b in epoch for n in b) == sorted(LENGTHS[:96])
    spread = sum(max(b) - min(b) for b in model.seen) / len(model.seen)
    assert spread < 10  # random batches of 8 from 1-60 spread about 40
    with pytest.raises(ValueError, match="lengths has 3 entries for 96 training samples"):
        fit(LengthRecorder(), samples, None, config, collate=_collate, lengths=[1, 2, 3])
