"""Initialisers for recurrent cells, chosen by name with the `init=` constructor argument.

- ``"torch"``: torch.nn's default, every parameter ~ U(-1/sqrt(H), 1/sqrt(H)).
- ``"orthogonal"``: Xavier-uniform input weights and orthogonal recurrent weights, each per gate
  block (Saxe et al. 2014), zero biases; the usual choice for long sequences.

`forget_bias` (LSTM only) then sets the forget-gate bias (Gers et al. 2000; Jozefowicz et al.
2015 recommend 1.0): the forget slice of `bias_ih` gets the value and that of `bias_hh` zero, so
their sum, which is what the cell sees, equals `forget_bias`.
"""

from __future__ import annotations

import math

import torch
from torch import nn

SCHEMES = ("torch", "orthogonal")


def check_scheme(init: str) -> None:
    """Raise a ValueError naming the known schemes if `init` is not one of them."""
    if init not in SCHEMES:
        raise ValueError(f"init must be one of {SCHEMES}, got {init!r}")


def _per_gate(weight: torch.Tensor, gates: int, fn) -> None:
    for block in weight.chunk(gates, dim=0):
        fn(block)


@torch.no_grad()
def init_cell(cell: nn.Module, scheme: str = "torch", forget_bias: float | None = None) -> None:
    """Initialise a cell's `weight_ih`, `weight_hh`, biases and `weight_hr` in place.

    The cell needs `hidden_size` and `gates` (the number of H-row blocks: 1 Elman, 3 GRU,
    4 LSTM); other parameters it has are left to the cell.
    """
    check_scheme(scheme)
    hidden, gates = cell.hidden_size, cell.gates
    weight_hr = getattr(cell, "weight_hr", None)
    if scheme == "torch":
        bound = 1.0 / math.sqrt(hidden)
        for weight in (cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh, weight_hr):
            if weight is not None:
                nn.init.uniform_(weight, -bound, bound)
    else:
        _per_gate(cell.weight_ih, gates, nn.init.xavier_uniform_)
        _per_gate(cell.weight_hh, gates, nn.init.orthogonal_)
        for bias in (cell.bias_ih, cell.bias_hh):
            if bias is not None:
                nn.init.zeros_(bias)
        if weight_hr is not None:
            nn.init.xavier_uniform_(weight_hr)
    if forget_bias is not None:
        set_forget_bias(cell, forget_bias)


@torch.no_grad()
def set_forget_bias(cell: nn.Module, value: float) -> None:
    """Set the LSTM forget-gate bias (gate order i|f|g|o) so that b_if + b_hf = value."""
    if getattr(cell, "gates", None) != 4:
        raise ValueError("forget_bias applies to LSTM cells only (gate order i|f|g|o)")
    if cell.bias_ih is None:
        raise ValueError("forget_bias needs bias=True: the cell has no bias to set")
    hidden = cell.hidden_size
    cell.bias_ih[hidden : 2 * hidden] = value
    cell.bias_hh[hidden : 2 * hidden] = 0.0
