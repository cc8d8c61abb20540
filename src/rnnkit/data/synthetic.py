"""Synthetic sequence problems generated on the fly: the adding problem.

Hochreiter and Schmidhuber's adding problem (1997): each input step carries a random value in
[0, 1) and a marker; exactly two steps are marked (one in each half of the sequence) and the
target is the sum of their two values. Predicting the mean (1.0) gives an MSE of 1/6, so a
model that beats 1/6 by far has learned to carry information across the sequence.
"""

from __future__ import annotations

import torch

from rnnkit.data.batch import Batch

ADDING_BASELINE_MSE = 1.0 / 6.0  # MSE of always predicting the mean sum, 1.0


def adding_problem(num_samples: int, seq_len: int, seed: int = 0) -> Batch:
    """`num_samples` adding-problem sequences of length `seq_len` as one `Batch`.

    inputs: (N, T, 2), channel 0 the values, channel 1 the two markers; targets: (N,).
    """
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    if seq_len < 2:
        raise ValueError(f"seq_len must be >= 2 (two marked steps), got {seq_len}")
    generator = torch.Generator().manual_seed(seed)
    values = torch.rand(num_samples, seq_len, generator=generator)
    half = seq_len // 2
    first = torch.randint(0, half, (num_samples,), generator=generator)
    second = torch.randint(half, seq_len, (num_samples,), generator=generator)
    markers = torch.zeros(num_samples, seq_len)
    rows = torch.arange(num_samples)
    markers[rows, first] = 1.0
    markers[rows, second] = 1.0
    inputs = torch.stack([values, markers], dim=-1)  # (N, T, 2)
    targets = values[rows, first] + values[rows, second]  # (N,)
    lengths = torch.full((num_samples,), seq_len, dtype=torch.int64)
    return Batch(inputs=inputs, lengths=lengths, targets=targets)
