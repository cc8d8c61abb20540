"""Streaming single steps of the variant and minimal cells for inference (Numba, CPU).

`rnnkit.variants.VariantLSTMCell`, `VariantGRUCell` and `VariantElmanCell` (tanh or relu) in
eval mode, one step: layer norm,
peepholes, projection and zoneout (in eval the convex mix with its rate; recurrent dropout and
weight drop are off in eval), as one compiled call instead of a dozen torch operators. The
equations are the cells' (LN per gate group with gain and shift; a^x = LN_x(W_ih x) + b_ih,
a^h = LN_h(W_hh s) + b_hh with s the recurrent input, h or its projection):

    LSTM (i|f|g|o, a = a^x + a^h):
          i, f  = sigmoid(a_i + w_ci * c), sigmoid(a_f + w_cf * c);  g = tanh(a_g)
          c_hat = f * c + i * g;  o = sigmoid(a_o + w_co * c_hat)
          h_hat = W_hr (o * tanh(LN_c(c_hat)))
          c' = (1 - p_c) * c_hat + p_c * c;  h' = (1 - p_h) * h_hat + p_h * h
    GRU (r|z|n):
          r, z = sigmoid(a^x_r + a^h_r), sigmoid(a^x_z + a^h_z);  n = tanh(a^x_n + r * a^h_n)
          h' = (1 - p_h) * ((1 - z) * n + z * h) + p_h * h;  s' = W_hr h'
    Elman: h' = (1 - p_h) * W_hr f((W_ih x + b_ih) + (W_hh h + b_hh)) + p_h * h
    minGRU, minLSTM (`rnnkit.minimal`): h' = a * h + b from W_ih x + b_ih (`numba_scan`)

As `numba_step`, the parameters are read through NumPy views of their own memory (in-place
updates show through), and every step returns new memory.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from rnnkit.kernels._numba_common import (
    add_matvec1,
    copy_,
    copy_rows,
    jit,
    jit_inline,
    numpy_view,
    offset,
    sigmoid_,
    tanh_,
)
from rnnkit.kernels._step_partner import after_step, partner_control
from rnnkit.kernels.numba_lstm import group_moments
from rnnkit.kernels.numba_scan import _coefficients
from rnnkit.kernels.numba_step import (
    layer_input,
    products,
    step_input,
    step_parts,
    step_state,
)


@jit_inline
def _layer_norm_(v, groups, gain, shift, eps, moments):
    """v = LN(v) * gain + shift in place, per group of v (G*H,) (`group_moments`' float64
    moments); moments: scratch (2, groups)."""
    group_moments(v, groups, moments[0], 0, moments[1], 0, eps)
    size = len(v) // groups
    for k in range(groups):
        start = k * size
        mean, rstd = v.dtype.type(moments[0, k]), v.dtype.type(moments[1, k])
        for j in range(size):
            u = offset(start, j)
            v[u] = shift[u] + (v[u] - mean) * rstd * gain[u]


@jit_inline
def zoneout_mix(new, previous, rate, out):
    """out = (1 - rate) * new + rate * previous (zoneout in eval), in the arrays' dtype (a
    Python float and an int literal would make float32 arithmetic float64); out = new at rate
    0. out may be new."""
    if rate == 0:
        for j in range(len(out)):
            out[j] = new[j]
        return
    rate_ = out.dtype.type(rate)
    keep = out.dtype.type(1) - rate_
    for j in range(len(out)):
        out[j] = keep * new[j] + rate_ * previous[j]


@jit_inline
def variant_lstm_cell_into(
    x, h, c, weight_ih, weight_hh, bias_ih, bias_hh, ln_ih_gain, ln_ih_shift, ln_hh_gain,
    ln_hh_shift, weight_ci, weight_cf, weight_co, ln_c_gain, ln_c_shift, weight_hr, zone_h,
    zone_c, eps, h_out, c_out, backward, control,
):  # fmt: skip
    """One step for x (B, H_in), h (B, P), c (B, H) into h_out (B, P), c_out (B, H). An option
    that is off arrives as an empty array (a bias as zeros); zone_h, zone_c are the rates;
    `control` and the result as `numba_step.lstm_cell_into`'s."""
    batch, hidden = c.shape
    layer_norm, peep, proj = ln_ih_gain.shape[0] > 0, weight_ci.shape[0] > 0, weight_hr.shape[0] > 0
    x_part = np.zeros((batch, 4 * hidden), dtype=c.dtype)
    h_part = np.zeros((batch, 4 * hidden), dtype=c.dtype)
    flags = products(weight_ih, x, weight_hh, h, x_part, h_part, backward, control)
    gates = np.empty(4 * hidden, dtype=c.dtype)
    c_hat = np.empty(hidden, dtype=c.dtype)
    y = np.empty(hidden, dtype=c.dtype)  # tanh(LN_c(c_hat)), then o * that
    h_hat = np.zeros(h.shape[1], dtype=c.dtype)
    moments = np.empty((2, 4))
    for b in range(batch):
        xp, hp, c_row = x_part[b], h_part[b], c[b]
        if layer_norm:
            _layer_norm_(xp, 4, ln_ih_gain, ln_ih_shift, eps, moments)
            _layer_norm_(hp, 4, ln_hh_gain, ln_hh_shift, eps, moments)
        for j in range(4 * hidden):
            gates[j] = (xp[j] + bias_ih[j]) + (hp[j] + bias_hh[j])
        if peep:
            for j in range(hidden):
                gates[j] += weight_ci[j] * c_row[j]
                gates[hidden + j] += weight_cf[j] * c_row[j]
        sigmoid_(gates, 0, 2 * hidden)  # i, f
        tanh_(gates, 2 * hidden, 3 * hidden)  # g
        f, g = gates[hidden:], gates[2 * hidden :]
        for j in range(hidden):
            c_hat[j] = f[j] * c_row[j] + gates[j] * g[j]
        o = gates[3 * hidden :]
        if peep:
            for j in range(hidden):
                o[j] += weight_co[j] * c_hat[j]
        sigmoid_(gates, 3 * hidden, 4 * hidden)  # o
        for j in range(hidden):
            y[j] = c_hat[j]
        if layer_norm:
            _layer_norm_(y, 1, ln_c_gain, ln_c_shift, eps, moments)
        tanh_(y, 0, hidden)
        for j in range(hidden):
            y[j] = o[j] * y[j]
        if proj:
            h_hat[:] = 0
            add_matvec1(weight_hr, y, h_hat, backward)
        else:
            for j in range(hidden):
                h_hat[j] = y[j]
        c_new, h_new, h_row = c_out[b], h_out[b], h[b]
        zoneout_mix(c_hat, c_row, zone_c, c_new)
        zoneout_mix(h_hat, h_row, zone_h, h_new)
    return flags


