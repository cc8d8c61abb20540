"""rnnkit: recurrent neural networks on PyTorch.

The drop-in layers `RNN`, `LSTM`, `GRU` (a superset of torch.nn's), the generic time loop
`Recurrent(cell)`, and the cells that specify one time step.
"""

from rnnkit.cells import ElmanCell, GRUCell, LSTMCell
from rnnkit.data.batch import Batch
from rnnkit.layers import GRU, LSTM, RNN, Recurrent, reset_state

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
    "reset_state",
]
