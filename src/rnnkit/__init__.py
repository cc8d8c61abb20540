"""rnnkit: recurrent neural networks on PyTorch.

The drop-in layers `RNN`, `LSTM`, `GRU` (a superset of torch.nn's), the generic time loop
`Recurrent(cell)`, and the cells that specify one time step.
"""

from rnnkit.cells import ElmanCell, GRUCell, LSTMCell
from rnnkit.data import datasets
from rnnkit.data.batch import Batch
from rnnkit.layers import GRU, LSTM, RNN, Recurrent, reset_state
from rnnkit.memory import keep_freed_memory

__version__ = "0.1.0"

__all__ = [
    "GRU",
    "LSTM",
    "RNN",
    "Batch",
    "ElmanCell",
    "GRUCell",
    "LSTMCell",
    "Recurrent",
    "datasets",
    "keep_freed_memory",
    "reset_state",
]

# Cell variants (layer norm, peepholes, recurrent dropout, zoneout, weight drop, projection)
# and the minimal recurrences minGRU / minLSTM with their parallel scan.
from rnnkit.minimal import MinGRU, MinGRUCell, MinLSTM, MinLSTMCell  # noqa: E402
from rnnkit.variants import (  # noqa: E402
    Variant,
    VariantElmanCell,
    VariantGRUCell,
    VariantLSTMCell,
)

__all__ += [
    "MinGRU",
    "MinGRUCell",
    "MinLSTM",
    "MinLSTMCell",
    "Variant",
    "VariantElmanCell",
    "VariantGRUCell",
    "VariantLSTMCell",
]

# Loading a trained run; the task framework is imported on first use, keeping `import rnnkit` fast.
import os as _os  # noqa: E402

from torch import nn as _nn  # noqa: E402


def load(run_dir: str | _os.PathLike) -> _nn.Module:
    """The trained model of a run directory (what `rnnkit train` writes), in eval mode on the
    CPU. The model class comes from `rnnkit.models` only; nothing is unpickled."""
    from rnnkit.tasks.base import load as load_run_model

    return load_run_model(run_dir)


__all__ += ["load"]
