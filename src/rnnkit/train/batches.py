"""How `fit` and `evaluate` walk over data: slicing, collating, data order and sharding.

Training data is either one `Batch` holding the whole data set (its rows are sliced into
mini-batches) or any sized, indexable collection of samples plus a `collate` function that
turns a list of samples into a `Batch`. Streams for truncated BPTT are `rnnkit.train.tbptt.Stream`.

The order of an epoch is a function of (seed, epoch) only: `torch.utils.data.DistributedSampler`
with `shuffle=True` draws `randperm(N)` from a generator seeded with seed + epoch, and process
`rank` of `world` takes every world-th index. With a per-process batch of batch_size / world,
step s of every process together covers the global batch that a single process sees at step s
(exactly when it divides by `world`; else, as DistributedSampler pads, a few of its rows twice),
so one process and `torchrun` train on the same batches, and a resumed run can replay an epoch
up to the batch where it stopped.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.utils.data import DistributedSampler

from rnnkit.data.batch import Batch
from rnnkit.data.batching import BucketSampler, pad_cyclic

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


def train_order(
    n: int,
    batch_size: int,
    seed: int,
    epoch: int,
    rank: int,
    world: int,
    lengths: Sequence[int] | None = None,
) -> list[list[int]]:
    """This process's mini-batches (lists of row indices) for `epoch`, shuffled by (seed, epoch).

    batch_size is the global batch; each of the `world` processes takes batch_size // world rows
    of it. The last batch may be smaller; the sampler pads the epoch so that every process gets
    the same number of batches (DDP needs every process in every step).

    With `lengths` (one per sample) the global batches are those of `rnnkit.data.BucketSampler`
    (a shuffle seeded with seed + epoch, pools of 50 batches sorted by length, the batches in a
    random order) and process `rank` takes rows rank, rank + world, ... of each; a global batch
    that does not divide by `world` repeats its rows from the first (as often as needed when it
    has fewer rows than processes), so every process steps together with a non-empty batch.
    """
    assert batch_size % world == 0, "fit() checks that batch_size divides by the world size"
    if lengths is not None:
        sampler = BucketSampler(lengths, batch_size, shuffle=True, seed=seed)
        sampler.set_epoch(epoch)
        return [_share(batch, rank, world) for batch in sampler]
    sampler = DistributedSampler(range(n), num_replicas=world, rank=rank, shuffle=True, seed=seed)
    sampler.set_epoch(epoch)
    return _chunks(list(sampler), batch_size // world)


def _share(batch: list[int], rank: int, world: int) -> list[int]:
    """Process `rank`'s rows of a global batch, padded cyclically to a multiple of `world` rows
    (at least one row each, even when the batch has fewer rows than there are processes)."""
    return pad_cyclic(batch, world)[rank::world]


def eval_order(n: int, batch_size: int, rank: int, world: int) -> list[list[int]]:
    """This process's evaluation batches: rows rank, rank + world, ... in order, no padding."""
    return _chunks(list(range(rank, n, world)), max(1, batch_size // world))


def _chunks(indices: list[int], size: int) -> list[list[int]]:
    return [indices[i : i + size] for i in range(0, len(indices), size)]
