"""The `Batch` that every task model receives: inputs, lengths and targets.

The training loop (`rnnkit.train`) knows task models only through `model.loss(batch)` and
`model.predict(batch)`; this module defines what `batch` is. Collate functions that build
batches from samples live in `rnnkit.data.batching`, not here.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import torch


def _move(value: Any, device: torch.device | str, non_blocking: bool) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(device, non_blocking=non_blocking)
    if isinstance(value, dict):
        return {k: _move(v, device, non_blocking) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_move(v, device, non_blocking) for v in value)
    return value


@dataclass
class Batch:
    """A mini-batch of B sequences.

    inputs:  (B, T, ...) padded tensor, or a dict of such tensors (e.g. tokens and covariates)
    lengths: (B,) int64, the true length of each sequence; None when all have length T
    targets: whatever the task's loss compares with (labels (B,), tags (B, T), values (B, H), ...)
    """

    inputs: Any
    lengths: torch.Tensor | None = None
    targets: Any = None

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        """A copy of the batch with every tensor moved to `device`."""
        return Batch(
            **{f.name: _move(getattr(self, f.name), device, non_blocking) for f in fields(self)}
        )

    def __len__(self) -> int:
        """The number of sequences B."""
        first = self.inputs
        while isinstance(first, (dict, list, tuple)):
            first = next(iter(first.values())) if isinstance(first, dict) else first[0]
        return int(first.shape[0])
