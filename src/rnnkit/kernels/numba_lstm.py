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

An option that is off arrives as an empty array. The forward pass writes what the backward pass
needs per step to a tape; the backward loop carries dL/dh and dL/dc from the last step to the
first, writes per step the gradients from which torch multiplies out W_ih's, W_hh's and W_hr's,
and sums those of the vectors (biases, LN's gains and shifts, peepholes) itself.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from rnnkit.kernels._compiled_sequence import Loops, Static, pair
from rnnkit.kernels._numba_common import (
    bias_or_zeros,
    group_norm,
    group_norm_backward,
    jit,
    numpy_view,
    optional_view,
    position,
    running,
    sigmoid_,
    sort_rows,
    tanh_,
    unsort,
    weight_grads,
)
from rnnkit.kernels._numba_products import (
    add_product,
    operand,
    product_buffers,
)


def tape_layout(hidden: int, out_size: int, layer_norm: bool) -> dict[str, int]:
    """Offsets of the tape of one step and sequence: gates i|f|g|o (4H), c_{t-1}, c_hat,
    tanh(LN_c(c_hat)) (H each), s (P); with layer norm also LN_c's normalised c_hat (H), LN_h's
    normalised W_hh s (4H), LN_x's normalised W_ih x (4H) and the nine 1/std (LN_h's 4 gate
    groups, LN_c's, LN_x's 4). "width": the total."""
    offsets = {"c_prev": 4 * hidden, "c_hat": 5 * hidden, "tanh_c": 6 * hidden, "s": 7 * hidden}
    end = 7 * hidden + out_size
    if layer_norm:
        offsets |= {"c_norm": end, "hh_norm": end + hidden, "ih_norm": end + 5 * hidden}
        offsets |= {"rstd": end + 9 * hidden}
        end += 9 * hidden + 9
    return offsets | {"width": end}


@jit
def lstm_forward_loop(
    x_proj, h0, c0, weight_hh, blas_hh, bias_ih, bias_hh, ln_ih, ln_hh, peephole, ln_c,
    weight_hr, blas_hr, h_mask, zone_h, zone_c, lengths, order, reverse, eps, output, tape, save,
):  # fmt: skip
    """Run the recurrence over x_proj (T, B, 4H) = W_ih x from h0 (B, P), c0 (B, H); fill output
    (T, B, P) and the tape (T, B, width), or (1, B, width) scratch without `save`.
    bias_ih, bias_hh (4H,); ln_ih, ln_hh (2, 4H) and ln_c (2, H) are gain|shift, peephole (3, H)
    w_ci|w_cf|w_co, h_mask (B, P), zone_h (T, B, P), zone_c (T, B, H); weight_hh (4H, P) and
    weight_hr (P, H) as `product_operand` gives them for `blas_hh`, `blas_hr`.
    Returns (h_n, c_n).

    The states live in `order` (longest first), so the running sequences are rows
    0..n_active-1: each product is one call over them, and so is each nonlinearity, over one
    contiguous block of the step's gates (i|f, g, o, then tanh(LN_c(c_hat)))."""
    batch, out_size = h0.shape
    hidden = c0.shape[1]
    layer_norm, peep = ln_hh.shape[0] > 0, peephole.shape[0] > 0
    proj, masked = weight_hr.shape[0] > 0, h_mask.shape[0] > 0
    zoned_h, zoned_c = zone_h.shape[0] > 0, zone_c.shape[0] > 0
    c_prev, c_hat, tanh_c, s_at = 4 * hidden, 5 * hidden, 6 * hidden, 7 * hidden
    c_norm, hh_norm = 7 * hidden + out_size, 8 * hidden + out_size
    ih_norm, rstd = 12 * hidden + out_size, 16 * hidden + out_size
    dtype = h0.dtype
    identity = np.arange(batch)
    h, c = sort_rows(h0, order), sort_rows(c0, order)  # (B, P), (B, H): row i is order[i]'s
    s = np.zeros_like(h) if masked else h  # (B, P): the recurrent input m * h
    hh = np.zeros((batch, 4 * hidden), dtype=dtype)  # (B, 4H): W_hh s
    a_x = np.zeros(4 * hidden, dtype=dtype)  # a^x of one sequence
    i_f = np.empty((batch, 2 * hidden), dtype=dtype)  # (B, 2H): i|f of the step
    g_o_y = np.empty((3, batch, hidden), dtype=dtype)  # g, o and tanh(LN_c(c_hat)) of the step
    u = np.zeros((batch, hidden), dtype=dtype)  # (B, H): o * tanh(LN_c(c_hat))
    h_hat = np.zeros_like(h) if proj else u  # (B, P)
    i_f_flat, g_flat = i_f.reshape(-1), g_o_y[0].reshape(-1)  # what the nonlinearities take
    o_flat, y_flat = g_o_y[1].reshape(-1), g_o_y[2].reshape(-1)
    work = np.empty(4 * batch * hidden)  # scratch of the nonlinearities
    hh_in, hh_out = product_buffers(weight_hh, blas_hh, batch)
    hr_in, hr_out = product_buffers(weight_hr, blas_hr, batch if proj else 0)
    n_active = batch
    for step in range(lengths[order[0]]):
        n_active = running(lengths, order, step, n_active)
        if masked:
            for i in range(n_active):
                h_row, s_row, mask_row = h[i], s[i], h_mask[order[i]]
                for k in range(out_size):
                    s_row[k] = h_row[k] * mask_row[k]
        hh[:n_active] = 0
        add_product(weight_hh, blas_hh, s, identity, n_active, hh, hh_in, hh_out)
        for i in range(n_active):
            b = order[i]
            t = position(lengths, b, step, reverse)
            rec, x_row, hh_row = tape[t if save else 0, b], x_proj[t, b], hh[i]
            rec[s_at : s_at + out_size] = s[i]
            if layer_norm:
                normed = rec[ih_norm : ih_norm + 4 * hidden]
                group_norm(x_row, 4, normed, rec[rstd + 5 : rstd + 9], eps)
                for j in range(4 * hidden):
                    a_x[j] = (normed[j] * ln_ih[0, j] + ln_ih[1, j]) + bias_ih[j]
                normed = rec[hh_norm : hh_norm + 4 * hidden]
                group_norm(hh_row, 4, normed, rec[rstd : rstd + 4], eps)
                for j in range(4 * hidden):
                    hh_row[j] = normed[j] * ln_hh[0, j] + ln_hh[1, j]
            else:
                for j in range(4 * hidden):
                    a_x[j] = x_row[j] + bias_ih[j]
            i_f_row, g_row, o_row, c_row = i_f[i], g_o_y[0, i], g_o_y[1, i], c[i]
            for j in range(2 * hidden):
                i_f_row[j] = a_x[j] + (hh_row[j] + bias_hh[j])
            for j in range(hidden):
                g_row[j] = a_x[2 * hidden + j] + (hh_row[2 * hidden + j] + bias_hh[2 * hidden + j])
                o_row[j] = a_x[3 * hidden + j] + (hh_row[3 * hidden + j] + bias_hh[3 * hidden + j])
            if peep:
                for j in range(hidden):
                    i_f_row[j] += peephole[0, j] * c_row[j]
                    i_f_row[hidden + j] += peephole[1, j] * c_row[j]
        sigmoid_(i_f_flat, 0, n_active * 2 * hidden, work)
        tanh_(g_flat, 0, n_active * hidden, work)
        for i in range(n_active):
            b = order[i]
            t = position(lengths, b, step, reverse)
            rec, i_f_row, g_row, c_row = tape[t if save else 0, b], i_f[i], g_o_y[0, i], c[i]
            rec[: 2 * hidden] = i_f_row
            rec[2 * hidden : 3 * hidden] = g_row
            rec[c_prev : c_prev + hidden] = c_row
            c_hat_row = rec[c_hat : c_hat + hidden]
            for j in range(hidden):
                c_hat_row[j] = i_f_row[hidden + j] * c_row[j] + i_f_row[j] * g_row[j]
            if peep:
                o_row = g_o_y[1, i]
                for j in range(hidden):
                    o_row[j] += peephole[2, j] * c_hat_row[j]
            y_row = g_o_y[2, i]
            if layer_norm:
                normed = rec[c_norm : c_norm + hidden]
                group_norm(c_hat_row, 1, normed, rec[rstd + 4 : rstd + 5], eps)
                for j in range(hidden):
                    y_row[j] = normed[j] * ln_c[0, j] + ln_c[1, j]
            else:
                y_row[:] = c_hat_row
            if zoned_c:
                zone_row = zone_c[t, b]
                for j in range(hidden):
                    d = zone_row[j]
                    c_row[j] = (1 - d) * c_hat_row[j] + d * c_row[j]
            else:
                c_row[:] = c_hat_row
        sigmoid_(o_flat, 0, n_active * hidden, work)
        tanh_(y_flat, 0, n_active * hidden, work)
        for i in range(n_active):
            b = order[i]
            rec = tape[position(lengths, b, step, reverse) if save else 0, b]
            o_row, y_row, u_row = g_o_y[1, i], g_o_y[2, i], u[i]
            rec[3 * hidden : 4 * hidden] = o_row
            rec[tanh_c : tanh_c + hidden] = y_row
            for j in range(hidden):
                u_row[j] = o_row[j] * y_row[j]
        if proj:
            h_hat[:n_active] = 0
            add_product(weight_hr, blas_hr, u, identity, n_active, h_hat, hr_in, hr_out)
        for i in range(n_active):
            b = order[i]
            t = position(lengths, b, step, reverse)
            h_row, h_hat_row, output_row = h[i], h_hat[i], output[t, b]
            if zoned_h:
                zone_row = zone_h[t, b]
                for k in range(out_size):
                    d = zone_row[k]
                    h_row[k] = (1 - d) * h_hat_row[k] + d * h_row[k]
            else:
                h_row[:] = h_hat_row
            output_row[:] = h_row
    return unsort(h, order), unsort(c, order)


@jit
def lstm_backward_loop(
    grad_output, grad_h_n, grad_c_n, weight_hh_t, blas_hh, ln_ih_gain, ln_hh_gain, peephole,
    ln_c_gain, weight_hr_t, blas_hr, h_mask, zone_h, zone_c, tape, lengths, order, reverse,
    grad_x_proj, grad_hh, grad_h_hat, grad_bias, grad_ln_gains, grad_ln_c, grad_peephole,
):  # fmt: skip
    """Backpropagate through time; fill grad_x_proj (T, B, 4H) = dL/d(W_ih x), with layer norm
    grad_hh (T, B, 4H) = dL/d(W_hh s) (else dL/da = dL/d(W_ih x) is that too), with a
    projection grad_h_hat (T, B, P) = dL/dh_hat (else these are empty), and add the sums over
    steps and sequences of the small parameters' gradients (float64) to grad_bias (4H,) = dL/da
    (b_ih's, b_hh's and both LN shifts'), grad_ln_gains (2, 4H) LN_x's|LN_h's gains',
    grad_ln_c (2, H) gain|shift and grad_peephole (3, H). weight_hh_t is W_hh.T (P, 4H) and
    weight_hr_t W_hr.T (H, P) as `product_operand` gives them for `blas_hh`, `blas_hr`;
    ln_ih_gain, ln_hh_gain (4H,) and ln_c_gain (H,) are LN's gains. Returns (dL/dh0, dL/dc0).
    The carried gradients live in `order`, as the states in `lstm_forward_loop`."""
    batch, out_size = grad_h_n.shape
    hidden = grad_c_n.shape[1]
    layer_norm, peep = ln_hh_gain.shape[0] > 0, peephole.shape[0] > 0
    proj, masked = weight_hr_t.shape[0] > 0, h_mask.shape[0] > 0
    zoned_h, zoned_c = zone_h.shape[0] > 0, zone_c.shape[0] > 0
    c_prev, c_hat, tanh_c = 4 * hidden, 5 * hidden, 6 * hidden
    c_norm, hh_norm = 7 * hidden + out_size, 8 * hidden + out_size
    ih_norm, rstd = 12 * hidden + out_size, 16 * hidden + out_size
    dtype = grad_h_n.dtype
    identity = np.arange(batch)
    grad_h, grad_c = sort_rows(grad_h_n, order), sort_rows(grad_c_n, order)  # (B, P), (B, H)
    grad_hh_step = np.zeros((batch, 4 * hidden), dtype=dtype)  # (B, 4H): dL/d(W_hh s)
    grad_u = np.zeros((batch, hidden), dtype=dtype)  # (B, H): dL/d(o * tanh(LN_c(c_hat)))
    grad_h_hat_step = np.zeros_like(grad_h) if proj else grad_u  # (B, P)
    grad_s = np.zeros_like(grad_h) if masked else grad_h  # (B, P): W_hh.T @ grad_hh lands here
    scratch = np.zeros(4 * hidden, dtype=dtype)
    grad_c_hat = np.zeros(hidden, dtype=dtype)  # dL/dc_hat of one sequence
    grad_gates = np.zeros(4 * hidden, dtype=dtype)  # dL/da of one sequence, with layer norm
    hh_in, hh_out = product_buffers(weight_hh_t, blas_hh, batch)
    hr_in, hr_out = product_buffers(weight_hr_t, blas_hr, batch if proj else 0)
    n_active = 0
    for step in range(lengths[order[0]] - 1, -1, -1):
        n_active = running(lengths, order, step, n_active)
        for i in range(n_active):
            b = order[i]
            t = position(lengths, b, step, reverse)
            grad_h_row, grad_h_hat_row, upstream = grad_h[i], grad_h_hat_step[i], grad_output[t, b]
            if zoned_h:
                zone_row = zone_h[t, b]
                for k in range(out_size):
                    dh = grad_h_row[k] + upstream[k]
                    d = zone_row[k]
                    grad_h_row[k] = d * dh  # zoneout's direct path; W_hh's is added below
                    grad_h_hat_row[k] = (1 - d) * dh
            else:
                for k in range(out_size):
                    grad_h_hat_row[k] = grad_h_row[k] + upstream[k]
                    grad_h_row[k] = 0
            if proj:
                grad_h_hat[t, b] = grad_h_hat_row
                grad_u[i] = 0
        if proj:
            add_product(
                weight_hr_t, blas_hr, grad_h_hat_step, identity, n_active, grad_u, hr_in, hr_out
            )
        for i in range(n_active):
            b = order[i]
            t = position(lengths, b, step, reverse)
            rec, grad_u_row, grad_c_row = tape[t, b], grad_u[i], grad_c[i]
            grad = grad_gates if layer_norm else grad_x_proj[t, b]  # dL/da
            for j in range(hidden):  # through u = o * tanh(y), y = LN_c(c_hat)
                o, tanh_y = rec[3 * hidden + j], rec[tanh_c + j]
                scratch[j] = grad_u_row[j] * o * (1 - tanh_y * tanh_y)  # dL/dy
                grad[3 * hidden + j] = grad_u_row[j] * tanh_y * o * (1 - o)
            if layer_norm:
                c_normed = rec[c_norm : c_norm + hidden]
                for j in range(hidden):
                    grad_ln_c[0, j] += scratch[j] * c_normed[j]
                    grad_ln_c[1, j] += scratch[j]
                    scratch[j] *= ln_c_gain[j]
                group_norm_backward(
                    scratch[:hidden], c_normed, rec[rstd + 4 : rstd + 5], 1, grad_c_hat
                )
            else:
                grad_c_hat[:] = scratch[:hidden]
            if zoned_c:  # through c_t = (1 - d) c_hat + d c_{t-1}
                zone_row = zone_c[t, b]
                for j in range(hidden):
                    d = zone_row[j]
                    grad_c_hat[j] += (1 - d) * grad_c_row[j]
                    grad_c_row[j] *= d
            else:
                for j in range(hidden):
                    grad_c_hat[j] += grad_c_row[j]
                    grad_c_row[j] = 0
            if peep:  # through o's peephole
                for j in range(hidden):
                    grad_c_hat[j] += grad[3 * hidden + j] * peephole[2, j]
                    grad_peephole[2, j] += grad[3 * hidden + j] * rec[c_hat + j]
            for j in range(hidden):  # through c_hat = f * c_{t-1} + i * g
                dc = grad_c_hat[j]
                i_, f, g = rec[j], rec[hidden + j], rec[2 * hidden + j]
                grad[j] = dc * g * i_ * (1 - i_)
                grad[hidden + j] = dc * rec[c_prev + j] * f * (1 - f)
                grad[2 * hidden + j] = dc * i_ * (1 - g * g)
                grad_c_row[j] += dc * f
            if peep:  # through i's and f's peepholes
                for j in range(hidden):
                    grad_c_row[j] += grad[j] * peephole[0, j] + grad[hidden + j] * peephole[1, j]
                    grad_peephole[0, j] += grad[j] * rec[c_prev + j]
                    grad_peephole[1, j] += grad[hidden + j] * rec[c_prev + j]
            for j in range(4 * hidden):
                grad_bias[j] += grad[j]
            grad_hh_row = grad_hh_step[i]
            if layer_norm:  # through a^h = LN_h(W_hh s) + b_hh and a^x = LN_x(W_ih x) + b_ih
                hh_normed = rec[hh_norm : hh_norm + 4 * hidden]
                for j in range(4 * hidden):
                    grad_ln_gains[1, j] += grad[j] * hh_normed[j]
                    scratch[j] = grad[j] * ln_hh_gain[j]
                group_norm_backward(scratch, hh_normed, rec[rstd : rstd + 4], 4, grad_hh_row)
                grad_hh[t, b] = grad_hh_row
                ih_normed = rec[ih_norm : ih_norm + 4 * hidden]
                for j in range(4 * hidden):
                    grad_ln_gains[0, j] += grad[j] * ih_normed[j]
                    scratch[j] = grad[j] * ln_ih_gain[j]
                grad_x_row = grad_x_proj[t, b]
                group_norm_backward(scratch, ih_normed, rec[rstd + 5 : rstd + 9], 4, grad_x_row)
            else:
                grad_hh_row[:] = grad
            if masked:
                grad_s[i] = 0
        add_product(weight_hh_t, blas_hh, grad_hh_step, identity, n_active, grad_s, hh_in, hh_out)
        if masked:
            for i in range(n_active):
                grad_h_row, grad_s_row, mask_row = grad_h[i], grad_s[i], h_mask[order[i]]
                for k in range(out_size):
                    grad_h_row[k] += mask_row[k] * grad_s_row[k]
    return unsort(grad_h, order), unsort(grad_c, order)


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
    layout = tape_layout(hidden, out_size, ln_hh_g is not None)
    new = x_proj.new_zeros if static.padded else x_proj.new_empty
    output = new(steps, batch, out_size)
    tape = new(steps if save else 1, batch, layout["width"])
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
    the loop's sums; the matrices' are one product each over all steps and sequences."""
    x_proj, h0, c0, weight_hh, _, _, ln_ih_g, _, ln_hh_g, _, w_ci, w_cf, w_co, ln_c_g, _, w_hr = (
        tensors
    )
    tape = saved[-1]
    steps, batch, _ = x_proj.shape
    hidden, out_size = c0.shape[1], h0.shape[1]
    layer_norm = ln_hh_g is not None
    at = tape_layout(hidden, out_size, layer_norm)
    new = x_proj.new_zeros if static.padded else x_proj.new_empty
    off = x_proj.new_empty(0, 0, 0)  # an output the loop does not write
    grad_x_proj = new(steps, batch, 4 * hidden)
    grad_hh = new(steps, batch, 4 * hidden) if layer_norm else off  # dL/d(W_hh s)
    grad_h_hat = new(steps, batch, out_size) if w_hr is not None else off
    sums = {  # the loop's float64 sums of the vectors' gradients
        "bias": torch.zeros(4 * hidden, dtype=torch.float64),  # dL/da
        "ln_gains": torch.zeros(2, 4 * hidden, dtype=torch.float64),  # LN_x's|LN_h's
        "ln_c": torch.zeros(2, hidden, dtype=torch.float64),  # gain|shift
        "peephole": torch.zeros(3, hidden, dtype=torch.float64),  # w_ci|w_cf|w_co
    }
    grad_h0, grad_c0 = lstm_backward_loop(
        numpy_view(grads[0]), numpy_view(grads[1]), numpy_view(grads[2]),
        *operand(weight_hh.t(), batch, x_proj), optional_view(ln_ih_g, 1, x_proj),
        optional_view(ln_hh_g, 1, x_proj),
        optional_view(_peepholes(w_ci, w_cf, w_co), 2, x_proj), optional_view(ln_c_g, 1, x_proj),
        *operand(None if w_hr is None else w_hr.t(), batch, x_proj),
        optional_view(static.h_mask, 2, x_proj), optional_view(static.zone_h, 3, x_proj),
        optional_view(static.zone_c, 3, x_proj), tape.numpy(), static.lengths, static.order,
        static.reverse, grad_x_proj.numpy(), grad_hh.numpy(), grad_h_hat.numpy(),
        *(total.numpy() for total in sums.values()),
    )  # fmt: skip
    grad_bias, grad_ln_gains, grad_ln_c, grad_peephole = (
        total.to(x_proj.dtype) for total in sums.values()
    )
    s = tape[..., at["s"] : at["s"] + out_size]  # (T, B, P): m * h_{t-1}
    grad_w_hh = weight_grads(grad_hh if layer_norm else grad_x_proj, s, True, False)[0]
    result = [grad_x_proj, torch.from_numpy(grad_h0), torch.from_numpy(grad_c0), grad_w_hh]
    result += [grad_bias, grad_bias]  # b_ih, b_hh
    if layer_norm:
        result += [grad_ln_gains[0], grad_bias, grad_ln_gains[1], grad_bias]
    else:
        result += [None] * 4
    result += list(grad_peephole) if w_ci is not None else [None] * 3
    result += list(grad_ln_c) if ln_c_g is not None else [None] * 2
    if w_hr is not None:
        u = tape[..., 3 * hidden : 4 * hidden] * tape[..., at["tanh_c"] : at["tanh_c"] + hidden]
        result.append(weight_grads(grad_h_hat, u, True, False)[0])  # u = o * tanh(LN_c(c_hat))
    else:
        result.append(None)
    return result


LSTM_LOOPS = Loops(lstm_forward, lstm_backward)