@jit
def variant_lstm_layer_step(
    x_address, h, c, layer, weight_ih, weight_hh, bias_ih, bias_hh, ln_ih_gain, ln_ih_shift,
    ln_hh_gain, ln_hh_shift, weight_ci, weight_cf, weight_co, ln_c_gain, ln_c_shift, weight_hr,
    zone_h, zone_c, eps, h_out, c_out, out, backward, control,
):  # fmt: skip
    """Layer `layer` of a stack, states h, h_out (L, B, P) and c, c_out (L, B, H) in torch.nn's
    layout; the top layer's new h is copied to out (B, P) too (`numba_step.lstm_layer_step`)."""
    x = layer_input(x_address, h_out, layer, weight_ih)
    flags = variant_lstm_cell_into(
        x, h[layer], c[layer], weight_ih, weight_hh, bias_ih, bias_hh, ln_ih_gain, ln_ih_shift,
        ln_hh_gain, ln_hh_shift, weight_ci, weight_cf, weight_co, ln_c_gain, ln_c_shift,
        weight_hr, zone_h, zone_c, eps, h_out[layer], c_out[layer], backward, control,
    )  # fmt: skip
    if layer == h.shape[0] - 1:
        copy_rows(h_out[layer], out, out.shape[0])
    return flags


@jit_inline
def variant_gru_cell_into(
    x, s, h, weight_ih, weight_hh, bias_ih, bias_hh, ln_ih_gain, ln_ih_shift, ln_hh_gain,
    ln_hh_shift, weight_hr, zone_h, eps, s_out, h_out, backward, control,
):  # fmt: skip
    """One `VariantGRUCell` step for x (B, H_in), the recurrent input s (B, P) (h itself
    without a projection) and h (B, H) into h_out (B, H) and, with a projection (weight_hr
    (P, H) not empty), s_out = W_hr h_out (B, P); zone_h the zoneout rate."""
    batch, hidden = h.shape
    layer_norm, proj = ln_ih_gain.shape[0] > 0, weight_hr.shape[0] > 0
    x_part = np.zeros((batch, 3 * hidden), dtype=h.dtype)
    h_part = np.zeros((batch, 3 * hidden), dtype=h.dtype)
    flags = products(weight_ih, x, weight_hh, s, x_part, h_part, backward, control)
    gates = np.empty(3 * hidden, dtype=h.dtype)  # r|z, then n
    moments = np.empty((2, 3))
    for b in range(batch):
        xp, hp, h_row, h_new = x_part[b], h_part[b], h[b], h_out[b]
        if layer_norm:
            _layer_norm_(xp, 3, ln_ih_gain, ln_ih_shift, eps, moments)
            _layer_norm_(hp, 3, ln_hh_gain, ln_hh_shift, eps, moments)
        for j in range(3 * hidden):
            xp[j] += bias_ih[j]
            hp[j] += bias_hh[j]
        for j in range(2 * hidden):
            gates[j] = xp[j] + hp[j]
        sigmoid_(gates, 0, 2 * hidden)  # r, z
        x_n, h_n, n = xp[2 * hidden :], hp[2 * hidden :], gates[2 * hidden :]
        for j in range(hidden):
            n[j] = x_n[j] + gates[j] * h_n[j]
        tanh_(gates, 2 * hidden, 3 * hidden)  # n
        z = gates[hidden:]
        one = h_row.dtype.type(1)  # an int literal would make float32 arithmetic float64
        for j in range(hidden):
            n[j] = (one - z[j]) * n[j] + z[j] * h_row[j]
        zoneout_mix(n, h_row, zone_h, h_new)  # h_new may be h_row (`StackStep.update_`)
        if proj:
            s_new = s_out[b]
            s_new[:] = 0
            add_matvec1(weight_hr, h_new, s_new, backward)
    return flags


