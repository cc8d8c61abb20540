"""Batching variable-length sequences: padding with lengths, collate to `Batch`, and a
length-bucketed sampler that cuts padding.

No sorting is needed anywhere: `rnnkit`'s layers take `lengths=` in any order. Bucketing only
saves compute, by putting sequences of similar length in the same batch. Contiguous
language-model batches for truncated BPTT live in `rnnkit.data.stream`; series windows in
`rnnkit.data.windows`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from functools import partial, reduce
from typing import Any

import torch
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import DataLoader, Sampler

from rnnkit.data.batch import Batch

IGNORE_INDEX = -100  # padding of per-step targets; torch's cross_entropy ignores it by default


def pad_sequences(
    sequences: Sequence[Any], padding_value: float = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad sequences of shape (T_i, ...) to one tensor (B, T, ...), T = max T_i.

    Returns the padded tensor and the lengths (B,) int64. Lists of ints become int64 tensors;
    the dtypes of the non-empty sequences are promoted together (`torch.promote_types`), so
    ints and floats in one batch give floats, never truncated ints. An empty sequence (an empty
    CTC transcript) pads to all padding, length 0; `collate` refuses empty inputs.
    """
    if len(sequences) == 0:
        raise ValueError("pad_sequences needs at least one sequence, got none")
    tensors = [torch.as_tensor(s) for s in sequences]
    bad = [i for i, t in enumerate(tensors) if t.dim() == 0]
    if bad:
        raise ValueError(f"sequences must have a time dimension; items {bad[:5]} are scalars")
    filled = [t for t in tensors if t.shape[0]] or tensors  # `[]` says nothing of a dtype
    dtype = reduce(torch.promote_types, (t.dtype for t in filled))
    tensors = [t.to(dtype) for t in tensors]  # pad_sequence copies into the first one's dtype
    lengths = torch.tensor([t.shape[0] for t in tensors], dtype=torch.int64)  # (B,)
    padded = pad_sequence(tensors, batch_first=True, padding_value=padding_value)  # (B, T, ...)
    return padded, lengths


def _collate_targets(targets: list[Any], padding_value: float) -> Any:
    if all(t is None for t in targets):
        return None
    tensors = [torch.as_tensor(t) for t in targets]
    if all(t.dim() == 0 for t in tensors):
        return torch.stack(tensors)  # (B,)
    padded, _ = pad_sequences(tensors, padding_value)  # (B, T_target, ...)
    return padded


def collate(
    samples: Sequence[tuple[Any, Any]],
    padding_value: float = 0,
    target_padding_value: float = IGNORE_INDEX,
) -> Batch:
    """A `Batch` from `(input, target)` samples.

    inputs:  (B, T, ...) padded with `padding_value` (token ids: 0, the `<pad>` id);
    lengths: (B,) the true input lengths;
    targets: (B,) when every target is a scalar (a class), else (B, T_target, ...) padded with
             `target_padding_value` (-100, which `cross_entropy` ignores): tags, target sentences.
    """
    if len(samples) == 0:
        raise ValueError("collate needs at least one sample, got an empty list")
    inputs, lengths = pad_sequences([sample[0] for sample in samples], padding_value)
    if not bool(lengths.all()):
        raise ValueError(
            f"sample {int((lengths == 0).nonzero()[0])} of the batch has an empty input "
            "(length 0); every sequence needs at least one step (rnnkit's layers reject "
            "length 0): drop empty samples first"
        )
    targets = _collate_targets([sample[1] for sample in samples], target_padding_value)
    return Batch(inputs=inputs, lengths=lengths, targets=targets)


def pad_cyclic(items: list[Any], world: int) -> list[Any]:
    """`items` repeated from the start, as often as needed, to a multiple of `world` items.

    Then `padded[rank::world]` gives every rank the same number of items, at least one, even
    when there are fewer items than ranks: [a, b] for 4 ranks is [a, b, a, b]. An empty list
    stays empty (`drop_last` may drop the only batch).
    """
    if not items:
        return []
    count = math.ceil(len(items) / world) * world
    return [items[i % len(items)] for i in range(count)]


