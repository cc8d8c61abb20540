"""Streaming single steps of the LSTM and GRU cells for inference (Numba, CPU).

One call computes one time step for a few sequences (real-time use: a frame arrives, a state
comes out) with the least Python overhead we can reach: the weights are held as NumPy views of
the parameters (no copy, and in-place updates of the parameters show through), one compiled
call does the two products and the gates, and the new state is returned as tensors that share
the kernel's output memory. Inference only: nothing here records gradients.

Equations as torch.nn.LSTMCell (gates i|f|g|o) and torch.nn.GRUCell (gates r|z|n):

    LSTM: (i, f, g, o) = x @ W_ih.T + b_ih + h @ W_hh.T + b_hh
          c' = sigmoid(f) * c + sigmoid(i) * tanh(g);  h' = sigmoid(o) * tanh(c')
    GRU:  as in `numba_gru` (the same `gru_gates`).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from rnnkit.kernels._numba_common import add_matvec, bias_or_zeros, jit, numpy_view, sigmoid_, tanh_
from rnnkit.kernels.numba_gru import gru_gates


@jit
def lstm_step_kernel(x, h, c, weight_ih, weight_hh, bias_ih, bias_hh):
    """One LSTM step for x (B, H_in), h and c (B, H); returns the new (h, c)."""
    batch, hidden = h.shape
    rows = np.arange(batch)
    gates = np.empty((batch, 4 * hidden), dtype=h.dtype)  # (B, 4H): i|f|g|o
    for b in range(batch):
        for j in range(4 * hidden):
            gates[b, j] = bias_ih[j] + bias_hh[j]
    add_matvec(weight_ih, x, rows, batch, gates)
    add_matvec(weight_hh, h, rows, batch, gates)
    work = np.empty(4 * hidden)  # scratch of the nonlinearities
    h_new, c_new = np.empty_like(h), np.empty_like(c)
    for b in range(batch):
        g = gates[b]
        sigmoid_(g, 0, 2 * hidden, work)  # i, f
        tanh_(g, 2 * hidden, 3 * hidden, work)  # g
        sigmoid_(g, 3 * hidden, 4 * hidden, work)  # o
        for j in range(hidden):
            c_new[b, j] = g[hidden + j] * c[b, j] + g[j] * g[2 * hidden + j]
            h_new[b, j] = c_new[b, j]
        tanh_(h_new[b], 0, hidden, work)
        for j in range(hidden):
            h_new[b, j] *= g[3 * hidden + j]
    return h_new, c_new


@jit
def gru_step_kernel(x, h, weight_ih, weight_hh, bias_ih, bias_hh):
    """One GRU step for x (B, H_in) and h (B, H); returns the new h."""
    batch, hidden = h.shape
    rows = np.arange(batch)
    x_proj = np.empty((batch, 3 * hidden), dtype=h.dtype)  # (B, 3H): r|z|n
    h_proj = np.empty((batch, 3 * hidden), dtype=h.dtype)  # (B, 3H)
    for b in range(batch):
        x_proj[b] = bias_ih
        h_proj[b] = bias_hh
    add_matvec(weight_ih, x, rows, batch, x_proj)
    add_matvec(weight_hh, h, rows, batch, h_proj)
    gates = np.empty(4 * hidden, dtype=h.dtype)  # r|z|n|h_proj_n of one sequence
    work = np.empty(4 * hidden)  # scratch of the nonlinearities
    h_new = np.empty_like(h)
    for b in range(batch):
        gru_gates(gates, x_proj[b], h_proj[b], work)
        for j in range(hidden):
            n = gates[2 * hidden + j]
            h_new[b, j] = n + gates[hidden + j] * (h[b, j] - n)
    return h_new


def _array(tensor: Tensor) -> np.ndarray:
    """A NumPy view of `tensor`, at the least cost in the usual case (contiguous, no grad)."""
    if tensor.is_contiguous() and not tensor.requires_grad:
        return tensor.numpy()
    return numpy_view(tensor)


class _CellStep:
    """Views of one cell's parameters, taken once; see `LSTMStep` and `GRUStep`."""

    gates = 0  # 4 for the LSTM, 3 for the GRU

    def __init__(
        self, weight_ih: Tensor, weight_hh: Tensor, bias_ih: Tensor | None, bias_hh: Tensor | None
    ):
        size = weight_hh.shape[0]
        if size != self.gates * weight_hh.shape[1]:
            raise ValueError(f"weight_hh must be ({self.gates}*H, H), got {tuple(weight_hh.shape)}")
        self.dtype = weight_hh.dtype
        self.pointers = _pointers(weight_ih, weight_hh, bias_ih, bias_hh)
        self.views = (
            numpy_view(weight_ih), numpy_view(weight_hh),
            numpy_view(bias_or_zeros(bias_ih, size, weight_hh)),
            numpy_view(bias_or_zeros(bias_hh, size, weight_hh)),
        )  # fmt: skip

    def uses(
        self, weight_ih: Tensor, weight_hh: Tensor, bias_ih: Tensor | None, bias_hh: Tensor | None
    ) -> bool:
        """Whether this step still reads these parameters' memory (False once a parameter has
        been replaced, e.g. by `module.to()` or `load_state_dict(assign=True)`)."""
        return self.pointers == _pointers(weight_ih, weight_hh, bias_ih, bias_hh)

    def _input(self, x: Tensor) -> np.ndarray:
        if x.dtype != self.dtype or x.device.type != "cpu":
            raise TypeError(f"x must be a CPU {self.dtype} tensor, got {x.dtype} on {x.device}")
        return _array(x)


def _pointers(*parameters: Tensor | None) -> tuple[int | None, ...]:
    return tuple(None if p is None else p.data_ptr() for p in parameters)


class LSTMStep(_CellStep):
    """Inference-only streaming steps of an LSTM cell with torch.nn.LSTMCell's parameters.

    `step = LSTMStep(cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh)`, then
    `h, c = step(x, (h, c))` per frame; x (B, H_in), h and c (B, H), CPU tensors of the
    parameters' dtype.
    """

    gates = 4

    def __call__(self, x: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        h, c = state
        h_new, c_new = lstm_step_kernel(self._input(x), _array(h), _array(c), *self.views)
        return torch.from_numpy(h_new), torch.from_numpy(c_new)


class GRUStep(_CellStep):
    """Inference-only streaming steps of a GRU cell with torch.nn.GRUCell's parameters.

    `step = GRUStep(cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh)`, then
    `h = step(x, h)` per frame; x (B, H_in), h (B, H), CPU tensors of the parameters' dtype.
    """

    gates = 3

    def __call__(self, x: Tensor, h: Tensor) -> Tensor:
        return torch.from_numpy(gru_step_kernel(self._input(x), _array(h), *self.views))