@jit
def variant_gru_layer_step(
    x_address, h, layer, weight_ih, weight_hh, bias_ih, bias_hh, ln_ih_gain, ln_ih_shift,
    ln_hh_gain, ln_hh_shift, weight_hr, zone_h, eps, h_out, out, backward, control,
):  # fmt: skip
    """Layer `layer` of a stack without a projection, h and h_out (L, B, H): the projected
    step with h as its own recurrent input s."""
    return variant_gru_proj_layer_step(
        x_address, h, h, layer, weight_ih, weight_hh, bias_ih, bias_hh, ln_ih_gain, ln_ih_shift,
        ln_hh_gain, ln_hh_shift, weight_hr, zone_h, eps, h_out, h_out, out, backward, control,
    )  # fmt: skip


@jit
def variant_gru_proj_layer_step(
    x_address, s, h, layer, weight_ih, weight_hh, bias_ih, bias_hh, ln_ih_gain, ln_ih_shift,
    ln_hh_gain, ln_hh_shift, weight_hr, zone_h, eps, s_out, h_out, out, backward, control,
):  # fmt: skip
    """Layer `layer` of a stack with a projection: s, s_out (L, B, P), h, h_out (L, B, H)."""
    x = layer_input(x_address, s_out, layer, weight_ih)
    flags = variant_gru_cell_into(
        x, s[layer], h[layer], weight_ih, weight_hh, bias_ih, bias_hh, ln_ih_gain, ln_ih_shift,
        ln_hh_gain, ln_hh_shift, weight_hr, zone_h, eps, s_out[layer], h_out[layer], backward,
        control,
    )  # fmt: skip
    if layer == s.shape[0] - 1:
        copy_rows(s_out[layer], out, out.shape[0])
    return flags


