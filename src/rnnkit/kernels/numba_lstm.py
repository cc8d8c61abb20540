"""The recurrence of a variant LSTM layer direction as one compiled loop over time, forward and
backward (Numba, CPU): layer norm, peepholes, projection, recurrent dropout and zoneout.

The equations are `rnnkit.variants.VariantLSTMCell`'s (gate order i|f|g|o). What does not
depend on the previous step is done in torch before the loop, under autograd
(`rnnkit.kernels.numba_variants`): W_ih x for all steps, the weight-dropped W_hh, and the
random masks. The loop runs the rest, per step and sequence:

    s     = m * h_{t-1}                                  (m: recurrent-dropout mask, or 1)
    a     = (LN_x(W_ih x_t) + b_ih) + (LN_h(W_hh s) + b_hh)
    i, f  = sigmoid(a_i + w_ci * c_{t-1}), sigmoid(a_f + w_cf * c_{t-1})
    g     = tanh(a_g)
    c_hat = f * c_{t-1} + i * g
    o     = sigmoid(a_o + w_co * c_hat)
    h_hat = W_hr (o * tanh(LN_c(c_hat)))                 (W_hr: the projection, or none)
    c_t   = (1 - d^c) * c_hat + d^c * c_{t-1}            (d: zoneout's draws, or its rate in eval)
    h_t   = (1 - d^h) * h_hat + d^h * h_{t-1}

An option that is off arrives as an empty array. The states live in the order of the lengths
(longest first), so the sequences that run at a step are rows 0..n-1, and the tape that the
forward pass writes for the backward pass is laid out the same way: field after field (the
gates, c before and after, the normalised vectors, s, ...), each (T, B, width) indexed by step
and row. So a step's products are one gemm straight from and into those rows, each
nonlinearity one call over one field's rows, and only x_proj, the output and their gradients
are read or written per sequence at its own time. The backward loop carries dL/dh and dL/dc
from the last step to the first, writes per step the gradients from which torch multiplies
out W_ih's, W_hh's and W_hr's (the last two in the tape's layout, matching its s and
o * tanh(LN_c(c_hat))), and sums those of the vectors (biases, LN's gains and shifts,
peepholes) itself.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from rnnkit.kernels._compiled_sequence import Loops, Static, pair
from rnnkit.kernels._numba_common import (
    PREFETCH_AHEAD,
    alive,
    bias_or_zeros,
    copy_,
    copy_rows,
    draws_at,
    jit,
    jit_inline,
    numpy_view,
    offset,
    optional_view,
    position,
    prefetch_block,
    prefetch_step,
    running,
    sigmoid_,
    sort_rows,
    tanh_,
    unowned,
    unsort,
    weight_grads,
)
from rnnkit.kernels._numba_gemm import add_outer_products
from rnnkit.kernels._numba_products import operand, product_prefix
from rnnkit.memory import tape_buffer

# The tape's fields, each (T, B, width): i|f (2H), g, o, c_{t-1}, c_hat, tanh(LN_c(c_hat)) (H
# each), s (P); with layer norm LN_c's normalised c_hat (H), LN_h's normalised W_hh s (4H) and
# 13 statistics: the 1/std of LN_h's 4 gate groups, of LN_c, of LN_x's 4, and LN_x's 4 means
# (the backward pass normalises W_ih x again from x_proj rather than keep 4H more per row).
TAPE_FIELDS = ("i_f", "g", "o", "c_prev", "c_hat", "tanh_c", "s", "c_norm", "hh_norm", "stats")


@jit
def tape_widths(hidden, out_size, layer_norm):
    """The widths of `TAPE_FIELDS` (those of layer norm 0 without it)."""
    ln = hidden if layer_norm else 0
    stats = 13 if layer_norm else 0
    return (2 * hidden, hidden, hidden, hidden, hidden, hidden, out_size, ln, 4 * ln, stats)


@jit
def tape_fields(tape, batch, hidden, out_size, layer_norm):
    """The fields of a flat tape (T * B * the widths' sum numbers, field after field) as a list
    of (T, B, width) views, in the order of `TAPE_FIELDS`."""
    widths = tape_widths(hidden, out_size, layer_norm)
    total = 0
    for width in widths:
        total += width
    rows = len(tape) // total  # T * B
    fields = []
    start = 0
    for width in widths:
        steps = rows // batch
        fields.append(tape[rows * start : rows * (start + width)].reshape(steps, batch, width))
        start += width
    return fields


# The loops below index a gate group k of a whole vector as offset(k * H, j), unsigned: a signed
# index that LLVM cannot prove >= 0 keeps Numba's negative-index wraparound, which vectorises as
# gathers (3-7x slower), and a view of the group per loop costs two atomic reference counts.


@jit_inline
def _finish_moments(shift, total, squares, inv_size, eps, mean, mean_at, rstd, rstd_at):
    """mean[mean_at] and rstd[rstd_at] from the sums of d = v - shift over a group."""
    mean_d = total * inv_size
    mean[mean_at] = shift + mean_d
    # 1 / sqrt in rstd's own dtype: for float32, a shorter chain of latencies per group
    variance = rstd.dtype.type(max(squares * inv_size - mean_d * mean_d, 0.0) + eps)
    rstd[rstd_at] = rstd.dtype.type(1) / np.sqrt(variance)


@jit_inline
def group_moments(v, groups, mean, mean_at, rstd, rstd_at, eps):
    """mean[mean_at + k] and rstd[rstd_at + k] = 1 / sqrt(var + eps) of v (G*H,)'s group k of
    `groups` (biased variance, as torch's layer norm) in one pass: float64 sums of
    v - v[first of the group], whose shift keeps var = E[d^2] - E[d]^2 from cancelling."""
    size = len(v) // groups
    inv_size = 1.0 / size
    for k in range(groups):
        start = k * size
        shift = np.float64(v[start])
        total = 0.0
        squares = 0.0
        for j in range(size):
            d = np.float64(v[offset(start, j)]) - shift
            total += d
            squares += d * d
        _finish_moments(shift, total, squares, inv_size, eps, mean, mean_at + k, rstd, rstd_at + k)


@jit_inline
def gate_moments(v, mean, mean_at, rstd, rstd_at, eps):
    """`group_moments` of v (4H,)'s four gate groups in one pass over j: the groups' sums are
    four independent chains, where one group after the other waits on each group's sums. Summed
    in v's dtype over as many vector lanes as it has (float64 sums, for float32 a conversion of
    every number, took 4-5% more of the loop's time for no error measurable at the output)."""
    size = len(v) // 4
    s0, s1, s2, s3 = v[0], v[size], v[2 * size], v[3 * size]
    t0 = t1 = t2 = t3 = q0 = q1 = q2 = q3 = v.dtype.type(0)
    for j in range(size):
        d0 = v[j] - s0
        d1 = v[offset(size, j)] - s1
        d2 = v[offset(2 * size, j)] - s2
        d3 = v[offset(3 * size, j)] - s3
        t0 += d0
        t1 += d1
        t2 += d2
        t3 += d3
        q0 += d0 * d0
        q1 += d1 * d1
        q2 += d2 * d2
        q3 += d3 * d3
    inv_size = 1.0 / size
    _finish_moments(s0, t0, q0, inv_size, eps, mean, mean_at, rstd, rstd_at)
    _finish_moments(s1, t1, q1, inv_size, eps, mean, mean_at + 1, rstd, rstd_at + 1)
    _finish_moments(s2, t2, q2, inv_size, eps, mean, mean_at + 2, rstd, rstd_at + 2)
    _finish_moments(s3, t3, q3, inv_size, eps, mean, mean_at + 3, rstd, rstd_at + 3)


@jit_inline
def normed_gate_inputs(
    x_row, a_row, stats, hh_mean, gain_x, gain_h, bias, hh_normed, save, i_f_row, g_row, o_row
):
    """The gates' inputs LN_x(W_ih x) + LN_h(W_hh s) + bias into i_f_row (2H,), g_row and
    o_row (H,), from x_row = W_ih x and a_row = W_hh s (4H,), a tape row's `stats` (LN_h's
    1/stds at 0-3, LN_x's at 5-8, LN_x's means at 9-12), LN_h's means, both LN gains (4H,) and
    bias = both LN shifts + b_ih + b_hh; with `save` (training), LN_h's normalised W_hh s into
    hh_normed (4H,) for the backward pass (inference skips the store: 0.96 of the loop's time).
    """
    size = len(a_row) // 4
    for k in range(4):
        out, out_at = (i_f_row, k * size) if k < 2 else (g_row if k == 2 else o_row, 0)
        start = k * size
        mean_x, rstd_x, rstd_h = stats[9 + k], stats[5 + k], stats[k]
        mean_h = a_row.dtype.type(hh_mean[k])
        for j in range(size):
            u = offset(start, j)
            normed = (a_row[u] - mean_h) * rstd_h
            if save:
                hh_normed[u] = normed
            value = (x_row[u] - mean_x) * rstd_x * gain_x[u] + normed * gain_h[u] + bias[u]
            out[offset(out_at, j)] = value


@jit_inline
def add_biases(x, b_ih, a, b_hh, out):
    """out = (x + b_ih) + (a + b_hh) over out's length (the others may be longer), rounded as
    torch adds a gate's inputs."""
    for j in range(len(out)):
        out[j] = (x[j] + b_ih[j]) + (a[j] + b_hh[j])


@jit_inline
def layer_norm_backward(grad, v, mean, scale, gain, rstd, grad_gain, out):
    """out = dL/dv through y = normed * gain + shift from grad = dL/dy, per group k of
    len(rstd): normed = (v - mean[k]) * scale[k] (LN's normalised v; mean 0 and scale 1 where
    v is that already) and dL/dv = rstd[k] * (q - mean(q) - normed * mean(q * normed)) with
    q = grad * gain. Add grad * normed to grad_gain (float64)."""
    size = len(v) // len(rstd)
    for k in range(len(rstd)):
        start = k * size
        mean_k, scale_k = mean[k], scale[k]
        mean_q = 0.0
        mean_qn = 0.0
        for j in range(size):
            u = offset(start, j)
            normed = (v[u] - mean_k) * scale_k
            grad_gain[u] += grad[u] * normed
            q = grad[u] * gain[u]
            mean_q += q
            mean_qn += q * normed
        mean_q_k = out.dtype.type(mean_q / size)
        mean_qn_k = out.dtype.type(mean_qn / size)
        rstd_k = rstd[k]
        for j in range(size):
            u = offset(start, j)
            out[u] = rstd_k * (grad[u] * gain[u] - mean_q_k - (v[u] - mean_k) * scale_k * mean_qn_k)


@jit
def lstm_forward_loop(
    x_proj, h0, c0, weight_hh, blas_hh, bias_ih, bias_hh, ln_ih, ln_hh, peephole, ln_c,
    weight_hr, blas_hr, h_mask, zone_h, zone_c, lengths, order, reverse, eps, output, tape, save,
):  # fmt: skip
    """Run the recurrence over x_proj (T, B, 4H) = W_ih x from h0 (B, P), c0 (B, H); fill output
    (T, B, P) and the tape (`tape_fields`; T steps, or one of scratch without `save`).
    bias_ih, bias_hh (4H,); ln_ih, ln_hh (2, 4H) and ln_c (2, H) are gain|shift, peephole (3, H)
    w_ci|w_cf|w_co, h_mask (B, P), zone_h (T, B, P), zone_c (T, B, H) (or (1, 1, .), broadcast:
    `draws_at`); weight_hh (4H, P) and
    weight_hr (P, H) as `product_operand` gives them for `blas_hh`, `blas_hr`.
    Returns (h_n, c_n). Step k of the tape is the k-th from the start in time (the sequences'
    last steps are its first in reverse); its row i is sequence order[i]."""
    batch, out_size = h0.shape
    hidden = c0.shape[1]
    layer_norm, peep = ln_hh.shape[0] > 0, peephole.shape[0] > 0
    proj, masked = weight_hr.shape[0] > 0, h_mask.shape[0] > 0
    zoned_h, zoned_c = zone_h.shape[0] > 0, zone_c.shape[0] > 0
    # every array below is unowned (the caller holds the arguments; h_own and c_own are
    # returned, the other local arrays kept until the loop ends: `alive`): its views, and its
    # passing to the inlined helpers (an assignment), take no reference counts
    x_proj, output, tape, ln_c = unowned(x_proj), unowned(output), unowned(tape), unowned(ln_c)
    peephole, h_mask = unowned(peephole), unowned(h_mask)
    bias_ih, bias_hh = unowned(bias_ih), unowned(bias_hh)
    zone_h, zone_c = unowned(zone_h), unowned(zone_c)
    lengths, order, ln_ih, ln_hh = unowned(lengths), unowned(order), unowned(ln_ih), unowned(ln_hh)
    weight_hh, weight_hr = unowned(weight_hh), unowned(weight_hr)
    fields = tape_fields(tape, batch, hidden, out_size, layer_norm)
    i_f, g, o, c_prev, c_hat = fields[0], fields[1], fields[2], fields[3], fields[4]
    tanh_c, s_tape, c_norm, hh_norm, stats = fields[5], fields[6], fields[7], fields[8], fields[9]
    dtype = h0.dtype
    one = dtype.type(1)  # an int literal would make float32 arithmetic float64
    identity_own = np.arange(batch)
    identity = unowned(identity_own)
    h_own, c_own = sort_rows(h0, order), sort_rows(c0, order)  # (B, P), (B, H): row i is order[i]'s
    h, c = unowned(h_own), unowned(c_own)
    a_own = np.zeros((batch, 4 * hidden), dtype=dtype)  # (B, 4H): W_hh s, then a
    a = unowned(a_own)
    bias_own = bias_ih + bias_hh  # (4H,): with layer norm all that is added to the gates' inputs
    if layer_norm:
        bias_own += ln_ih[1] + ln_hh[1]
    hh_mean_own = np.zeros(4)  # LN_h's means of one sequence
    bias, hh_mean = unowned(bias_own), unowned(hh_mean_own)
    gain_x, gain_h = (ln_ih[0], ln_hh[0]) if layer_norm else (bias, bias)  # LN's gains
    h_hat_own = np.zeros_like(h) if zoned_h else h  # (B, P): W_hr u
    u_own = np.zeros((batch, hidden), dtype=dtype) if proj else h_hat_own  # (B, H): o * tanh(..)
    h_hat, u = unowned(h_hat_own), unowned(u_own)  # u: o * tanh(LN_c(c_hat))
    # the fields the nonlinearities run over, flat: a step's rows are one run of them, reached
    # by offsets (a reshape of the step's block each step calls into Numba's runtime)
    i_f_flat, g_flat, o_flat = i_f.reshape(-1), g.reshape(-1), o.reshape(-1)
    y_flat = tanh_c.reshape(-1)
    u_flat = u.reshape(-1)
    last = lengths[order[0]]
    n = batch
    for step in range(last):
        n = running(lengths, order, step, n)
        prefetch_step(x_proj, lengths, order, n, step + PREFETCH_AHEAD, reverse)
        k = (last - 1 - step if reverse else step) if save else 0
        s = s_tape[k] if save or masked else h  # (B, P)
        if masked:
            for i in range(n):
                h_row, s_row, mask_row = h[i], s[i], h_mask[order[i]]
                for j in range(out_size):
                    s_row[j] = h_row[j] * mask_row[j]
        elif save:
            copy_rows(h, s, n)
        product_prefix(weight_hh, blas_hh, s, n, a, identity)
        for i in range(n):
            b = order[i]
            x_row, a_row, c_row = x_proj[position(lengths, b, step, reverse), b], a[i], c[i]
            i_f_row, g_row, o_row = i_f[k, i], g[k, i], o[k, i]
            i_row, f_row = i_f_row[:hidden], i_f_row[hidden:]
            if layer_norm:
                r = stats[k, i]
                gate_moments(x_row, r, 9, r, 5, eps)
                gate_moments(a_row, hh_mean, 0, r, 0, eps)
                normed_gate_inputs(
                    x_row, a_row, r, hh_mean, gain_x, gain_h, bias, hh_norm[k, i], save,
                    i_f_row, g_row, o_row,
                )  # fmt: skip
            else:  # a = (W_ih x + b_ih) + (W_hh s + b_hh), straight into the gates' fields
                add_biases(x_row, bias_ih, a_row, bias_hh, i_f_row)  # i|f: the first 2H
                g_at, o_at = 2 * hidden, 3 * hidden
                add_biases(x_row[g_at:], bias_ih[g_at:], a_row[g_at:], bias_hh[g_at:], g_row)
                add_biases(x_row[o_at:], bias_ih[o_at:], a_row[o_at:], bias_hh[o_at:], o_row)
            if peep:
                w_ci, w_cf = peephole[0], peephole[1]
                for j in range(hidden):
                    i_row[j] += w_ci[j] * c_row[j]
                    f_row[j] += w_cf[j] * c_row[j]
        at = k * batch * hidden  # step k's first number in a field of width H
        sigmoid_(i_f_flat, 2 * at, 2 * (at + n * hidden))
        tanh_(g_flat, at, at + n * hidden)
        if save:
            copy_rows(c, c_prev[k], n)
        for i in range(n):
            i_f_row, g_row, c_row, c_hat_row = i_f[k, i], g[k, i], c[i], c_hat[k, i]
            y_row = tanh_c[k, i]  # tanh's input, then tanh(LN_c(c_hat))
            i_row, f_row = i_f_row[:hidden], i_f_row[hidden:]
            for j in range(hidden):
                c_hat_row[j] = f_row[j] * c_row[j] + i_row[j] * g_row[j]
            if peep:
                o_row, w_co = o[k, i], peephole[2]
                for j in range(hidden):
                    o_row[j] += w_co[j] * c_hat_row[j]
            if layer_norm:
                normed, gain, shift = c_norm[k, i], ln_c[0], ln_c[1]
                group_moments(c_hat_row, 1, hh_mean, 0, stats[k, i], 4, eps)
                mean, rstd = dtype.type(hh_mean[0]), stats[k, i, 4]
                for j in range(hidden):
                    n_j = (c_hat_row[j] - mean) * rstd
                    normed[j] = n_j
                    y_row[j] = n_j * gain[j] + shift[j]
            else:
                copy_(c_hat_row, y_row)
            if zoned_c:
                zone_row = draws_at(zone_c, position(lengths, order[i], step, reverse), order[i])
                for j in range(hidden):
                    d = zone_row[j]
                    c_row[j] = (one - d) * c_hat_row[j] + d * c_row[j]
            else:
                copy_(c_hat_row, c_row)
        sigmoid_(o_flat, at, at + n * hidden)
        tanh_(y_flat, at, at + n * hidden)
        for j in range(n * hidden):
            u_flat[j] = o_flat[offset(at, j)] * y_flat[offset(at, j)]
        if proj:
            product_prefix(weight_hr, blas_hr, u, n, h_hat, identity)
        for i in range(n):
            b = order[i]
            t = position(lengths, b, step, reverse)
            h_row = h[i]
            if zoned_h:
                h_hat_row, zone_row = h_hat[i], draws_at(zone_h, t, b)
                for j in range(out_size):
                    d = zone_row[j]
                    h_row[j] = (one - d) * h_hat_row[j] + d * h_row[j]
            copy_(h_row, output[t, b])
    alive(identity_own)
    alive(a_own)
    alive(bias_own)
    alive(hh_mean_own)
    alive(h_hat_own)
    alive(u_own)
    return unsort(h_own, order), unsort(c_own, order)


@jit
def lstm_backward_loop(
    x_proj, grad_output, grad_h_n, grad_c_n, weight_hh_t, blas_hh, ln_ih_gain, ln_hh_gain,
    peephole, ln_c_gain, weight_hr_t, blas_hr, h_mask, zone_h, zone_c, tape, lengths, order,
    reverse, grad_x_proj, grad_hh, grad_h_hat, grad_bias, grad_ln_gains, grad_ln_c, grad_peephole,
    grad_w_hh_t,
):  # fmt: skip
    """Backpropagate through time from the forward pass's x_proj (T, B, 4H) = W_ih x and
    tape; fill grad_x_proj (T, B, 4H) = dL/d(W_ih x) and, with a projection, grad_h_hat
    (T, B, P) = dL/dh_hat in the tape's layout (step k, row i; else empty). grad_hh is
    dL/d(W_hh s) in the tape's layout, (T, B, 4H), or (1, B, 4H), a step's scratch, where the
    loop sums dL/dW_hh itself; empty where it is grad_x_proj: without layer norm
    dL/d(W_hh s) = dL/da = dL/d(W_ih x), and without padding the tape's layout is x_proj's.
    Add the sums over steps and sequences of the small parameters' gradients (float64) to
    grad_bias (4H,) = dL/da (b_ih's, b_hh's and both LN shifts'), grad_ln_gains (2, 4H)
    LN_x's|LN_h's gains', grad_ln_c (2, H) gain|shift and grad_peephole (3, H); and, unless it
    is empty, to grad_w_hh_t (P, 4H) dL/dW_hh.T, the sum of s outer dL/d(W_hh s) over the
    steps' rows, a step at a time (`add_outer_products`, `SUMS_W_HH_IN_LOOP`). weight_hh_t is
    W_hh.T (P, 4H) and weight_hr_t W_hr.T (H, P) as `product_operand` gives them for
    `blas_hh`, `blas_hr`; ln_ih_gain, ln_hh_gain (4H,) and ln_c_gain (H,) are LN's gains.
    Returns (dL/dh0, dL/dc0). The carried gradients live in `order`, as the states in
    `lstm_forward_loop`."""
    batch, out_size = grad_h_n.shape
    hidden = grad_c_n.shape[1]
    layer_norm, peep = ln_hh_gain.shape[0] > 0, peephole.shape[0] > 0
    proj, masked = weight_hr_t.shape[0] > 0, h_mask.shape[0] > 0
    zoned_h, zoned_c = zone_h.shape[0] > 0, zone_c.shape[0] > 0
    # the caller holds the arguments: unowned, their views and their passing to the inlined
    # helpers take no reference counts (as in the forward loop)
    x_proj, grad_output, tape = unowned(x_proj), unowned(grad_output), unowned(tape)
    grad_x_proj, grad_hh, grad_h_hat = unowned(grad_x_proj), unowned(grad_hh), unowned(grad_h_hat)
    h_mask, zone_h, zone_c = unowned(h_mask), unowned(zone_h), unowned(zone_c)
    peephole, grad_ln_gains = unowned(peephole), unowned(grad_ln_gains)
    grad_ln_c, grad_peephole = unowned(grad_ln_c), unowned(grad_peephole)
    lengths, order, grad_bias = unowned(lengths), unowned(order), unowned(grad_bias)
    weight_hh_t, weight_hr_t = unowned(weight_hh_t), unowned(weight_hr_t)
    grad_w_hh_t = unowned(grad_w_hh_t)
    ln_ih_gain, ln_hh_gain, ln_c_gain = unowned(ln_ih_gain), unowned(ln_hh_gain), unowned(ln_c_gain)
    fields = tape_fields(tape, batch, hidden, out_size, layer_norm)
    i_f, g, o, c_prev, c_hat = fields[0], fields[1], fields[2], fields[3], fields[4]
    tanh_c, s_tape, c_norm, hh_norm, stats = fields[5], fields[6], fields[7], fields[8], fields[9]
    shared = grad_hh.shape[0] == 0
    if shared:
        grad_hh = grad_x_proj
    dtype = grad_h_n.dtype
    one = dtype.type(1)  # an int literal would make float32 arithmetic float64
    identity_own = np.arange(batch)
    grad_h_own = sort_rows(grad_h_n, order)  # (B, P)
    grad_c_own = sort_rows(grad_c_n, order)  # (B, H)
    grad_u_own = np.zeros((batch, hidden), dtype=dtype)  # (B, H): dL/d(o * tanh(LN_c(c_hat)))
    into_h = not (masked or zoned_h)  # W_hh.T's product is all of dL/dh_{t-1}
    grad_s_own = grad_h_own if into_h else np.zeros_like(grad_h_own)  # (B, P): dL/ds
    scratch_own = np.zeros(4 * hidden, dtype=dtype)
    grad_c_hat_own = np.zeros(hidden, dtype=dtype)  # dL/dc_hat of one sequence
    grad_gates_own = np.zeros(4 * hidden, dtype=dtype)  # dL/da of one sequence, with layer norm
    zeros_own, ones_own = np.zeros(4, dtype=dtype), np.ones(4, dtype=dtype)  # normalise the normed
    # unowned as the arguments (kept until the loop ends: `alive`)
    grad_h, grad_c, grad_u = unowned(grad_h_own), unowned(grad_c_own), unowned(grad_u_own)
    grad_s, scratch, grad_gates = unowned(grad_s_own), unowned(scratch_own), unowned(grad_gates_own)
    identity, grad_c_hat = unowned(identity_own), unowned(grad_c_hat_own)
    zeros, ones = unowned(zeros_own), unowned(ones_own)
    last = lengths[order[0]]
    n = 0
    for step in range(last - 1, -1, -1):
        n = running(lengths, order, step, n)
        k = last - 1 - step if reverse else step
        ahead = step - PREFETCH_AHEAD  # the rows that step will read, on their way from memory
        prefetch_step(grad_output, lengths, order, n, ahead, reverse)
        if layer_norm:
            prefetch_step(x_proj, lengths, order, n, ahead, reverse)
        for draws in (zone_h, zone_c):
            if draws.shape[0] > 1:
                prefetch_step(draws, lengths, order, n, ahead, reverse)
        k_ahead = last - 1 - ahead if reverse else ahead
        for field in fields:
            prefetch_block(field, k_ahead)
        prefetch_block(grad_hh, k_ahead)
        grad_hh_step = grad_hh[k] if grad_hh.shape[0] > 1 else grad_hh[0]  # (B, 4H)
        grad_h_hat_step = grad_h_hat[k] if proj else grad_u  # (B, P): dL/dh_hat
        for i in range(n):
            b = order[i]
            t = position(lengths, b, step, reverse)
            grad_h_row, grad_h_hat_row, upstream = grad_h[i], grad_h_hat_step[i], grad_output[t, b]
            if zoned_h:
                zone_row = draws_at(zone_h, t, b)
                for j in range(out_size):
                    dh = grad_h_row[j] + upstream[j]
                    d = zone_row[j]
                    grad_h_row[j] = d * dh  # zoneout's direct path; W_hh's is added below
                    grad_h_hat_row[j] = (one - d) * dh
            else:
                for j in range(out_size):
                    grad_h_hat_row[j] = grad_h_row[j] + upstream[j]
                    grad_h_row[j] = 0
        if proj:
            product_prefix(weight_hr_t, blas_hr, grad_h_hat_step, n, grad_u, identity)
        for i in range(n):
            b = order[i]
            t = position(lengths, b, step, reverse)
            grad_u_row, grad_c_row = grad_u[i], grad_c[i]
            i_f_row, g_row, o_row, y_row = i_f[k, i], g[k, i], o[k, i], tanh_c[k, i]
            c_prev_row, c_hat_row = c_prev[k, i], c_hat[k, i]
            grad = grad_gates if layer_norm else grad_hh_step[i]  # dL/da
            grad_i, grad_f = grad[:hidden], grad[hidden : 2 * hidden]
            grad_g, grad_o = grad[2 * hidden : 3 * hidden], grad[3 * hidden :]
            i_row, f_row = i_f_row[:hidden], i_f_row[hidden:]
            for j in range(hidden):  # through u = o * tanh(y), y = LN_c(c_hat)
                o_, tanh_y = o_row[j], y_row[j]
                scratch[j] = grad_u_row[j] * o_ * (one - tanh_y * tanh_y)  # dL/dy
                grad_o[j] = grad_u_row[j] * tanh_y * o_ * (one - o_)
            if layer_norm:
                for j in range(hidden):
                    grad_ln_c[1, j] += scratch[j]
                layer_norm_backward(
                    scratch[:hidden], c_norm[k, i], zeros, ones, ln_c_gain, stats[k, i, 4:5],
                    grad_ln_c[0], grad_c_hat,
                )  # fmt: skip
            else:
                copy_(scratch, grad_c_hat)
            if zoned_c:  # through c_t = (1 - d) c_hat + d c_{t-1}
                zone_row = draws_at(zone_c, t, b)
                for j in range(hidden):
                    d = zone_row[j]
                    grad_c_hat[j] += (one - d) * grad_c_row[j]
                    grad_c_row[j] *= d
            else:
                for j in range(hidden):
                    grad_c_hat[j] += grad_c_row[j]
                    grad_c_row[j] = 0
            if peep:  # through o's peephole
                for j in range(hidden):
                    grad_c_hat[j] += grad_o[j] * peephole[2, j]
                    grad_peephole[2, j] += grad_o[j] * c_hat_row[j]
            for j in range(hidden):  # through c_hat = f * c_{t-1} + i * g
                dc = grad_c_hat[j]
                i_, f, g_ = i_row[j], f_row[j], g_row[j]
                grad_i[j] = dc * g_ * i_ * (one - i_)
                grad_f[j] = dc * c_prev_row[j] * f * (one - f)
                grad_g[j] = dc * i_ * (one - g_ * g_)
                grad_c_row[j] += dc * f
            if peep:  # through i's and f's peepholes
                for j in range(hidden):
                    grad_c_row[j] += grad_i[j] * peephole[0, j] + grad_f[j] * peephole[1, j]
                    grad_peephole[0, j] += grad_i[j] * c_prev_row[j]
                    grad_peephole[1, j] += grad_f[j] * c_prev_row[j]
            for j in range(4 * hidden):
                grad_bias[j] += grad[j]
            if layer_norm:  # through a^h = LN_h(W_hh s) + b_hh and a^x = LN_x(W_ih x) + b_ih
                r = stats[k, i]
                layer_norm_backward(
                    grad, hh_norm[k, i], zeros, ones, ln_hh_gain, r[:4], grad_ln_gains[1],
                    grad_hh_step[i],
                )  # fmt: skip
                layer_norm_backward(  # normalising W_ih x again as the forward pass did
                    grad, x_proj[t, b], r[9:], r[5:9], ln_ih_gain, r[5:9], grad_ln_gains[0],
                    grad_x_proj[t, b],
                )  # fmt: skip
            elif not shared:
                grad_x_proj[t, b] = grad
        if grad_w_hh_t.shape[0] > 0:
            add_outer_products(s_tape[k], n, grad_hh_step, grad_w_hh_t)
        product_prefix(weight_hh_t, blas_hh, grad_hh_step, n, grad_s, identity)
        if not into_h:
            for i in range(n):
                grad_h_row, grad_s_row = grad_h[i], grad_s[i]
                if masked:
                    mask_row = h_mask[order[i]]
                    for j in range(out_size):
                        grad_h_row[j] += mask_row[j] * grad_s_row[j]
                else:
                    for j in range(out_size):
                        grad_h_row[j] += grad_s_row[j]
    alive(identity_own)
    alive(grad_u_own)
    alive(grad_s_own)
    alive(scratch_own)
    alive(grad_c_hat_own)
    alive(grad_gates_own)
    alive(zeros_own)
    alive(ones_own)
    return unsort(grad_h_own, order), unsort(grad_c_own, order)


# dL/dW_hh summed in the backward loop, a step's rows at a time, where W_hh is at most this
# many bytes and a step has this many sequences: each step reads and writes all of the sum, so
# it must stay in the processor's nearest caches and have rows enough to add. At B = 8,
# H = 64 (64 KiB) it took 1.1 ms of the loop against 2.0 for oneDNN's product over the tape
# with its transposed copy; at H = 128 and more, or a sequence or two, it took longer.
SUMS_W_HH_IN_LOOP = (64 * 1024, 8)


def sums_w_hh_in_loop(batch: int, out_size: int, hidden: int, itemsize: int) -> bool:
    """Whether the backward loop sums dL/dW_hh itself (`SUMS_W_HH_IN_LOOP`)."""
    most_bytes, least_batch = SUMS_W_HH_IN_LOOP
    return batch >= least_batch and out_size * 4 * hidden * itemsize <= most_bytes


def _peepholes(w_ci: Tensor | None, w_cf: Tensor | None, w_co: Tensor | None) -> Tensor | None:
    return None if w_ci is None else torch.stack([w_ci.detach(), w_cf.detach(), w_co.detach()])


def lstm_forward(static: Static, tensors: tuple, save: bool) -> tuple[tuple, Tensor]:
    """((output (T, B, P), h_n, c_n), tape) for tensors (x_proj = W_ih x, h0, c0, weight_hh,
    bias_ih, bias_hh, ln_ih_weight, ln_ih_bias, ln_hh_weight, ln_hh_bias, weight_ci, weight_cf,
    weight_co, ln_c_weight, ln_c_bias, weight_hr), None where an option is off."""
    x_proj, h0, c0, weight_hh, b_ih, b_hh, ln_ih_g, ln_ih_b, ln_hh_g, ln_hh_b, *rest = tensors
    w_ci, w_cf, w_co, ln_c_g, ln_c_b, w_hr = rest
    steps, batch, _ = x_proj.shape
    hidden, out_size = c0.shape[1], h0.shape[1]
    width = sum(tape_widths(hidden, out_size, ln_hh_g is not None))
    new = x_proj.new_zeros if static.padded else x_proj.new_empty
    output = new(steps, batch, out_size)
    tape = tape_buffer((steps if save else 1) * batch * width, x_proj, static.padded)  # fields
    h_n, c_n = lstm_forward_loop(
        numpy_view(x_proj), numpy_view(h0), numpy_view(c0), *operand(weight_hh, batch, x_proj),
        numpy_view(bias_or_zeros(b_ih, 4 * hidden, x_proj)),
        numpy_view(bias_or_zeros(b_hh, 4 * hidden, x_proj)),
        optional_view(pair(ln_ih_g, ln_ih_b), 2, x_proj),
        optional_view(pair(ln_hh_g, ln_hh_b), 2, x_proj),
        optional_view(_peepholes(w_ci, w_cf, w_co), 2, x_proj),
        optional_view(pair(ln_c_g, ln_c_b), 2, x_proj), *operand(w_hr, batch, x_proj),
        optional_view(static.h_mask, 2, x_proj), optional_view(static.zone_h, 3, x_proj),
        optional_view(static.zone_c, 3, x_proj), static.lengths, static.order, static.reverse,
        static.eps, output.numpy(), tape.numpy(), save,
    )  # fmt: skip
    return (output, torch.from_numpy(h_n), torch.from_numpy(c_n)), tape


def lstm_backward(static: Static, tensors: tuple, saved: tuple, grads: tuple) -> list:
    """The gradients of `lstm_forward`'s tensors, from the upstream (grad_output, grad_h_n,
    grad_c_n) and `saved` = (outputs..., tape). Those of the parameters that are vectors are
    the loop's sums, and W_hh's where it is small (`sums_w_hh_in_loop`); the other matrices'
    are one product each over all steps and sequences."""
    x_proj, h0, c0, weight_hh, _, _, ln_ih_g, _, ln_hh_g, _, w_ci, w_cf, w_co, ln_c_g, _, w_hr = (
        tensors
    )
    tape = saved[-1]
    steps, batch, _ = x_proj.shape
    hidden, out_size = c0.shape[1], h0.shape[1]
    layer_norm = ln_hh_g is not None
    new = x_proj.new_zeros if static.padded else x_proj.new_empty
    off = x_proj.new_empty(0, 0, 0)  # an output the loop does not write
    grad_x_proj = new(steps, batch, 4 * hidden)
    shared = not layer_norm and not static.padded  # dL/d(W_hh s) is grad_x_proj
    in_loop = sums_w_hh_in_loop(batch, out_size, hidden, x_proj.element_size())
    grad_hh = off if shared else new(1 if in_loop else steps, batch, 4 * hidden)
    grad_h_hat = new(steps, batch, out_size) if w_hr is not None else off  # the tape's layout
    grad_w_hh_t = x_proj.new_zeros(out_size, 4 * hidden) if in_loop else x_proj.new_zeros(0, 0)
    sums = {  # the loop's float64 sums of the vectors' gradients
        "bias": torch.zeros(4 * hidden, dtype=torch.float64),  # dL/da
        "ln_gains": torch.zeros(2, 4 * hidden, dtype=torch.float64),  # LN_x's|LN_h's
        "ln_c": torch.zeros(2, hidden, dtype=torch.float64),  # gain|shift
        "peephole": torch.zeros(3, hidden, dtype=torch.float64),  # w_ci|w_cf|w_co
    }
    grad_h0, grad_c0 = lstm_backward_loop(
        numpy_view(x_proj), numpy_view(grads[0]), numpy_view(grads[1]), numpy_view(grads[2]),
        *operand(weight_hh.t(), batch, x_proj), optional_view(ln_ih_g, 1, x_proj),
        optional_view(ln_hh_g, 1, x_proj),
        optional_view(_peepholes(w_ci, w_cf, w_co), 2, x_proj), optional_view(ln_c_g, 1, x_proj),
        *operand(None if w_hr is None else w_hr.t(), batch, x_proj),
        optional_view(static.h_mask, 2, x_proj), optional_view(static.zone_h, 3, x_proj),
        optional_view(static.zone_c, 3, x_proj), tape.numpy(), static.lengths, static.order,
        static.reverse, grad_x_proj.numpy(), grad_hh.numpy(), grad_h_hat.numpy(),
        *(total.numpy() for total in sums.values()), grad_w_hh_t.numpy(),
    )  # fmt: skip
    grad_bias, grad_ln_gains, grad_ln_c, grad_peephole = (
        total.to(x_proj.dtype) for total in sums.values()
    )
    fields = dict(
        zip(
            TAPE_FIELDS, tape_fields(tape.numpy(), batch, hidden, out_size, layer_norm), strict=True
        )
    )
    if in_loop:
        grad_w_hh = grad_w_hh_t.t().contiguous()  # as `summed_outer_products`
    else:
        s = torch.from_numpy(fields["s"])  # (T, B, P): m * h_{t-1}
        grad_w_hh = weight_grads(grad_x_proj if shared else grad_hh, s, True, False)[0]
    result = [grad_x_proj, torch.from_numpy(grad_h0), torch.from_numpy(grad_c0), grad_w_hh]
    result += [grad_bias, grad_bias]  # b_ih, b_hh
    if layer_norm:
        result += [grad_ln_gains[0], grad_bias, grad_ln_gains[1], grad_bias]
    else:
        result += [None] * 4
    result += list(grad_peephole) if w_ci is not None else [None] * 3
    result += list(grad_ln_c) if ln_c_g is not None else [None] * 2
    if w_hr is not None:
        u = torch.from_numpy(fields["o"]) * torch.from_numpy(fields["tanh_c"])  # (T, B, H)
        result.append(weight_grads(grad_h_hat, u, True, False)[0])  # u = o * tanh(LN_c(c_hat))
    else:
        result.append(None)
    return result


LSTM_LOOPS = Loops(lstm_forward, lstm_backward)