def count_padding(lengths: Sequence[int], batches: Sequence[Sequence[int]]) -> int:
    """The number of padding steps in `batches` (lists of indices into `lengths`)."""
    total = 0
    for batch in batches:
        batch_lengths = [int(lengths[i]) for i in batch]
        total += max(batch_lengths) * len(batch_lengths) - sum(batch_lengths)
    return total


class BucketSampler(Sampler[list[int]]):
    """Yields batches of indices whose sequences have similar lengths (a `batch_sampler`).

    Each epoch shuffles all indices, cuts them into pools of `batch_size * pool_batches`,
    sorts each pool by length, cuts the pools into batches, and shuffles the batch order.
    Every index appears exactly once per epoch (the last batch may be smaller unless
    `drop_last`). Each `iter()` starts the next epoch; `set_epoch` picks one, e.g. to resume.

    Distributed training: give each process its `rank` of `world_size`. All processes draw the
    same batches and each takes every `world_size`-th one; when the batches do not divide
    evenly, they are repeated from the first (`pad_cyclic`) so every process gets as many (as
    torch's DistributedSampler does with samples), at least one when there is any batch.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        pool_batches: int = 50,
        drop_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
    ):
        if not 0 <= rank < world_size:
            raise ValueError(
                f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}"
            )
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if pool_batches < 1:
            raise ValueError(f"pool_batches must be >= 1, got {pool_batches}")
        if len(lengths) == 0:
            raise ValueError("BucketSampler needs at least one sequence length, got none")
        self.lengths = [int(n) for n in lengths]  # length of each sample
        self.batch_size = batch_size
        self.shuffle = shuffle  # False: pools in index order and batches in pool order
        self.seed = seed
        self.pool_batches = pool_batches  # batches per sorted pool: larger cuts more padding
        self.drop_last = drop_last  # drop the one batch smaller than batch_size
        self.rank, self.world_size = rank, world_size  # this process and how many there are
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Make the next `iter()` produce the order of `epoch`."""
        self.epoch = epoch

    def __len__(self) -> int:
        rounding = math.floor if self.drop_last else math.ceil
        return math.ceil(rounding(len(self.lengths) / self.batch_size) / self.world_size)

    def __iter__(self) -> Iterator[list[int]]:
        batches = pad_cyclic(self._all_batches(), self.world_size)  # the same count on every rank
        return iter(batches[self.rank :: self.world_size])

    def _all_batches(self) -> list[list[int]]:
        """This epoch's batches over all processes."""
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        self.epoch += 1
        count = len(self.lengths)
        order = (
            torch.randperm(count, generator=generator).tolist() if self.shuffle else range(count)
        )
        order = list(order)
        pool_size = self.batch_size * self.pool_batches
        batches = []
        for start in range(0, count, pool_size):
            pool = sorted(order[start : start + pool_size], key=self.lengths.__getitem__)
            batches += [pool[i : i + self.batch_size] for i in range(0, len(pool), self.batch_size)]
        if self.drop_last and len(batches[-1]) < self.batch_size:
            batches.pop()
        if self.shuffle:
            batches = [batches[i] for i in torch.randperm(len(batches), generator=generator)]
        return batches


def batch_loader(
    samples: Sequence[tuple[Any, Any]],
    batch_size: int,
    bucket: bool = True,
    shuffle: bool = True,
    seed: int = 0,
    padding_value: float = 0,
) -> DataLoader:
    """A `DataLoader` of `Batch`es over `(input, target)` samples; `bucket=True` groups similar
    lengths with `BucketSampler`, `bucket=False` draws plain (shuffled) batches."""
    collate_fn = partial(collate, padding_value=padding_value)
    if bucket:
        lengths = [len(sample[0]) for sample in samples]
        sampler = BucketSampler(lengths, batch_size, shuffle=shuffle, seed=seed)
        return DataLoader(samples, batch_sampler=sampler, collate_fn=collate_fn)
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        samples, batch_size=batch_size, shuffle=shuffle, generator=generator, collate_fn=collate_fn
    )