@jit_inline
def variant_elman_cell_into(
    x, h, weight_ih, weight_hh, bias_ih, bias_hh, weight_hr, relu, zone_h, h_out, backward,
    control,
):  # fmt: skip
    """One `VariantElmanCell` step (tanh or relu) for x (B, H_in), h (B, P) into h_out (B, P):
    h' = (1 - p_h) * W_hr f((W_ih x + b_ih) + (W_hh h + b_hh)) + p_h * h."""
    batch, hidden = h.shape[0], weight_hh.shape[0]
    proj = weight_hr.shape[0] > 0
    x_part = np.zeros((batch, hidden), dtype=h.dtype)
    h_part = np.zeros((batch, hidden), dtype=h.dtype)
    flags = products(weight_ih, x, weight_hh, h, x_part, h_part, backward, control)
    pre = np.empty(hidden, dtype=h.dtype)
    h_hat = np.zeros(h.shape[1], dtype=h.dtype)
    for b in range(batch):
        xp, hp, h_row, h_new = x_part[b], h_part[b], h[b], h_out[b]
        for j in range(hidden):
            pre[j] = (xp[j] + bias_ih[j]) + (hp[j] + bias_hh[j])
        if relu:
            for j in range(hidden):
                pre[j] = max(pre[j], pre.dtype.type(0))
        else:
            tanh_(pre, 0, hidden)
        if proj:
            h_hat[:] = 0
            add_matvec1(weight_hr, pre, h_hat, backward)
        else:
            for j in range(hidden):
                h_hat[j] = pre[j]
        zoneout_mix(h_hat, h_row, zone_h, h_new)
    return flags


@jit
def variant_elman_layer_step(
    x_address, h, layer, weight_ih, weight_hh, bias_ih, bias_hh, weight_hr, relu, zone_h, h_out,
    out, backward, control,
):  # fmt: skip
    """Layer `layer` of a stack, h and h_out (L, B, P)."""
    x = layer_input(x_address, h_out, layer, weight_ih)
    flags = variant_elman_cell_into(
        x, h[layer], weight_ih, weight_hh, bias_ih, bias_hh, weight_hr, relu, zone_h, h_out[layer],
        backward, control,
    )  # fmt: skip
    if layer == h.shape[0] - 1:
        copy_rows(h_out[layer], out, out.shape[0])
    return flags


@jit_inline
def minimal_cell_into(x, h, weight_ih, bias_ih, lstm, h_out, backward):
    """One minGRU (`lstm` False) or minLSTM step for x (B, H_in), h (B, H) into h_out (B, H),
    from p = W_ih x + b_ih as `numba_scan.minimal_scan` computes each step."""
    batch, hidden = h.shape
    width = weight_ih.shape[0]
    p = np.empty(width, dtype=h.dtype)
    s = np.empty(width, dtype=h.dtype)
    a = np.empty(hidden, dtype=h.dtype)
    b = np.empty(hidden, dtype=h.dtype)
    for i in range(batch):
        copy_(bias_ih, p)
        add_matvec1(weight_ih, x[i], p, backward)
        copy_(p, s)
        sigmoid_(s, 0, width)
        _coefficients(p, s, lstm, a, b)
        h_row, h_new = h[i], h_out[i]
        for j in range(hidden):
            h_new[j] = a[j] * h_row[j] + b[j]


