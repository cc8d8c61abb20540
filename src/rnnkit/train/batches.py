"""How `fit` and `evaluate` walk over data: slicing, collating, data order and sharding.

Training data is either one `Batch` holding the whole data set (its rows are sliced into
mini-batches) or any sized, indexable collection of samples plus a `collate` function that
turns a list of samples into a `Batch`. Streams for truncated BPTT are `rnnkit.train.tbptt.Stream`.

The order of an epoch is a function of (seed, epoch) only: `torch.utils.data.DistributedSampler`
with `shuffle=True` draws `randperm(N)` from a generator seeded with seed + epoch, and process
`rank` of `world` takes every world-th row of each global batch, its mean loss weighted by its
share of the batch (`train_order`): step s of every process together is the global batch that a
single process sees at step s, with the same mean loss, so one process and `torchrun` train on
the same batches, and a resumed run can replay an epoch up to the batch where it stopped.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch
from torch.utils.data import DistributedSampler

from rnnkit.data.batch import Batch
from rnnkit.data.batching import BucketSampler

Collate = Callable[[list[Any]], Batch]


def check_data(data: Any, collate: Collate | None, name: str) -> None:
    """Raise a clear error when `data` cannot be batched."""
    if isinstance(data, Batch):
        return
    if not (hasattr(data, "__len__") and hasattr(data, "__getitem__")):
        raise TypeError(f"{name} must be a Batch, a Stream or an indexable collection of samples")
    if collate is None:
        raise TypeError(
            f"{name} is a {type(data).__name__}, not a Batch: pass collate=, a function that "
            "turns a list of its items into a Batch"
        )
    if len(data) == 0:
        raise ValueError(f"{name} is empty")


def take(data: Any, indices: Sequence[int], collate: Collate | None) -> Batch:
    """The mini-batch of rows `indices`: sliced from a Batch, or collated from samples."""
    if isinstance(data, Batch):
        rows = torch.as_tensor(indices, dtype=torch.int64)
        return Batch(
            inputs=_index(data.inputs, rows),
            lengths=_index(data.lengths, rows),
            targets=_index(data.targets, rows),
        )
    assert collate is not None, "check_data() rejects samples without collate"
    return collate([data[i] for i in indices])


def _index(value: Any, rows: torch.Tensor) -> Any:
    if isinstance(value, torch.Tensor):
        return value[rows.to(value.device)]
    if isinstance(value, dict):
        return {key: _index(v, rows) for key, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(value[i] for i in rows.tolist())
    return value  # None


class Share(NamedTuple):
    """One process's part of a global batch: the rows it computes the loss on, and the weight
    of its mean loss (`train_order`)."""

    rows: list[int]
    weight: float


def train_order(
    n: int,
    batch_size: int,
    seed: int,
    epoch: int,
    rank: int,
    world: int,
    lengths: Sequence[int] | None = None,
) -> list[Share]:
    """This process's parts of the mini-batches of `epoch`, shuffled by (seed, epoch).

    The global batches are those one process sees: `randperm(n)` seeded with seed + epoch in
    chunks of batch_size, or with `lengths` (one per sample) those of `rnnkit.data.BucketSampler`
    (pools of 50 batches sorted by length, the batches in a random order). Process `rank` takes
    rows rank, rank + world, ... of each, and its mean loss is weighted by world * its rows /
    the batch's rows, so that DDP's average over the processes is the mean over the global
    batch, also where the batch does not divide evenly (the last one). A process with no row
    of a global batch (fewer rows than processes) computes one of them at weight 0: DDP needs
    every process in every step. With world = 1 every weight is 1. (`fit` weights by tokens
    instead for a model whose loss is a mean over `loss_weight(batch)` of them.)
    """
    assert batch_size % world == 0, "fit() checks that batch_size divides by the world size"
    if lengths is not None:
        sampler = BucketSampler(lengths, batch_size, shuffle=True, seed=seed)
        sampler.set_epoch(epoch)
        batches = list(sampler)
    else:  # the permutation DistributedSampler draws, the same for every process
        sampler = DistributedSampler(range(n), num_replicas=1, rank=0, shuffle=True, seed=seed)
        sampler.set_epoch(epoch)
        batches = _chunks(list(sampler), batch_size)
    return [_share(batch, rank, world) for batch in batches]


def _share(batch: list[int], rank: int, world: int) -> Share:
    """Process `rank`'s rows of a global batch and the weight of its mean loss."""
    rows = batch[rank::world]
    if not rows:
        return Share(batch[:1], 0.0)
    return Share(rows, world * len(rows) / len(batch))


def eval_order(n: int, batch_size: int, rank: int, world: int) -> list[list[int]]:
    """This process's evaluation batches: rows rank, rank + world, ... in order, no padding."""
    return _chunks(list(range(rank, n, world)), max(1, batch_size // world))


def _chunks(indices: list[int], size: int) -> list[list[int]]:
    return [indices[i : i + size] for i in range(0, len(indices), size)]
