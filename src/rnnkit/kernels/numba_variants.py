"""Compiled whole-sequence kernels for the variant cells (`rnnkit.variants`): one layer direction
of a variant LSTM, GRU or Elman layer, forward and backward (Numba, CPU).

`variant_sequence(cell, x, state, lengths, reverse)` runs what `rnnkit.layers.run_cell` runs
for a `VariantLSTMCell`, `VariantGRUCell` or `VariantElmanCell`, with the same random draws in
the same order, so that under the same seed both routes give the same numbers:

- in torch, under autograd, for all steps at once: W_ih x (Elman's a^x = W_ih x + b_ih; the
  LSTM and GRU loops apply LN_x and b_ih themselves), the weight-dropped W_hh = M * W_hh
  (`cell.sample_noise`, as the loop's `cell.begin` draws it), the recurrent-dropout mask
  m (B, P), and zoneout's draws for every step (`rnnkit.variants.zoneout_draws`, equal to the
  loop's per-step draws; in eval its rates);
- compiled, the recurrence (`numba_lstm.py` for the LSTM; the GRU and Elman loops here), whose
  backward pass returns the gradients of W_ih x, the dropped W_hh, the biases, LN's gains and
  shifts, the peepholes, W_hr and the initial state; autograd does the rest. The LSTM and GRU
  backward loops sum the vectors' gradients (biases, LN gains and shifts, peepholes) in
  float64 as they go; torch multiplies out dW_hh and dW_hr.

GRU, per step (r|z|n; s = W_hr h with a projection, else h; d zoneout):

    a^x = LN_x(W_ih x_t) + b_ih;  a^h = LN_h(W_hh (m * s_{t-1})) + b_hh
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
    PREFETCH_AHEAD,
    alive,
    bias_or_zeros,
    copy_,
    copy_rows,
    draws_at,
    jit,
    jit_inline,
    lengths_and_order,
    numpy_view,
    offset,
    optional_view,
    position,
    prefetch_step,
    running,
    sigmoid_,
    sort_rows,
    tanh_,
    unowned,
    unsort,
    weight_grads,
)
from rnnkit.kernels._numba_products import (
    add_product,
    operand,
    packed_linear,
    product_buffers,
    product_prefix,
)
from rnnkit.kernels.dispatch import variant_kind
from rnnkit.kernels.numba_lstm import LSTM_LOOPS
from rnnkit.memory import tape_buffer
from rnnkit.variants import (
    VariantGRUCell,
    VariantLSTMCell,
    zoneout_draws,
)

# ---- GRU ---------------------------------------------------------------------------------------


def gru_tape(
    tape: Tensor | None, steps: int, batch: int, hidden: int, out_size: int, options: tuple
) -> dict[str, Tensor]:
    """The GRU tape's parts, views of the flat `tape` (or their total size as "size" for None).
    Step-major and in `order` (row i is sequence order[i]; rows past a sequence's end are
    unused), so that a step's rows of every part are one contiguous block: r|z (S, B, 2H); n,
    a^h_n and h_{t-1} (S, B, H) each; h_t (S, B, H) with a projection; the input of W_hh,
    m * s_{t-1} (S, B, P), with a projection or recurrent dropout (else it is h_{t-1}); with
    layer norm LN_h's normalised W_hh (m * s) and LN_x's normalised W_ih x (S, B, 3H) each and
    the six 1/std (S, B, 6) (LN_h's 3 gate groups, then LN_x's). S is T, or 1 without `save`.
    options: (layer_norm, proj, masked)."""
    layer_norm, proj, masked = options
    widths = {"rz": 2 * hidden, "n": hidden, "a_h_n": hidden, "h_prev": hidden}
    widths |= {"h_new": hidden if proj else 0, "s": out_size if proj or masked else 0}
    for name, width in (("hh_norm", 3 * hidden), ("ih_norm", 3 * hidden), ("rstd", 6)):
        widths[name] = width if layer_norm else 0
    sizes = [steps * batch * width for width in widths.values()]
    if tape is None:
        return {"size": sum(sizes)}
    parts = tape.split(sizes)
    return {
        name: part.view(steps, batch, widths[name])
        for name, part in zip(widths, parts, strict=True)
    }


@jit_inline
def layer_norm_gates(v, groups, gain, shift, bias, normed, rstd, out, eps):
    """out = LN(v) * gain + shift + bias with LN(v) = normed = (v - mean) * rstd per group of
    v (G*H,), rstd = 1 / sqrt(var + eps) (biased variance as torch's layer norm, float64 sums);
    fills normed and rstd (groups,); the group's mean and 1/std in registers. out may be v."""
    size = len(v) // groups
    for k in range(groups):
        start = k * size
        mean = 0.0
        for j in range(size):
            mean += v[offset(start, j)]
        mean /= size
        var = 0.0
        for j in range(size):
            d = v[offset(start, j)] - mean
            var += d * d
        rstd[k] = 1.0 / np.sqrt(var / size + eps)
        inv = rstd[k]  # as stored, as the backward pass reads it
        for j in range(size):
            u = offset(start, j)
            n = normed.dtype.type((v[u] - mean) * inv)
            normed[u] = n
            out[u] = (n * gain[u] + shift[u]) + bias[u]


@jit_inline
def layer_norm_gates_backward(grad, gain, normed, rstd, groups, gain_sum, out):
    """out = dL/dv from grad = dL/d(LN(v) * gain + shift) (see `layer_norm_gates`), per group
    rstd * (g - mean(g) - normed * mean(g * normed)) with g = grad * gain; adds
    grad * normed to gain_sum (float64), the gain's gradient."""
    size = len(normed) // groups
    for k in range(groups):
        start = k * size
        mean_g = 0.0
        mean_gn = 0.0
        for j in range(size):
            u = offset(start, j)
            g, n = grad[u] * gain[u], normed[u]
            gain_sum[u] += grad[u] * n
            mean_g += g
            mean_gn += g * n
        mean_g /= size
        mean_gn /= size
        inv = rstd[k]
        for j in range(size):
            u = offset(start, j)
            out[u] = inv * (grad[u] * gain[u] - mean_g - normed[u] * mean_gn)


@jit
def gru_forward_loop(
    x_proj, s0, h0, weight_hh, blas_hh, bias_ih, bias_hh, ln_ih, ln_hh, weight_hr, blas_hr,
    h_mask, zone_h, lengths, order, reverse, eps, output, rz_tape, n_tape, a_h_n_tape,
    h_prev_tape, h_new_tape, s_tape, hh_norm_tape, ih_norm_tape, rstd_tape, save,
):  # fmt: skip
    """Run the recurrence over x_proj (T, B, 3H) = W_ih x from s0 (B, P) (empty without a
    projection) and h0 (B, H); fill output (T, B, P) and the tape's parts (`gru_tape`, each
    (T, B, width), or (1, B, width) scratch without `save`; empty where off). bias_ih,
    bias_hh (3H,); ln_ih, ln_hh (2, 3H) gain|shift; h_mask (B, P); zone_h (T, B, H) or (1, 1, H);
    weight_hh (3H, P) and weight_hr (P, H) as `product_operand` gives them for `blas_hh`,
    `blas_hr`. Returns (s_n, h_n).

    The states live in `order` (longest first), so the running sequences are rows
    0..n_active-1: each product is one call over them, and each nonlinearity one call over the
    step's block of the tape (r|z, then n), in place."""
    batch, hidden = h0.shape
    out_size = output.shape[2]
    layer_norm, proj = ln_hh.shape[0] > 0, weight_hr.shape[0] > 0
    masked, zoned, store_s = h_mask.shape[0] > 0, zone_h.shape[0] > 0, s_tape.shape[2] > 0
    dtype = h0.dtype
    one = dtype.type(1)  # an int literal would make float32 arithmetic float64
    identity_own = np.arange(batch)
    # every array below is unowned, so that its views and its passing to the inlined helpers
    # take no reference counts (`unowned`): the caller holds the arguments, and the local
    # arrays are returned or kept until the loop ends (`alive`)
    x_proj, output, rz_tape = unowned(x_proj), unowned(output), unowned(rz_tape)
    n_tape, a_h_n_tape, h_prev_tape = unowned(n_tape), unowned(a_h_n_tape), unowned(h_prev_tape)
    h_new_tape, s_tape, hh_norm_tape = unowned(h_new_tape), unowned(s_tape), unowned(hh_norm_tape)
    ih_norm_tape, rstd_tape, zone_h = unowned(ih_norm_tape), unowned(rstd_tape), unowned(zone_h)
    h_mask, ln_ih, ln_hh = unowned(h_mask), unowned(ln_ih), unowned(ln_hh)
    lengths, order = unowned(lengths), unowned(order)
    bias_ih, bias_hh = unowned(bias_ih), unowned(bias_hh)
    weight_hh, weight_hr = unowned(weight_hh), unowned(weight_hr)
    h_own = sort_rows(h0, order)  # (B, H): row i is order[i]'s
    s_own = sort_rows(s0, order) if proj else h_own  # (B, P): the output and recurrent state
    hh_own = np.zeros((batch, 3 * hidden), dtype=dtype)  # (B, 3H): W_hh (m * s), then a^h
    a_x_own = np.zeros(3 * hidden, dtype=dtype)  # a^x of one sequence, with layer norm
    h, s, hh, a_x = unowned(h_own), unowned(s_own), unowned(hh_own), unowned(a_x_own)
    identity = unowned(identity_own)
    n_active = batch
    for step in range(lengths[order[0]]):
        n_active = running(lengths, order, step, n_active)
        prefetch_step(x_proj, lengths, order, n_active, step + PREFETCH_AHEAD, reverse)
        slot = step if save else 0
        rz, n_gate, a_h_n, h_prev = rz_tape[slot], n_tape[slot], a_h_n_tape[slot], h_prev_tape[slot]
        if save:
            copy_rows(h, h_prev, n_active)
        s_in = s_tape[slot] if masked or (store_s and save) else s  # (B, P): m * s_{t-1}
        if masked:
            for i in range(n_active):
                s_row, s_in_row, mask_row = s[i], s_in[i], h_mask[order[i]]
                for k in range(out_size):
                    s_in_row[k] = s_row[k] * mask_row[k]
        elif store_s and save:
            copy_rows(s, s_in, n_active)
        product_prefix(weight_hh, blas_hh, s_in, n_active, hh, identity)
        for i in range(n_active):
            x_row = x_proj[position(lengths, order[i], step, reverse), order[i]]
            hh_row, rz_row, n_row, a_h_n_row = hh[i], rz[i], n_gate[i], a_h_n[i]
            if layer_norm:  # a^x = LN_x(W_ih x) + b_ih, a^h = LN_h(W_hh (m * s)) + b_hh
                rstd = rstd_tape[slot, i]
                layer_norm_gates(
                    x_row, 3, ln_ih[0], ln_ih[1], bias_ih, ih_norm_tape[slot, i], rstd[3:],
                    a_x, eps,
                )  # fmt: skip
                layer_norm_gates(
                    hh_row, 3, ln_hh[0], ln_hh[1], bias_hh, hh_norm_tape[slot, i], rstd[:3],
                    hh_row, eps,
                )  # fmt: skip
                for j in range(2 * hidden):
                    rz_row[j] = a_x[j] + hh_row[j]
                for j in range(hidden):
                    a_h_n_row[j] = hh_row[2 * hidden + j]
                    n_row[j] = a_x[2 * hidden + j]
            else:
                for j in range(2 * hidden):
                    rz_row[j] = (x_row[j] + bias_ih[j]) + (hh_row[j] + bias_hh[j])
                for j in range(hidden):
                    a_h_n_row[j] = hh_row[2 * hidden + j] + bias_hh[2 * hidden + j]
                    n_row[j] = x_row[2 * hidden + j] + bias_ih[2 * hidden + j]
        sigmoid_(rz.reshape(-1), 0, n_active * 2 * hidden)
        for i in range(n_active):
            rz_row, n_row, a_h_n_row = rz[i], n_gate[i], a_h_n[i]
            for j in range(hidden):
                n_row[j] += rz_row[j] * a_h_n_row[j]
        tanh_(n_gate.reshape(-1), 0, n_active * hidden)
        for i in range(n_active):
            z_row, n_row, h_row = rz[i, hidden:], n_gate[i], h[i]
            if zoned:
                zone_row = draws_at(zone_h, position(lengths, order[i], step, reverse), order[i])
                for j in range(hidden):
                    z, n, d = z_row[j], n_row[j], zone_row[j]
                    h_row[j] = (one - d) * ((one - z) * n + z * h_row[j]) + d * h_row[j]
            else:
                for j in range(hidden):
                    z, n = z_row[j], n_row[j]
                    h_row[j] = (one - z) * n + z * h_row[j]
        if proj:
            if save:
                copy_rows(h, h_new_tape[slot], n_active)
            product_prefix(weight_hr, blas_hr, h, n_active, s, identity)
        for i in range(n_active):
            b = order[i]
            copy_(s[i], output[position(lengths, b, step, reverse), b])
    alive(identity_own)
    alive(hh_own)
    alive(a_x_own)
    return unsort(s_own, order) if proj else s0.copy(), unsort(h_own, order)


@jit
def gru_backward_loop(
    grad_output, grad_s_n, grad_h_n, weight_hh_t, blas_hh, ln_ih_gain, ln_hh_gain, weight_hr_t,
    blas_hr, h_mask, zone_h, rz_tape, n_tape, a_h_n_tape, h_prev_tape, hh_norm_tape,
    ih_norm_tape, rstd_tape, lengths, order, reverse, grad_x_proj, grad_hh, grad_s, grad_bias,
    grad_ln_gains,
):  # fmt: skip
    """Backpropagate through time; fill grad_x_proj (T, B, 3H) = dL/d(W_ih x), and in the
    tape's layout (step-major, in `order`) grad_hh (T, B, 3H) = dL/d(W_hh (m * s)) and, with a
    projection, grad_s (T, B, P) = dL/ds_t (else empty); add the float64 sums over steps and
    sequences of the vectors' gradients: grad_bias (2, 3H) dL/da^x|dL/da^h (b_ih's and LN_x's
    shift's | b_hh's and LN_h's shift's), grad_ln_gains (2, 3H) LN_x's|LN_h's gains'.
    weight_hh_t is W_hh.T (P, 3H) and weight_hr_t W_hr.T (H, P) as `product_operand` gives
    them for `blas_hh`, `blas_hr`; ln_ih_gain, ln_hh_gain (3H,). Returns (dL/ds0, dL/dh0).
    The carried gradients live in `order`, as the states in `gru_forward_loop`."""
    batch, hidden = grad_h_n.shape
    out_size = grad_output.shape[2]
    layer_norm, proj = ln_hh_gain.shape[0] > 0, weight_hr_t.shape[0] > 0
    masked, zoned = h_mask.shape[0] > 0, zone_h.shape[0] > 0
    dtype = grad_h_n.dtype
    one = dtype.type(1)  # an int literal would make float32 arithmetic float64
    identity_own = np.arange(batch)
    # every array below is unowned (as in the forward loop)
    grad_output, h_mask, zone_h = unowned(grad_output), unowned(h_mask), unowned(zone_h)
    rz_tape, n_tape, a_h_n_tape = unowned(rz_tape), unowned(n_tape), unowned(a_h_n_tape)
    h_prev_tape, hh_norm_tape = unowned(h_prev_tape), unowned(hh_norm_tape)
    ih_norm_tape, rstd_tape = unowned(ih_norm_tape), unowned(rstd_tape)
    grad_x_proj, grad_hh, grad_s = unowned(grad_x_proj), unowned(grad_hh), unowned(grad_s)
    grad_bias, grad_ln_gains = unowned(grad_bias), unowned(grad_ln_gains)
    lengths, order = unowned(lengths), unowned(order)
    ln_ih_gain, ln_hh_gain = unowned(ln_ih_gain), unowned(ln_hh_gain)
    weight_hh_t, weight_hr_t = unowned(weight_hh_t), unowned(weight_hr_t)
    grad_h_own = sort_rows(grad_h_n, order)  # (B, H): dL/dh_t, carried
    grad_s_step_own = sort_rows(grad_s_n, order) if proj else grad_h_own  # (B, P): dL/ds_t
    grad_h_from_s_own = np.zeros((batch, hidden), dtype=dtype)  # (B, H): W_hr.T dL/ds_t
    grad_masked_own = np.zeros((batch, out_size), dtype=dtype)  # (B, P): W_hh.T dL/d(W_hh m s)
    grad_x_own = np.zeros(3 * hidden, dtype=dtype)  # dL/da^x of one sequence, with layer norm
    grad_a_h_ln_own = np.zeros(3 * hidden, dtype=dtype)  # dL/da^h of one sequence, with LN
    no_zone_own = np.zeros(hidden, dtype=dtype)  # d = 0 without zoneout
    grad_h, grad_s_step = unowned(grad_h_own), unowned(grad_s_step_own)
    grad_h_from_s, grad_masked = unowned(grad_h_from_s_own), unowned(grad_masked_own)
    grad_x, grad_a_h_ln = unowned(grad_x_own), unowned(grad_a_h_ln_own)
    no_zone, identity = unowned(no_zone_own), unowned(identity_own)
    n_active = 0
    for step in range(lengths[order[0]] - 1, -1, -1):
        n_active = running(lengths, order, step, n_active)
        for i in range(n_active):
            b = order[i]
            carried, upstream = grad_s_step[i], grad_output[position(lengths, b, step, reverse), b]
            for k in range(out_size):
                carried[k] += upstream[k]
        if proj:
            copy_rows(grad_s_step, grad_s[step], n_active)
            product_prefix(weight_hr_t, blas_hr, grad_s_step, n_active, grad_h_from_s, identity)
        rz, n_gate, a_h_n, h_prev = rz_tape[step], n_tape[step], a_h_n_tape[step], h_prev_tape[step]
        for i in range(n_active):
            b = order[i]
            t = position(lengths, b, step, reverse)
            grad_h_row, r_row, z_row = grad_h[i], rz[i, :hidden], rz[i, hidden:]
            n_row, a_h_n_row, h_prev_row = n_gate[i], a_h_n[i], h_prev[i]
            if proj:
                from_s = grad_h_from_s[i]
                for j in range(hidden):
                    grad_h_row[j] += from_s[j]
            grad_x_row = grad_x if layer_norm else grad_x_proj[t, b]  # dL/da^x
            grad_a_h = grad_a_h_ln if layer_norm else grad_hh[step, i]  # dL/da^h
            zone_row = draws_at(zone_h, t, b) if zoned else no_zone
            for j in range(hidden):  # through h_t = (1-d) ((1-z) n + z h_{t-1}) + d h_{t-1}
                r, z, n, d = r_row[j], z_row[j], n_row[j], zone_row[j]
                dh_hat = (one - d) * grad_h_row[j]
                da_n = dh_hat * (one - z) * (one - n * n)
                da_r = da_n * a_h_n_row[j] * r * (one - r)
                da_z = dh_hat * (h_prev_row[j] - n) * z * (one - z)
                grad_x_row[j] = grad_a_h[j] = da_r
                grad_x_row[hidden + j] = grad_a_h[hidden + j] = da_z
                grad_x_row[2 * hidden + j] = da_n
                grad_a_h[2 * hidden + j] = da_n * r
                grad_h_row[j] = d * grad_h_row[j] + dh_hat * z
            for j in range(3 * hidden):
                grad_bias[0, j] += grad_x_row[j]
                grad_bias[1, j] += grad_a_h[j]
            if layer_norm:  # through a^h = LN_h(W_hh (m * s)) + b_hh, a^x = LN_x(W_ih x) + b_ih
                rstd = rstd_tape[step, i]
                layer_norm_gates_backward(
                    grad_a_h, ln_hh_gain, hh_norm_tape[step, i], rstd[:3], 3, grad_ln_gains[1],
                    grad_hh[step, i],
                )  # fmt: skip
                layer_norm_gates_backward(
                    grad_x, ln_ih_gain, ih_norm_tape[step, i], rstd[3:], 3, grad_ln_gains[0],
                    grad_x_proj[t, b],
                )  # fmt: skip
        product_prefix(weight_hh_t, blas_hh, grad_hh[step], n_active, grad_masked, identity)
        for i in range(n_active):
            carried, grad_masked_row = grad_s_step[i], grad_masked[i]
            if proj:
                carried[:] = 0
            if masked:
                mask_row = h_mask[order[i]]
                for k in range(out_size):
                    carried[k] += mask_row[k] * grad_masked_row[k]
            else:
                for k in range(out_size):
                    carried[k] += grad_masked_row[k]
    alive(identity_own)
    alive(grad_h_from_s_own)
    alive(grad_masked_own)
    alive(no_zone_own)
    alive(grad_x_own)
    alive(grad_a_h_ln_own)
    grad_s0 = unsort(grad_s_step_own, order) if proj else grad_s_n.copy()
    return grad_s0, unsort(grad_h_own, order)


def _gru_options(static: Static, ln_g: Tensor | None, weight_hr: Tensor | None) -> tuple:
    """(layer_norm, proj, masked), `gru_tape`'s options."""
    return ln_g is not None, weight_hr is not None, static.h_mask is not None


def gru_forward(static: Static, tensors: tuple, save: bool) -> tuple[tuple, Tensor]:
    """(((output (T, B, P), s_n, h_n) or (output, h_n)), tape) for tensors (x_proj = W_ih x, s0,
    h0, weight_hh, bias_ih, bias_hh, ln_ih_weight, ln_ih_bias, ln_hh_weight, ln_hh_bias,
    weight_hr), None where an option is off. The tape is flat (`gru_tape` has its parts)."""
    x_proj, s0, h0, weight_hh, b_ih, b_hh, ln_ih_g, ln_ih_b, ln_hh_g, ln_hh_b, weight_hr = tensors
    steps, batch, _ = x_proj.shape
    hidden, out_size = h0.shape[1], weight_hh.shape[1]
    options = _gru_options(static, ln_hh_g, weight_hr)
    saved_steps = steps if save else 1
    new = x_proj.new_zeros if static.padded else x_proj.new_empty  # padding must read as zeros
    output = new(steps, batch, out_size)
    tape = tape_buffer(
        gru_tape(None, saved_steps, batch, hidden, out_size, options)["size"], x_proj, static.padded
    )
    parts = gru_tape(tape, saved_steps, batch, hidden, out_size, options)
    s_n, h_n = gru_forward_loop(
        numpy_view(x_proj), optional_view(s0, 2, x_proj), numpy_view(h0),
        *operand(weight_hh, batch, x_proj), numpy_view(bias_or_zeros(b_ih, 3 * hidden, x_proj)),
        numpy_view(bias_or_zeros(b_hh, 3 * hidden, x_proj)),
        optional_view(pair(ln_ih_g, ln_ih_b), 2, x_proj),
        optional_view(pair(ln_hh_g, ln_hh_b), 2, x_proj), *operand(weight_hr, batch, x_proj),
        optional_view(static.h_mask, 2, x_proj), optional_view(static.zone_h, 3, x_proj),
        static.lengths, static.order, static.reverse, static.eps, output.numpy(),
        *(part.numpy() for part in parts.values()), save,
    )  # fmt: skip
    h_n = torch.from_numpy(h_n)
    outputs = (output, torch.from_numpy(s_n), h_n) if weight_hr is not None else (output, h_n)
    return outputs, tape


def gru_backward(static: Static, tensors: tuple, saved: tuple, grads: tuple) -> list:
    """The gradients of `gru_forward`'s tensors, from the upstream gradients and `saved` =
    (outputs..., tape). Those of the parameters that are vectors are the loop's sums; the
    matrices' are one product each over the tape."""
    x_proj, s0, h0, weight_hh, _, _, ln_ih_g, _, ln_hh_g, _, weight_hr = tensors
    steps, batch, _ = x_proj.shape
    hidden, out_size = h0.shape[1], weight_hh.shape[1]
    layer_norm, proj, masked = options = _gru_options(static, ln_hh_g, weight_hr)
    tape = gru_tape(saved[-1], steps, batch, hidden, out_size, options)
    grad_output, grad_s_n, grad_h_n = grads if proj else (grads[0], None, grads[1])
    new = x_proj.new_zeros if static.padded else x_proj.new_empty
    grad_x_proj = new(steps, batch, 3 * hidden)
    grad_hh = new(steps, batch, 3 * hidden)  # dL/d(W_hh (m * s)), in the tape's layout
    grad_s = new(steps, batch, out_size) if proj else x_proj.new_empty(0, 0, 0)  # dL/ds_t, too
    sums = {  # the loop's float64 sums of the vectors' gradients
        "bias": torch.zeros(2, 3 * hidden, dtype=torch.float64),  # dL/da^x|dL/da^h
        "ln_gains": torch.zeros(2, 3 * hidden, dtype=torch.float64),  # LN_x's|LN_h's
    }
    read = ("rz", "n", "a_h_n", "h_prev", "hh_norm", "ih_norm", "rstd")
    grad_s0, grad_h0 = gru_backward_loop(
        numpy_view(grad_output), optional_view(grad_s_n, 2, x_proj), numpy_view(grad_h_n),
        *operand(weight_hh.t(), batch, x_proj), optional_view(ln_ih_g, 1, x_proj),
        optional_view(ln_hh_g, 1, x_proj),
        *operand(None if weight_hr is None else weight_hr.t(), batch, x_proj),
        optional_view(static.h_mask, 2, x_proj), optional_view(static.zone_h, 3, x_proj),
        *(tape[name].numpy() for name in read), static.lengths, static.order, static.reverse,
        grad_x_proj.numpy(), grad_hh.numpy(), grad_s.numpy(),
        *(total.numpy() for total in sums.values()),
    )  # fmt: skip
    grad_bias, grad_ln_gains = (total.to(x_proj.dtype) for total in sums.values())
    s_in = tape["s"] if proj or masked else tape["h_prev"]  # (T, B, P): m * s_{t-1}
    result = [
        grad_x_proj,
        torch.from_numpy(grad_s0) if proj else None,
        torch.from_numpy(grad_h0),
        weight_grads(grad_hh, s_in, True, False)[0],
        grad_bias[0],  # b_ih
        grad_bias[1],  # b_hh
    ]
    if layer_norm:
        result += [grad_ln_gains[0], grad_bias[0], grad_ln_gains[1], grad_bias[1]]
    else:
        result += [None] * 4
    result.append(weight_grads(grad_s, tape["h_new"], True, False)[0] if proj else None)
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
    zero, one = h0.dtype.type(0), h0.dtype.type(1)  # int literals would make float64 math
    # the caller holds the arguments: their rows below take no reference counts (`unowned`)
    x_proj, h_mask, zone_h = unowned(x_proj), unowned(h_mask), unowned(zone_h)
    output, tape = unowned(output), unowned(tape)
    lengths, order, bias_hh = unowned(lengths), unowned(order), unowned(bias_hh)
    weight_hh, weight_hr = unowned(weight_hh), unowned(weight_hr)
    h_own = h0.copy()
    masked_h_own = np.zeros_like(h0)  # (B, P): m * h
    pre_own = np.zeros((batch, hidden), dtype=h0.dtype)  # (B, H)
    h_hat_own = np.zeros_like(h0) if proj else pre_own  # (B, P)
    hh_in_own, hh_out_own = product_buffers(weight_hh, blas_hh, batch, out_size)
    hr_in_own, hr_out_own = product_buffers(weight_hr, blas_hr, batch if proj else 0, hidden)
    # the local arrays unowned as well, kept until the loop ends (`alive`)
    h, masked_h = unowned(h_own), unowned(masked_h_own)
    pre, h_hat = unowned(pre_own), unowned(h_hat_own)
    hh_in, hh_out = unowned(hh_in_own), unowned(hh_out_own)
    hr_in, hr_out = unowned(hr_in_own), unowned(hr_out_own)
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
            copy_(masked_h[b], rec[hidden:])
            for j in range(hidden):
                pre[b, j] = x_proj[t, b, j] + (pre[b, j] + bias_hh[j])
                if relu:
                    pre[b, j] = max(pre[b, j], zero)
            if not relu:
                tanh_(pre[b], 0, hidden)
            copy_(pre[b], rec[:hidden])
        if proj:
            for i in range(n_active):
                h_hat[order[i]] = 0
            add_product(weight_hr, blas_hr, pre, order, n_active, h_hat, hr_in, hr_out)
        for i in range(n_active):
            b = order[i]
            t = position(lengths, b, step, reverse)
            for k in range(out_size):
                d = draws_at(zone_h, t, b)[k] if zoned else zero
                h[b, k] = (one - d) * h_hat[b, k] + d * h[b, k]
                output[t, b, k] = h[b, k]
    alive(masked_h_own)
    alive(pre_own)
    alive(h_hat_own)
    alive(hh_in_own)
    alive(hh_out_own)
    alive(hr_in_own)
    alive(hr_out_own)
    return h_own


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
    zero, one = grad_h_n.dtype.type(0), grad_h_n.dtype.type(1)  # int literals: float64 math
    # the caller holds the arguments: their rows below take no reference counts (`unowned`)
    grad_output, h_mask, zone_h = unowned(grad_output), unowned(h_mask), unowned(zone_h)
    tape, grads = unowned(tape), unowned(grads)
    lengths, order = unowned(lengths), unowned(order)
    weight_hh_t, weight_hr_t = unowned(weight_hh_t), unowned(weight_hr_t)
    grad_h_own = grad_h_n.copy()
    grad_act_own = np.zeros((batch, hidden), dtype=grad_h_own.dtype)  # (B, H)
    grad_h_hat_own = np.zeros_like(grad_h_own) if proj else grad_act_own  # (B, P)
    grad_masked_own = np.zeros_like(grad_h_own)  # (B, P): dL/d(m * h)
    hh_in_own, hh_out_own = product_buffers(weight_hh_t, blas_hh, batch, hidden)
    hr_in_own, hr_out_own = product_buffers(weight_hr_t, blas_hr, batch if proj else 0, out_size)
    # the local arrays unowned as well, kept until the loop ends (`alive`)
    grad_h, grad_act = unowned(grad_h_own), unowned(grad_act_own)
    grad_h_hat, grad_masked = unowned(grad_h_hat_own), unowned(grad_masked_own)
    hh_in, hh_out = unowned(hh_in_own), unowned(hh_out_own)
    hr_in, hr_out = unowned(hr_in_own), unowned(hr_out_own)
    n_active = 0
    for step in range(lengths[order[0]] - 1, -1, -1):
        n_active = running(lengths, order, step, n_active)
        for i in range(n_active):
            b = order[i]
            t = position(lengths, b, step, reverse)
            for k in range(out_size):
                dh = grad_h[b, k] + grad_output[t, b, k]
                d = draws_at(zone_h, t, b)[k] if zoned else zero
                grad_h[b, k] = d * dh
                grad_h_hat[b, k] = (one - d) * dh
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
                    grad_act[b, j] = grad_act[b, j] if act > 0 else zero
                else:
                    grad_act[b, j] = grad_act[b, j] * (one - act * act)
                grads[t, b, j] = grad_act[b, j]
            grad_masked[b] = 0
        add_product(weight_hh_t, blas_hh, grad_act, order, n_active, grad_masked, hh_in, hh_out)
        for i in range(n_active):
            b = order[i]
            for k in range(out_size):
                grad_h[b, k] += h_mask[b, k] * grad_masked[b, k] if masked else grad_masked[b, k]
    alive(grad_act_own)
    alive(grad_h_hat_own)
    alive(grad_masked_own)
    alive(hh_in_own)
    alive(hh_out_own)
    alive(hr_in_own)
    alive(hr_out_own)
    return grad_h_own


def elman_forward(static: Static, tensors: tuple, save: bool) -> tuple[tuple, Tensor]:
    """((output (T, B, P), h_n), tape) for tensors (x_proj, h0, weight_hh, bias_hh, weight_hr)."""
    x_proj, h0, weight_hh, bias_hh, weight_hr = tensors
    steps, batch, hidden = x_proj.shape
    out_size = h0.shape[1]
    new = x_proj.new_zeros if static.padded else x_proj.new_empty
    output = new(steps, batch, out_size)
    saved_steps = steps if save else 1
    tape = tape_buffer(saved_steps * batch * (hidden + out_size), x_proj, static.padded).view(
        saved_steps, batch, hidden + out_size
    )
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
    x_proj = packed_linear(x, cell.weight_ih)  # (T, B, G*H)
    lstm = isinstance(cell, VariantLSTMCell)
    if cell.bias_ih is not None and not lstm and not isinstance(cell, VariantGRUCell):
        x_proj = x_proj + cell.bias_ih  # Elman's; the LSTM and GRU loops add b_ih (and LN_x)
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
            x_proj, s0, h0, weight_hh, cell.bias_ih, cell.bias_hh, cell.ln_ih_weight,
            cell.ln_ih_bias, cell.ln_hh_weight, cell.ln_hh_bias, cell.weight_hr,
        )  # fmt: skip
        output, *final = run(GRU_LOOPS, static, tensors)
        return output, tuple(final) if cell.proj_size else final[0]
    tensors = (x_proj, state, weight_hh, cell.bias_hh, cell.weight_hr)
    output, h_n = run(ELMAN_LOOPS, static, tensors)
    return output, h_n