@jit
def minimal_layer_step(
    x_address, h, layer, weight_ih, bias_ih, lstm, h_out, out, backward, control
):
    """Layer `layer` of a stack, h and h_out (L, B, H); one product, no partner (`control` is
    never used)."""
    x = layer_input(x_address, h_out, layer, weight_ih)
    minimal_cell_into(x, h[layer], weight_ih, bias_ih, lstm, h_out[layer], backward)
    if layer == h.shape[0] - 1:
        copy_rows(h_out[layer], out, out.shape[0])
    return 0


LSTM_PARAMETERS = (
    "weight_ih", "weight_hh", "bias_ih", "bias_hh", "ln_ih_weight", "ln_ih_bias", "ln_hh_weight",
    "ln_hh_bias", "weight_ci", "weight_cf", "weight_co", "ln_c_weight", "ln_c_bias", "weight_hr",
)  # fmt: skip
ELMAN_PARAMETERS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr")
MINIMAL_PARAMETERS = ("weight_ih", "bias_ih")
GRU_PARAMETERS = (
    "weight_ih", "weight_hh", "bias_ih", "bias_hh", "ln_ih_weight", "ln_ih_bias", "ln_hh_weight",
    "ln_hh_bias", "weight_hr",
)  # fmt: skip


class _VariantStep:
    """Views of a variant cell's parameters (`parameters`, in the kernel's order; an option that
    is off as an empty array, a missing bias as zeros), taken once, and the cell's constants."""

    parameters: tuple[str, ...] = ()

    def __init__(self, cell: torch.nn.Module):
        self.cell = cell
        self.pointers = self._pointers(cell)
        self.dtype = cell.weight_ih.dtype
        empty = torch.empty(0, dtype=self.dtype).numpy()  # an option that is off
        views = []
        for name in self.parameters:
            tensor = getattr(cell, name, None)
            if tensor is None and name.startswith("bias"):
                tensor = cell.weight_ih.new_zeros(cell.weight_ih.shape[0])  # (G * H,)
            views.append(empty if tensor is None else numpy_view(tensor))
        if self.parameters[-1] == "weight_hr" and views[-1].shape[0] == 0:
            views[-1] = empty.reshape(0, 0)  # weight_hr is a matrix when present
        self.views = (*views, *self._constants(cell))
        recurrent = "weight_hh" in self.parameters  # not minGRU / minLSTM
        self.weight_bytes = views[0].nbytes + views[1].nbytes if recurrent else 0  # W_ih, W_hh
        self._backward = False  # the direction of this call's weight reads (`add_matvec1`)

    def _constants(self, cell: torch.nn.Module) -> tuple[float, ...]:
        raise NotImplementedError

    def _pointers(self, cell: torch.nn.Module) -> tuple[int | None, ...]:
        parameters = [getattr(cell, name, None) for name in self.parameters]
        return tuple(None if p is None else p.data_ptr() for p in parameters)

    def uses(self, cell: torch.nn.Module) -> bool:
        """Whether this step still reads `cell`'s parameters (False once one was replaced)."""
        return cell is self.cell and self.pointers == self._pointers(cell)

    def _input(self, x: Tensor) -> np.ndarray:
        return step_input(x, self.dtype, self.cell.weight_ih.shape[1])

    def _state(self, tensor: Tensor, name: str, batch: int, size: int) -> np.ndarray:
        return step_state(tensor, name, self.dtype, (batch, size))

    def _control(self) -> np.ndarray:
        """The partner thread's control for this step's products (`numba_step.products`)."""
        return partner_control(self.weight_bytes)

    def _direction(self) -> bool:
        """This call's direction of the weight reads: the other one than the last call's
        (`numba_step.add_matvec1`)."""
        self._backward = backward = not self._backward
        return backward


