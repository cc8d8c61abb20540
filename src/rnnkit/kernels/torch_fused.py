"""torch's own fused kernels for the whole stack: oneDNN LSTM on CPU, cuDNN on GPU.

The same entry points torch.nn.RNN/LSTM/GRU call (`torch._VF.lstm`, `gru`, `rnn_tanh`,
`rnn_relu`), fed with the cells' parameters in torch.nn's flat order. Variable lengths go through
torch's packed path, so outputs past each length are zero and final states are taken at each
sequence's true end. Tests prove this route equal to the reference loop over the cells.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import _VF, Tensor
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

MODES = {"LSTM": _VF.lstm, "GRU": _VF.gru, "RNN_TANH": _VF.rnn_tanh, "RNN_RELU": _VF.rnn_relu}


FLAT_NAMES = ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr")
CELL_KERNELS = {
    "LSTM": _VF.lstm_cell,
    "GRU": _VF.gru_cell,
    "RNN_TANH": _VF.rnn_tanh_cell,
    "RNN_RELU": _VF.rnn_relu_cell,
}


def cell_step(mode: str, cell: torch.nn.Module, x: Tensor, state):
    """One step of a cell in torch.nn's layout (LSTM without projection, GRU, Elman) through
    the kernel of torch.nn.LSTMCell / GRUCell / RNNCell: x (B, H_in), state (B, H) or (h, c)."""
    p = cell._parameters
    weights = (p["weight_ih"], p["weight_hh"], p["bias_ih"], p["bias_hh"])
    return CELL_KERNELS[mode](x, state, *weights)


def flat_weights(cells: Iterable[torch.nn.Module]) -> list[Tensor]:
    """Parameters in torch.nn's `_flat_weights` order: per layer and direction
    w_ih, w_hh, b_ih, b_hh, w_hr (the absent ones left out)."""
    weights = []
    for cell in cells:
        parameters = cell._parameters  # without nn.Module's attribute lookup, 0.3 us a name
        for name in FLAT_NAMES:
            if name in parameters:
                w = parameters[name]
            elif name in cell.__dict__ or hasattr(type(cell), name):  # plain or parametrized
                w = getattr(cell, name)
            else:  # not nn.Module's failing lookup, which costs 1 us
                continue
            if w is not None:
                weights.append(w)
    return weights


class CellStates(Sequence):
    """One state per cell (layer and direction), as views of a state in torch.nn's stacked
    layout (D*L, B, ...) taken when asked; `stacked` is that state, for torch's kernels."""

    def __init__(self, stacked: Tensor | tuple[Tensor, Tensor]):
        self.stacked = stacked

    def __len__(self) -> int:
        return len(self.stacked[0] if isinstance(self.stacked, tuple) else self.stacked)

    def __getitem__(self, k):
        if isinstance(self.stacked, tuple):
            return tuple(part[k] for part in self.stacked)
        return self.stacked[k]


def cell_states(
    hx: object, lstm: bool, shape: tuple[int, int, int], hidden: int, like: Tensor
) -> CellStates | None:
    """The cells' states from hx in torch.nn's layout, when hx is None (zeros) or already what
    the fused kernels take: a tensor (a tuple (h, c) for the LSTM) with h of `shape`
    (D*L, B, H_out), c (D*L, B, hidden), of like's dtype and device. None for anything else,
    so that the caller's full checks say what is wrong."""
    cells, batch, _ = shape
    if hx is None:
        h = like.new_zeros(shape)
        return CellStates((h, like.new_zeros(cells, batch, hidden)) if lstm else h)
    if isinstance(hx, tuple) != lstm:  # the LSTM's (h, c), else one tensor
        return None
    parts = hx if lstm else (hx,)
    if len(parts) != 1 + lstm:
        return None
    for part, want in zip(parts, (shape, (cells, batch, hidden)), strict=False):
        if not isinstance(part, Tensor) or part.shape != want:
            return None
        if part.dtype != like.dtype or part.device != like.device:
            return None
    return CellStates(hx)


def fused_forward(
    mode: str,
    x: Tensor,
    hx: Tensor | tuple[Tensor, Tensor],
    weights: list[Tensor],
    *,
    bias: bool,
    num_layers: int,
    dropout: float,
    training: bool,
    bidirectional: bool,
    lengths: Tensor | None,
) -> tuple[Tensor, Tensor | tuple[Tensor, Tensor]]:
    """Run the stack over x (T, B, H_in) from hx (stacked (D*L, B, H)); returns
    (output (T, B, D*H_out), final state in the layout of hx).

    Under `torch.compile` this runs eagerly, a graph break, as torch.nn's RNN modules do
    (Dynamo does not trace them unless `torch._dynamo.config.allow_rnn`; traced, torch's fused
    RNN kernel fails in AOT autograd)."""
    arguments = (mode, x, hx, weights, bias, num_layers, dropout, training, bidirectional, lengths)
    if torch.compiler.is_compiling() and not torch._dynamo.config.allow_rnn:
        return _eager_fused_forward(*arguments)
    return _fused_forward(*arguments)


def _fused_forward(
    mode, x, hx, weights, bias, num_layers, dropout, training, bidirectional, lengths
):
    kernel = MODES[mode]
    hx_list = list(hx) if isinstance(hx, tuple) else hx
    if not training and x.is_cuda and _wants_grad(x, hx, weights):
        # cuDNN differentiates only what it ran in training mode (torch.nn raises "cudnn RNN
        # backward can only be called in training mode"); with no dropout that is the same
        # function, so an eval-mode layer still gives gradients (saliency, adversarial inputs).
        training, dropout = True, 0.0
    if lengths is None:
        result = kernel(
            x, hx_list, weights, bias, num_layers, dropout, training, bidirectional, False
        )
        return result[0], _state(result[1:])
    packed = pack_padded_sequence(x, lengths.cpu(), enforce_sorted=False)
    order, restore = packed.sorted_indices, packed.unsorted_indices
    hx_sorted = (
        [h.index_select(1, order) for h in hx_list]
        if isinstance(hx_list, list)
        else hx_list.index_select(1, order)
    )
    result = kernel(
        packed.data,
        packed.batch_sizes,
        hx_sorted,
        weights,
        bias,
        num_layers,
        dropout,
        training,
        bidirectional,
    )
    out_packed = PackedSequence(result[0], packed.batch_sizes, order, restore)
    output, _ = pad_packed_sequence(out_packed, total_length=x.shape[0])
    finals = tuple(h.index_select(1, restore) for h in result[1:])
    return output, _state(finals)


_eager_fused_forward = torch.compiler.disable(_fused_forward)


def _wants_grad(x: Tensor, hx: Tensor | tuple[Tensor, Tensor], weights: list[Tensor]) -> bool:
    if not torch.is_grad_enabled():
        return False
    parts = hx if isinstance(hx, tuple) else (hx,)
    return any(t.requires_grad for t in (x, *parts, *weights))


def _state(parts: tuple[Tensor, ...]) -> Tensor | tuple[Tensor, Tensor]:
    return parts[0] if len(parts) == 1 else tuple(parts)
