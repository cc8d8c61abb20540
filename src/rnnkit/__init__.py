"""rnnkit: recurrent neural networks on PyTorch.

The drop-in layers `RNN`, `LSTM`, `GRU` (a superset of torch.nn's), the generic time loop
`Recurrent(cell)`, and the cells that specify one time step.
"""

__version__ = "0.1.0"
