"""Fast paths for the time loop, each proven equal to the reference loop over the cells.

- `torch_fused`: torch's own fused kernels (oneDNN LSTM on CPU, cuDNN on GPU).
- `gru_sequence`, `elman_sequence` (`numba_gru`, `numba_elman`): one direction of one GRU or
  Elman layer as a compiled whole-sequence loop with an explicit backward pass, for the CPU,
  where torch runs these cells step by step from C++ with an operator call per gate.
- `variant_sequence` (`numba_variants`, `numba_lstm`): one direction of one layer over the
  variant cells (layer norm, peepholes, projection, recurrent dropout, zoneout, weight drop),
  compiled, with the reference loop's random draws.
- `linear_scan`, `minimal_scan` (`numba_scan`): minGRU's and minLSTM's linear recurrence
  h_t = a_t h_{t-1} + b_t, compiled and sequential, for the CPU; `minimal_scan` computes their
  gates in the same pass.
- `LSTMStep`, `GRUStep` (`numba_step`), `VariantLSTMStep`, `VariantGRUStep`,
  `VariantElmanStep`, `MinimalStep` (`numba_variant_step`): streaming single steps for
  inference.
- `numba_is_faster`, `variant_numba_is_faster` (`dispatch`): where the compiled kernels beat
  torch's kernels and the reference loop, measured.

Numba is imported when a Numba kernel is first looked up here (`kernels.gru_sequence`), never
by `import rnnkit`; look the kernels up at call time, not at module import.
"""

from __future__ import annotations

import importlib

from rnnkit.kernels.dispatch import numba_is_faster, variant_kind, variant_numba_is_faster

_NUMBA_MODULES = {
    "gru_sequence": "rnnkit.kernels.numba_gru",
    "elman_sequence": "rnnkit.kernels.numba_elman",
    "variant_sequence": "rnnkit.kernels.numba_variants",
    "linear_scan": "rnnkit.kernels.numba_scan",
    "minimal_scan": "rnnkit.kernels.numba_scan",
    "LSTMStep": "rnnkit.kernels.numba_step",
    "GRUStep": "rnnkit.kernels.numba_step",
    "VariantLSTMStep": "rnnkit.kernels.numba_variant_step",
    "VariantGRUStep": "rnnkit.kernels.numba_variant_step",
    "VariantElmanStep": "rnnkit.kernels.numba_variant_step",
    "MinimalStep": "rnnkit.kernels.numba_variant_step",
}

__all__ = ["numba_is_faster", "variant_kind", "variant_numba_is_faster", *_NUMBA_MODULES]


def __getattr__(name: str):
    if name in _NUMBA_MODULES:
        return getattr(importlib.import_module(_NUMBA_MODULES[name]), name)
    raise AttributeError(f"module 'rnnkit.kernels' has no attribute {name!r}")
