"""One seed for everything: seeding and saving/restoring the torch, numpy and Python RNGs.

`seed_everything(seed)` seeds all three generators (and CUDA's). `get_rng_state()` returns their
states as nested tensors and JSON values that `rnnkit.train.checkpoint` can store without
pickling, and `set_rng_state` puts them back, so a resumed run draws the same dropout masks as an
uninterrupted one. The data order does not depend on these generators: it is a function of
(seed, epoch), see `rnnkit.train.data`.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed Python's `random`, numpy's global generator and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 (user code may draw from the global generator)
    torch.manual_seed(seed)  # also seeds every CUDA device


def get_rng_state() -> dict[str, Any]:
    """The states of all generators: tensors for torch, JSON values for numpy and Python."""
    kind, keys, pos, has_gauss, cached_gaussian = np.random.get_state()  # noqa: NPY002
    version, internal, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached_gaussian)],
        "python": [version, list(internal), gauss_next],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the generators from `get_rng_state()`'s value (after a checkpoint round trip)."""
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, cached_gaussian = state["numpy"]
    keys = np.array(keys, dtype=np.uint32)
    np.random.set_state((kind, keys, pos, has_gauss, cached_gaussian))  # noqa: NPY002
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(state["cuda"]))
