"""Compiled whole-sequence kernels for the variant cells (`rnnkit.variants`): one layer direction
of a variant LSTM, GRU or Elman layer, forward and backward (Numba, CPU).

`variant_sequence(cell, x, state, lengths, reverse)` runs what `rnnkit.layers.run_cell` runs
for a `VariantLSTMCell`, `VariantGRUCell` or `VariantElmanCell`, with the same random draws in
the same order, so that under the same seed both routes give the same numbers:

- in torch, under autograd, for all steps at once: a^x = LN_x(W_ih x) + b_ih (the LSTM's is
  only W_ih x: its loop applies LN_x and b_ih), the weight-dropped W_hh = M * W_hh
  (`cell.sample_noise`, as the loop's `cell.begin` draws it), the recurrent-dropout mask
  m (B, P), and zoneout's draws for every step (`rnnkit.variants.zoneout_draws`, equal to the
  loop's per-step draws; in eval its rates);
- compiled, the recurrence (`numba_lstm.py` for the LSTM; the GRU and Elman loops here), whose
  backward pass returns the gradients of a^x, the dropped W_hh, b_hh, LN's gains and shifts, the
  peepholes, W_hr and the initial state; autograd does the rest.

GRU, per step (r|z|n; s = W_hr h with a projection, else h; d zoneout):

    a^h = LN_h(W_hh (m * s_{t-1})) + b_hh
    r, z = sigmoid(a^x_r + a^h_r), sigmoid(a^x_z + a^h_z);  n = tanh(a^x_n + r * a^h_n)
    h_t = (1 - d) * ((1 - z) * n + z * h_{t-1}) + d * h_{t-1};  s_t = W_hr h_t

Elman: h_t = (1 - d) * W_hr f(a^x + W_hh (m * h_{t-1}) + b_hh) + d * h_{t-1}, f tanh or relu.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from rnnkit.kernels._compiled_sequence import Loops, Static, pair, run
from rnnkit.kernels._numba_common import (
    group_norm,
    group_norm_backward,
    jit,
    lengths_and_order,
    numpy_view,
    optional_view,
    position,
    running,
    sigmoid_,
    tanh_,
    weight_grads,
)
from rnnkit.kernels._numba_products import add_product, operand, product_buffers
from rnnkit.kernels.dispatch import variant_kind
from rnnkit.kernels.numba_lstm import LSTM_LOOPS
from rnnkit.variants import (
    VariantGRUCell,
    VariantLSTMCell,
    gate_layer_norm,
    zoneout_draws,
)

# ---- GRU ---------------------------------------------------------------------------------------


@jit
def gru_forward_loop(
    x_proj, s0, h0, weight_hh, blas_hh, bias_hh, ln_hh, weight_hr, blas_hr, h_mask, zone_h,
    lengths, order, reverse, eps, output, tape, save,
):  # fmt: skip
    """Run the recurrence over x_proj (T, B, 3H) = a^x from s0 (B, P) (empty without a
    projection) and h0 (B, H); fill output (T, B, P) and the tape (T, B, width): r|z|n (3H),
    a^h_n, h_{t-1}, h_t (H each), m * s_{t-1} (P), with layer norm LN_h's normalised
    W_hh (m * s) (3H) and its three 1/std. weight_hh (3H, P) and weight_hr (P, H) as
    `product_operand` gives them for `blas_hh`, `blas_hr`. Returns (s_n, h_n)."""
    batch, hidden = h0.shape
    out_size = output.shape[2]
    layer_norm, proj = ln_hh.shape[0] > 0, weight_hr.shape[0] > 0
    masked, zoned = h_mask.shape[0] > 0, zone_h.shape[0] > 0
    a_h_n, h_prev, h_new, r_in = 3 * hidden, 4 * hidden, 5 * hidden, 6 * hidden
    hh_norm, rstd = 6 * hidden + out_size, 9 * hidden + out_size
    h = h0.copy()
    s = s0.copy() if proj else h  # (B, P): the output and recurrent state
    masked_s = np.zeros((batch, out_size), dtype=h0.dtype)  # (B, P): m * s
    hh = np.zeros((batch, 3 * hidden), dtype=h0.dtype)  # (B, 3H): W_hh (m * s)
    work = np.empty(6 * hidden)
    hh_in, hh_out = product_buffers(weight_hh, blas_hh, batch)
    hr_in, hr_out = product_buffers(weight_hr, blas_hr, batch if proj else 0)
    n_active = batch
    for step in range(lengths[order[0]]):
        n_active = running(lengths, order, step, n_active)
        for i in range(n_active):
            b = order[i]
            for k in range(out_size):
                masked_s[b, k] = s[b, k] * h_mask[b, k] if masked else s[b, k]
            hh[b] = 0
        add_product(weight_hh, blas_hh, masked_s, order, n_active, hh, hh_in, hh_out)
        for i in range(n_active):
            b = order[i]
            t = position(lengths, b, step, reverse)
            rec = tape[t if save else 0, b]
            rec[r_in : r_in + out_size] = masked_s[b]
            if layer_norm:
                group_norm(hh[b], 3, rec[hh_norm : hh_norm + 3 * hidden], rec[rstd:], eps)
                for j in range(3 * hidden):
                    hh[b, j] = rec[hh_norm + j] * ln_hh[0, j] + ln_hh[1, j]
            for j in range(2 * hidden):
                rec[j] = x_proj[t, b, j] + (hh[b, j] + bias_hh[j])
            sigmoid_(rec, 0, 2 * hidden, work)  # r, z
            for j in range(hidden):
                rec[a_h_n + j] = hh[b, 2 * hidden + j] + bias_hh[2 * hidden + j]
                rec[2 * hidden + j] = x_proj[t, b, 2 * hidden + j] + rec[j] * rec[a_h_n + j]
            tanh_(rec, 2 * hidden, 3 * hidden, work)  # n
            for j in range(hidden):
                z, n = rec[hidden + j], rec[2 * hidden + j]
                d = zone_h[t, b, j] if zoned else 0.0
                rec[h_prev + j] = h[b, j]
                h[b, j] = (1 - d) * ((1 - z) * n + z * h[b, j]) + d * h[b, j]
                rec[h_new + j] = h[b, j]
        if proj:
            for i in range(n_active):
                s[order[i]] = 0
            add_product(weight_hr, blas_hr, h, order, n_active, s, hr_in, hr_out)
        for i in range(n_active):
            b = order[i]
            output[position(lengths, b, step, reverse), b] = s[b]
    return s, h


@jit
def gru_backward_loop(
    grad_output, grad_s_n, grad_h_n, weight_hh_t, blas_hh, ln_hh_gain, weight_hr_t, blas_hr,
    h_mask, zone_h, tape, lengths, order, reverse, grads,
):  # fmt: skip
    """Backpropagate through time; fill grads (T, B, 9H + P): dL/da^x (3H), dL/da^h (3H),
    dL/d(W_hh (m * s)) (3H, layer norm only), dL/ds_t (P, projection only). weight_hh_t
    (W_hh.T) and weight_hr_t (W_hr.T) as `product_operand` gives them for `blas_hh`, `blas_hr`.
    Returns (dL/ds0, dL/dh0)."""
    batch, hidden = grad_h_n.shape
    out_size = grad_output.shape[2]
    layer_norm, proj = ln_hh_gain.shape[0] > 0, weight_hr_t.shape[0] > 0
    masked, zoned = h_mask.shape[0] > 0, zone_h.shape[0] > 0
    a_h_n, h_prev = 3 * hidden, 4 * hidden
    hh_norm, rstd = 6 * hidden + out_size, 9 * hidden + out_size
    grad_h = grad_h_n.copy()
    grad_s = grad_s_n.copy() if proj else grad_h  # (B, P)
    grad_hh = np.zeros((batch, 3 * hidden), dtype=grad_h.dtype)
    grad_r_in = np.zeros((batch, out_size), dtype=grad_h.dtype)  # dL/d(m * s)
    scratch = np.zeros(3 * hidden, dtype=grad_h.dtype)
    hh_in, hh_out = product_buffers(weight_hh_t, blas_hh, batch)
    hr_in, hr_out = product_buffers(weight_hr_t, blas_hr, batch if proj else 0)
    n_active = 0
    for step in range(lengths[order[0]] - 1, -1, -1):
        n_active = running(lengths, order, step, n_active)
        for i in range(n_active):
            b = order[i]
            t = position(lengths, b, step, reverse)
            for k in range(out_size):
                grad_s[b, k] += grad_output[t, b, k]
                grads[t, b, 9 * hidden + k] = grad_s[b, k]
        if proj:
            add_product(weight_hr_t, blas_hr, grad_s, order, n_active, grad_h, hr_in, hr_out)
        for i in range(n_active):
            b = order[i]
            t = position(lengths, b, step, reverse)
            rec, grad = tape[t, b], grads[t, b]
            for j in range(hidden):
                r, z, n = rec[j], rec[hidden + j], rec[2 * hidden + j]
                d = zone_h[t, b, j] if zoned else 0.0
                dh_hat = (1 - d) * grad_h[b, j]
                da_n = dh_hat * (1 - z) * (1 - n * n)
                grad[j] = da_n * rec[a_h_n + j] * r * (1 - r)
                grad[hidden + j] = dh_hat * (rec[h_prev + j] - n) * z * (1 - z)
                grad[2 * hidden + j] = da_n
                grad[3 * hidden + j] = grad[j]
                grad[4 * hidden + j] = grad[hidden + j]
                grad[5 * hidden + j] = da_n * r
                grad_h[b, j] = d * grad_h[b, j] + dh_hat * z
            if layer_norm:
                for j in range(3 * hidden):
                    scratch[j] = grad[3 * hidden + j] * ln_hh_gain[j]
                hn = rec[hh_norm : hh_norm + 3 * hidden]
                group_norm_backward(scratch, hn, rec[rstd:], 3, grad_hh[b])
                grad[6 * hidden : 9 * hidden] = grad_hh[b]
            else:
                grad_hh[b] = grad[3 * hidden : 6 * hidden]
            grad_r_in[b] = 0
            if proj:
                grad_s[b] = 0
        add_product(weight_hh_t, blas_hh, grad_hh, order, n_active, grad_r_in, hh_in, hh_out)
        for i in range(n_active):
            b = order[i]
            for k in range(out_size):
                grad_s[b, k] += h_mask[b, k] * grad_r_in[b, k] if masked else grad_r_in[b, k]
    return grad_s, grad_h


def gru_forward(static: Static, tensors: tuple, save: bool) -> tuple[tuple, Tensor]:
    """(((output (T, B, P), s_n, h_n) or (output, h_n)), tape) for tensors (x_proj, s0, h0,
    weight_hh, bias_hh, ln_hh_weight, ln_hh_bias, weight_hr), None where off."""
    x_proj, s0, h0, weight_hh, bias_hh, ln_g, ln_b, weight_hr = tensors
    steps, batch, _ = x_proj.shape
    hidden, out_size = h0.shape[1], weight_hh.shape[1]
    width = 6 * hidden + out_size + (3 * hidden + 3 if ln_g is not None else 0)
    new = x_proj.new_zeros if static.padded else x_proj.new_empty
    output, tape = new(steps, batch, out_size), new(steps if save else 1, batch, width)
    bias = bias_hh.detach() if bias_hh is not None else x_proj.new_zeros(3 * hidden)
    s_n, h_n = gru_forward_loop(
        numpy_view(x_proj), optional_view(s0, 2, x_proj), numpy_view(h0),
        *operand(weight_hh, batch, x_proj), numpy_view(bias),
        optional_view(pair(ln_g, ln_b), 2, x_proj), *operand(weight_hr, batch, x_proj),
        optional_view(static.h_mask, 2, x_proj),
        optional_view(static.zone_h, 3, x_proj), static.lengths, static.order, static.reverse,
        static.eps, output.numpy(), tape.numpy(), save,
    )  # fmt: skip
    h_n = torch.from_numpy(h_n)
    outputs = (output, torch.from_numpy(s_n), h_n) if weight_hr is not None else (output, h_n)
    return outputs, tape


def gru_backward(static: Static, tensors: tuple, saved: tuple, grads: tuple) -> list:
    x_proj, s0, h0, weight_hh, _, ln_g, _, weight_hr = tensors
    tape = saved[-1]
    hidden, out_size = h0.shape[1], weight_hh.shape[1]
    proj = weight_hr is not None
    grad_output, grad_s_n, grad_h_n = grads if proj else (grads[0], None, grads[1])
    new = x_proj.new_zeros if static.padded else x_proj.new_empty
    grad = new(*x_proj.shape[:2], 9 * hidden + out_size)
    batch = x_proj.shape[1]
    grad_s0, grad_h0 = gru_backward_loop(
        numpy_view(grad_output), optional_view(grad_s_n, 2, x_proj), numpy_view(grad_h_n),
        *operand(weight_hh.t(), batch, x_proj), optional_view(ln_g, 1, x_proj),
        *operand(None if weight_hr is None else weight_hr.t(), batch, x_proj),
        optional_view(static.h_mask, 2, x_proj), optional_view(static.zone_h, 3, x_proj),
        tape.numpy(), static.lengths, static.order, static.reverse, grad.numpy(),
    )  # fmt: skip
    grad_a_h = grad[..., 3 * hidden : 6 * hidden]
    grad_hh = grad_a_h if ln_g is None else grad[..., 6 * hidden : 9 * hidden]
    r_in = tape[..., 6 * hidden : 6 * hidden + out_size]
    result = [
        grad[..., : 3 * hidden],
        torch.from_numpy(grad_s0) if proj else None,
        torch.from_numpy(grad_h0),
        weight_grads(grad_hh, r_in, True, False)[0],
        grad_a_h.sum((0, 1)),
    ]
    if ln_g is not None:
        hh_norm = tape[..., 6 * hidden + out_size : 9 * hidden + out_size]
        result += [(grad_a_h * hh_norm).sum((0, 1)), grad_a_h.sum((0, 1))]
    else:
        result += [None, None]
    if proj:
        grad_s = grad[..., 9 * hidden :]
        result.append(weight_grads(grad_s, tape[..., 5 * hidden : 6 * hidden], True, False)[0])
    else:
        result.append(None)
    return result


# ---- Elman -------------------------------------------------------------------------------------


@jit
def elman_forward_loop(
    x_proj, h0, weight_hh, blas_hh, bias_hh, weight_hr, blas_hr, h_mask, zone_h, lengths, order,
    reverse, relu, output, tape, save,
):  # fmt: skip
    """Run the recurrence over x_proj (T, B, H) = a^x from h0 (B, P); fill output (T, B, P)
    and the tape (T, B, H + P): f(pre-activation) (H), m * h_{t-1} (P). weight_hh (H, P) and
    weight_hr (P, H) as `product_operand` gives them for `blas_hh`, `blas_hr`. Returns h_n."""
    batch, out_size = h0.shape
    hidden = x_proj.shape[2]
    proj, masked, zoned = weight_hr.shape[0] > 0, h_mask.shape[0] > 0, zone_h.shape[0] > 0
    h = h0.copy()
    masked_h = np.zeros_like(h0)  # (B, P): m * h
    pre = np.zeros((batch, hidden), dtype=h0.dtype)  # (B, H)
    h_hat = np.zeros_like(h0) if proj else pre  # (B, P)
    work = np.empty(2 * hidden)
    hh_in, hh_out = product_buffers(weight_hh, blas_hh, batch)
    hr_in, hr_out = product_buffers(weight_hr, blas_hr, batch if proj else 0)
    n_active = batch
    for step in range(lengths[order[0]]):
        n_active = running(lengths, order, step, n_active)
        for i in range(n_active):
            b = order[i]
            for k in range(out_size):
                masked_h[b, k] = h[b, k] * h_mask[b, k] if masked else h[b, k]
            pre[b] = 0
        add_product(weight_hh, blas_hh, masked_h, order, n_active, pre, hh_in, hh_out)
        for i in range(n_active):
            b = order[i]
            t = position(lengths, b, step, reverse)
            rec = tape[t if save else 0, b]
            rec[hidden:] = masked_h[b]
            for j in range(hidden):
                pre[b, j] = x_proj[t, b, j] + (pre[b, j] + bias_hh[j])
                if relu:
                    pre[b, j] = max(pre[b, j], 0)
            if not relu:
                tanh_(pre[b], 0, hidden, work)
            rec[:hidden] = pre[b]
        if proj:
            for i in range(n_active):
                h_hat[order[i]] = 0
            add_product(weight_hr, blas_hr, pre, order, n_active, h_hat, hr_in, hr_out)
        for i in range(n_active):
            b = order[i]
            t = position(lengths, b, step, reverse)
            for k in range(out_size):
                d = zone_h[t, b, k] if zoned else 0.0
                h[b, k] = (1 - d) * h_hat[b, k] + d * h[b, k]
                output[t, b, k] = h[b, k]
    return h


@jit
def elman_backward_loop(
    grad_output, grad_h_n, weight_hh_t, blas_hh, weight_hr_t, blas_hr, h_mask, zone_h, tape,
    lengths, order, reverse, relu, grads,
):  # fmt: skip
    """Backpropagate through time; fill grads (T, B, H + P): dL/d(pre-activation) (H),
    dL/d(W_hr f) (P). weight_hh_t (W_hh.T) and weight_hr_t (W_hr.T) as `product_operand` gives
    them for `blas_hh`, `blas_hr`. Returns dL/dh0."""
    batch, out_size = grad_h_n.shape
    hidden = grads.shape[2] - out_size
    proj, masked, zoned = weight_hr_t.shape[0] > 0, h_mask.shape[0] > 0, zone_h.shape[0] > 0
    grad_h = grad_h_n.copy()
    grad_act = np.zeros((batch, hidden), dtype=grad_h.dtype)  # (B, H)
    grad_h_hat = np.zeros_like(grad_h) if proj else grad_act  # (B, P)
    grad_masked = np.zeros_like(grad_h)  # (B, P): dL/d(m * h)
    hh_in, hh_out = product_buffers(weight_hh_t, blas_hh, batch)
    hr_in, hr_out = product_buffers(weight_hr_t, blas_hr, batch if proj else 0)
    n_active = 0
    for step in range(lengths[order[0]] - 1, -1, -1):
        n_active = running(lengths, order, step, n_active)
        for i in range(n_active):
            b = order[i]
            t = position(lengths, b, step, reverse)
            for k in range(out_size):
                dh = grad_h[b, k] + grad_output[t, b, k]
                d = zone_h[t, b, k] if zoned else 0.0
                grad_h[b, k] = d * dh
                grad_h_hat[b, k] = (1 - d) * dh
                grads[t, b, hidden + k] = grad_h_hat[b, k]
            if proj:
                grad_act[b] = 0
        if proj:
            add_product(weight_hr_t, blas_hr, grad_h_hat, order, n_active, grad_act, hr_in, hr_out)
        for i in range(n_active):
            b = order[i]
            t = position(lengths, b, step, reverse)
            for j in range(hidden):
                act = tape[t, b, j]
                if relu:
                    grad_act[b, j] = grad_act[b, j] if act > 0 else 0
                else:
                    grad_act[b, j] = grad_act[b, j] * (1 - act * act)
                grads[t, b, j] = grad_act[b, j]
            grad_masked[b] = 0
        add_product(weight_hh_t, blas_hh, grad_act, order, n_active, grad_masked, hh_in, hh_out)
        for i in range(n_active):
            b = order[i]
            for k in range(out_size):
                grad_h[b, k] += h_mask[b, k] * grad_masked[b, k] if masked else grad_masked[b, k]
    return grad_h


def elman_forward(static: Static, tensors: tuple, save: bool) -> tuple[tuple, Tensor]:
    """((output (T, B, P), h_n), tape) for tensors (x_proj, h0, weight_hh, bias_hh, weight_hr)."""
    x_proj, h0, weight_hh, bias_hh, weight_hr = tensors
    steps, batch, hidden = x_proj.shape
    out_size = h0.shape[1]
    new = x_proj.new_zeros if static.padded else x_proj.new_empty
    output, tape = new(steps, batch, out_size), new(steps if save else 1, batch, hidden + out_size)
    bias = bias_hh.detach() if bias_hh is not None else x_proj.new_zeros(hidden)
    h_n = elman_forward_loop(
        numpy_view(x_proj), numpy_view(h0), *operand(weight_hh, batch, x_proj), numpy_view(bias),
        *operand(weight_hr, batch, x_proj), optional_view(static.h_mask, 2, x_proj),
        optional_view(static.zone_h, 3, x_proj), static.lengths, static.order, static.reverse,
        static.relu, output.numpy(), tape.numpy(), save,
    )  # fmt: skip
    return (output, torch.from_numpy(h_n)), tape


def elman_backward(static: Static, tensors: tuple, saved: tuple, grads: tuple) -> list:
    x_proj, h0, weight_hh, _, weight_hr = tensors
    tape = saved[-1]
    hidden = x_proj.shape[2]
    new = x_proj.new_zeros if static.padded else x_proj.new_empty
    grad = new(*x_proj.shape[:2], hidden + h0.shape[1])
    batch = x_proj.shape[1]
    grad_h0 = elman_backward_loop(
        numpy_view(grads[0]), numpy_view(grads[1]), *operand(weight_hh.t(), batch, x_proj),
        *operand(None if weight_hr is None else weight_hr.t(), batch, x_proj),
        optional_view(static.h_mask, 2, x_proj), optional_view(static.zone_h, 3, x_proj),
        tape.numpy(), static.lengths, static.order, static.reverse, static.relu, grad.numpy(),
    )  # fmt: skip
    grad_pre = grad[..., :hidden]
    grad_w_hr = None
    if weight_hr is not None:
        grad_w_hr = weight_grads(grad[..., hidden:], tape[..., :hidden], True, False)[0]
    return [
        grad_pre,
        torch.from_numpy(grad_h0),
        weight_grads(grad_pre, tape[..., hidden:], True, False)[0],
        grad_pre.sum((0, 1)),
        grad_w_hr,
    ]


GRU_LOOPS = Loops(gru_forward, gru_backward)
ELMAN_LOOPS = Loops(elman_forward, elman_backward)


# ---- the entry point ---------------------------------------------------------------------------


def variant_sequence(cell, x: Tensor, state, lengths: Tensor | None = None, reverse: bool = False):
    """One direction of one variant layer over x (T, B, H_in) from `state` (the cell's state:
    LSTM (h, c), GRU h or (s, h) with a projection, Elman h), time-major; what
    `rnnkit.layers.run_cell(cell, x, state, lengths, reverse)` returns, drawing the same random
    numbers in the same order. Differentiable in x, the state and every parameter of the cell."""
    if variant_kind(cell) is None:
        raise TypeError(f"variant_sequence runs the variant cells, got {type(cell).__name__}")
    steps, batch, _ = x.shape
    lengths_np, order = lengths_and_order(lengths, steps, batch)
    noise = cell.sample_noise(batch, x)  # as `cell.begin`: h mask, then weight-drop mask
    x_proj = torch.nn.functional.linear(x, cell.weight_ih)  # (T, B, G*H)
    lstm = isinstance(cell, VariantLSTMCell)  # LSTM's loop applies LN_x and b_ih itself
    if cell.variant.layer_norm and not lstm:
        ln = (cell.ln_ih_weight, cell.ln_ih_bias, cell.gates, cell.layer_norm_eps)
        x_proj = gate_layer_norm(x_proj, *ln)
    if cell.bias_ih is not None and not lstm:
        x_proj = x_proj + cell.bias_ih
    weight_hh = cell.weight_hh if noise.weight_mask is None else noise.weight_mask * cell.weight_hh
    rates = [(cell.variant.cell_zoneout, cell.hidden_size)] if lstm else []
    state_size = cell.hidden_size if isinstance(cell, VariantGRUCell) else cell.output_size
    rates.append((cell.variant.zoneout, state_size))
    zones = zoneout_draws(rates, steps, batch, x, cell.training, reverse)
    static = Static(
        lengths_np, order, lengths is not None and bool(lengths_np.min() < steps), reverse,
        noise.h_mask, zones[-1], zones[0] if lstm else None, cell.layer_norm_eps,
        getattr(cell, "nonlinearity", None) == "relu",
    )  # fmt: skip
    if lstm:
        h0, c0 = state
        tensors = (
            x_proj, h0, c0, weight_hh, cell.bias_ih, cell.bias_hh, cell.ln_ih_weight,
            cell.ln_ih_bias, cell.ln_hh_weight, cell.ln_hh_bias, cell.weight_ci, cell.weight_cf,
            cell.weight_co, cell.ln_c_weight, cell.ln_c_bias, cell.weight_hr,
        )  # fmt: skip
        output, h_n, c_n = run(LSTM_LOOPS, static, tensors)
        return output, (h_n, c_n)
    if isinstance(cell, VariantGRUCell):
        s0, h0 = state if cell.proj_size else (None, state)
        tensors = (
            x_proj, s0, h0, weight_hh, cell.bias_hh, cell.ln_hh_weight, cell.ln_hh_bias,
            cell.weight_hr,
        )  # fmt: skip
        output, *final = run(GRU_LOOPS, static, tensors)
        return output, tuple(final) if cell.proj_size else final[0]
    tensors = (x_proj, state, weight_hh, cell.bias_hh, cell.weight_hr)
    output, h_n = run(ELMAN_LOOPS, static, tensors)
    return output, h_n