class VariantLSTMStep(_VariantStep):
    """Inference-only streaming steps of a `VariantLSTMCell` (any options; in eval mode, where
    recurrent dropout and weight drop are off and zoneout mixes by its rate):
    `h, c = step(x, (h, c))`, x (B, H_in), h (B, P), c (B, H), CPU tensors of the cell's dtype.
    Holds views of the cell's parameters; `uses(cell)` says whether they are still its memory."""

    parameters = LSTM_PARAMETERS

    def _constants(self, cell: torch.nn.Module) -> tuple[float, ...]:
        return cell.variant.zoneout, cell.variant.cell_zoneout, cell.layer_norm_eps

    def __call__(self, x: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        inputs = self._input(x)
        h, c = step_parts(state, ("h", "c"))
        batch, cell = inputs.shape[0], self.cell
        h, c = (
            self._state(h, "h", batch, cell.output_size),
            self._state(c, "c", batch, cell.hidden_size),
        )
        h_new, c_new = np.empty_like(h), np.empty_like(c)
        flags = variant_lstm_cell_into(
            inputs, h, c, *self.views, h_new, c_new, self._direction(), self._control()
        )
        after_step(flags, self)
        return torch.from_numpy(h_new), torch.from_numpy(c_new)


class VariantGRUStep(_VariantStep):
    """Inference-only streaming steps of a `VariantGRUCell` in eval mode (as `VariantLSTMStep`):
    `h = step(x, h)`, or `(s, h) = step(x, (s, h))` with a projection (s (B, P) = W_hr h)."""

    parameters = GRU_PARAMETERS

    def _constants(self, cell: torch.nn.Module) -> tuple[float, ...]:
        return cell.variant.zoneout, cell.layer_norm_eps

    def __call__(self, x: Tensor, state: Tensor | tuple[Tensor, Tensor]):
        inputs, cell = self._input(x), self.cell
        projected = bool(cell.proj_size)
        parts = step_parts(state, ("s", "h")) if projected else (state, state)
        batch = inputs.shape[0]
        s = self._state(parts[0], "s" if projected else "h", batch, cell.output_size)
        h = self._state(parts[1], "h", batch, cell.hidden_size) if projected else s
        h_new = np.empty_like(h)
        s_new = np.empty_like(s) if projected else h_new
        flags = variant_gru_cell_into(
            inputs, s, h, *self.views, s_new, h_new, self._direction(), self._control()
        )
        after_step(flags, self)
        if projected:
            return torch.from_numpy(s_new), torch.from_numpy(h_new)
        return torch.from_numpy(h_new)


class VariantElmanStep(_VariantStep):
    """Inference-only streaming steps of a `VariantElmanCell` with tanh or relu in eval mode (as
    `VariantLSTMStep`): `h = step(x, h)`, h (B, P)."""

    parameters = ELMAN_PARAMETERS

    def _constants(self, cell: torch.nn.Module) -> tuple[float, ...]:
        return cell.nonlinearity == "relu", cell.variant.zoneout

    def __call__(self, x: Tensor, h: Tensor) -> Tensor:
        inputs = self._input(x)
        h = self._state(h, "h", inputs.shape[0], self.cell.output_size)
        h_new = np.empty_like(h)
        flags = variant_elman_cell_into(
            inputs, h, *self.views, h_new, self._direction(), self._control()
        )
        after_step(flags, self)
        return torch.from_numpy(h_new)


class MinimalStep(_VariantStep):
    """Inference-only streaming steps of a `MinGRUCell` or `MinLSTMCell`: `h = step(x, h)`."""

    parameters = MINIMAL_PARAMETERS

    def _constants(self, cell: torch.nn.Module) -> tuple[float, ...]:
        return (cell.gates == 3,)

    def __call__(self, x: Tensor, h: Tensor) -> Tensor:
        inputs = self._input(x)
        h = self._state(h, "h", inputs.shape[0], self.cell.hidden_size)
        h_new = np.empty_like(h)
        minimal_cell_into(inputs, h, *self.views, h_new, self._direction())
        return torch.from_numpy(h_new)
