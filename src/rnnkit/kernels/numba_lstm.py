"""The recurrence of a variant LSTM layer direction as one compiled loop over time, forward and
backward (Numba, CPU): layer norm, peepholes, projection, recurrent dropout and zoneout.

The equations are `rnnkit.variants.VariantLSTMCell`'s (gate order i|f|g|o). What does not
depend on the previous step is done in torch before the loop, under autograd
(`rnnkit.kernels.numba_variants`): a^x = LN_x(W_ih x) + b_ih for all steps, the weight-dropped
W_hh, and the random masks. The loop runs the rest, per step and sequence:

    s     = m * h_{t-1}                                  (m: recurrent-dropout mask, or 1)
    a     = a^x_t + LN_h(W_hh s) + b_hh
    i, f  = sigmoid(a_i + w_ci * c_{t-1}), sigmoid(a_f + w_cf * c_{t-1})
    g     = tanh(a_g)
    c_hat = f * c_{t-1} + i * g
    o     = sigmoid(a_o + w_co * c_hat)
    h_hat = W_hr (o * tanh(LN_c(c_hat)))                 (W_hr: the projection, or none)
    c_t   = (1 - d^c) * c_hat + d^c * c_{t-1}            (d: zoneout's draws, or its rate in eval)
    h_t   = (1 - d^h) * h_hat + d^h * h_{t-1}

An option that is off arrives as an empty array. The forward pass writes what the backward pass
needs per step to a tape; the backward loop carries dL/dh and dL/dc from the last step to the
first and writes, per step, the gradients from which torch sums the parameters' gradients.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from rnnkit.kernels._compiled_sequence import Loops, Static, pair
from rnnkit.kernels._numba_common import (
    group_norm,
    group_norm_backward,
    jit,
    numpy_view,
    optional_view,
    position,
    running,
    sigmoid_,
    tanh_,
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
    normalised W_hh s (4H) and the five 1/std (4 gate groups, then c). "width": the total."""
    offsets = {"c_prev": 4 * hidden, "c_hat": 5 * hidden, "tanh_c": 6 * hidden, "s": 7 * hidden}
    end = 7 * hidden + out_size
    if layer_norm:
        offsets |= {"c_norm": end, "hh_norm": end + hidden, "rstd": end + 5 * hidden}
        end += 5 * hidden + 5
    return offsets | {"width": end}


def grad_layout(hidden: int, out_size: int) -> dict[str, int]:
    """Offsets of the gradients the backward loop writes per step: dL/da (4H), dL/d(W_hh s)
    (4H), dL/d LN_c(c_hat) (H), dL/dh_hat (P)."""
    return {"hh": 4 * hidden, "y": 8 * hidden, "h_hat": 9 * hidden, "width": 9 * hidden + out_size}


@jit
def lstm_forward_loop(
    x_proj, h0, c0, weight_hh, blas_hh, bias_hh, ln_hh, peephole, ln_c, weight_hr, blas_hr,
    h_mask, zone_h, zone_c, lengths, order, reverse, eps, output, tape, save,
):  # fmt: skip
    """Run the recurrence over x_proj (T, B, 4H) = a^x from h0 (B, P), c0 (B, H); fill output
    (T, B, P) and the tape (T, B, width), or (1, B, width) scratch without `save`.
    ln_hh (2, 4H) and ln_c (2, H) are gain|shift, peephole (3, H) w_ci|w_cf|w_co, h_mask (B, P),
    zone_h (T, B, P), zone_c (T, B, H); weight_hh (4H, P) and weight_hr (P, H) as
    `product_operand` gives them for `blas_hh`, `blas_hr`. Returns (h_n, c_n)."""
    batch, out_size = h0.shape
    hidden = c0.shape[1]
    layer_norm, peep = ln_hh.shape[0] > 0, peephole.shape[0] > 0
    proj, masked = weight_hr.shape[0] > 0, h_mask.shape[0] > 0
    zoned_h, zoned_c = zone_h.shape[0] > 0, zone_c.shape[0] > 0
    c_prev, c_hat, tanh_c, s_at = 4 * hidden, 5 * hidden, 6 * hidden, 7 * hidden
    c_norm, hh_norm = 7 * hidden + out_size, 8 * hidden + out_size
    rstd = 12 * hidden + out_size
    h, c = h0.copy(), c0.copy()
    s = np.zeros_like(h0)  # (B, P): the recurrent input m * h
    hh = np.zeros((batch, 4 * hidden), dtype=h0.dtype)  # (B, 4H): W_hh s
    u = np.zeros((batch, hidden), dtype=h0.dtype)  # (B, H): o * tanh(LN_c(c_hat))
    h_hat = np.zeros_like(h0) if proj else u  # (B, P)
    work = np.empty(8 * hidden)
    hh_in, hh_out = product_buffers(weight_hh, blas_hh, batch)
    hr_in, hr_out = product_buffers(weight_hr, blas_hr, batch if proj else 0)
    n_active = batch
    for step in range(lengths[order[0]]):
        n_active = running(lengths, order, step, n_active)
        for i in range(n_active):
            b = order[i]
            for k in range(out_size):
                s[b, k] = h[b, k] * h_mask[b, k] if masked else h[b, k]
            hh[b] = 0
        add_product(weight_hh, blas_hh, s, order, n_active, hh, hh_in, hh_out)
        for i in range(n_active):
            b = order[i]
            t = position(lengths, b, step, reverse)
            rec = tape[t if save else 0, b]
            rec[s_at : s_at + out_size] = s[b]
            if layer_norm:
                group_norm(hh[b], 4, rec[hh_norm : hh_norm + 4 * hidden], rec[rstd:], eps)
                for j in range(4 * hidden):
                    a_h = rec[hh_norm + j] * ln_hh[0, j] + ln_hh[1, j]
                    rec[j] = x_proj[t, b, j] + (a_h + bias_hh[j])
            else:
                for j in range(4 * hidden):
                    rec[j] = x_proj[t, b, j] + (hh[b, j] + bias_hh[j])
            if peep:
                for j in range(hidden):
                    rec[j] += peephole[0, j] * c[b, j]
                    rec[hidden + j] += peephole[1, j] * c[b, j]
            sigmoid_(rec, 0, 2 * hidden, work)  # i, f
            tanh_(rec, 2 * hidden, 3 * hidden, work)  # g
            for j in range(hidden):
                rec[c_prev + j] = c[b, j]
                rec[c_hat + j] = rec[hidden + j] * c[b, j] + rec[j] * rec[2 * hidden + j]
                if peep:
                    rec[3 * hidden + j] += peephole[2, j] * rec[c_hat + j]
            sigmoid_(rec, 3 * hidden, 4 * hidden, work)  # o
            if layer_norm:
                cn = rec[c_norm : c_norm + hidden]
                group_norm(rec[c_hat : c_hat + hidden], 1, cn, rec[rstd + 4 :], eps)
                for j in range(hidden):
                    rec[tanh_c + j] = cn[j] * ln_c[0, j] + ln_c[1, j]
            else:
                rec[tanh_c : tanh_c + hidden] = rec[c_hat : c_hat + hidden]
            tanh_(rec, tanh_c, tanh_c + hidden, work)
            for j in range(hidden):
                u[b, j] = rec[3 * hidden + j] * rec[tanh_c + j]
                d = zone_c[t, b, j] if zoned_c else 0.0
                c[b, j] = (1 - d) * rec[c_hat + j] + d * c[b, j]
        if proj:
            for i in range(n_active):
                h_hat[order[i]] = 0
            add_product(weight_hr, blas_hr, u, order, n_active, h_hat, hr_in, hr_out)
        for i in range(n_active):
            b = order[i]
            t = position(lengths, b, step, reverse)
            for k in range(out_size):
                d = zone_h[t, b, k] if zoned_h else 0.0
                h[b, k] = (1 - d) * h_hat[b, k] + d * h[b, k]
                output[t, b, k] = h[b, k]
    return h, c


@jit
def lstm_backward_loop(
    grad_output, grad_h_n, grad_c_n, weight_hh_t, blas_hh, ln_hh_gain, peephole, ln_c_gain,
    weight_hr_t, blas_hr, h_mask, zone_h, zone_c, tape, lengths, order, reverse, grads,
):  # fmt: skip
    """Backpropagate through time; fill grads (T, B, width) (see `grad_layout`).
    weight_hh_t is W_hh.T (P, 4H) and weight_hr_t W_hr.T (H, P) as `product_operand` gives them
    for `blas_hh`, `blas_hr`; ln_hh_gain (4H,) and ln_c_gain (H,) are LN's gains.
    Returns (dL/dh0, dL/dc0)."""
    batch, out_size = grad_h_n.shape
    hidden = grad_c_n.shape[1]
    layer_norm, peep = ln_hh_gain.shape[0] > 0, peephole.shape[0] > 0
    proj, masked = weight_hr_t.shape[0] > 0, h_mask.shape[0] > 0
    zoned_h, zoned_c = zone_h.shape[0] > 0, zone_c.shape[0] > 0
    c_prev, tanh_c = 4 * hidden, 6 * hidden
    c_norm, hh_norm = 7 * hidden + out_size, 8 * hidden + out_size
    rstd = 12 * hidden + out_size
    g_hh, g_y, g_h_hat = 4 * hidden, 8 * hidden, 9 * hidden
    grad_h, grad_c = grad_h_n.copy(), grad_c_n.copy()
    grad_hh = np.zeros((batch, 4 * hidden), dtype=grad_h.dtype)  # (B, 4H): dL/d(W_hh s)
    grad_u = np.zeros((batch, hidden), dtype=grad_h.dtype)  # (B, H)
    grad_h_hat = np.zeros_like(grad_h) if proj else grad_u  # (B, P)
    grad_s = np.zeros_like(grad_h) if masked else grad_h  # (B, P): W_hh.T @ grad_hh lands here
    scratch = np.zeros(4 * hidden, dtype=grad_h.dtype)
    grad_c_hat = np.zeros(hidden, dtype=grad_h.dtype)
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
                d = zone_h[t, b, k] if zoned_h else 0.0
                grad_h[b, k] = d * dh  # zoneout's direct path; W_hh's is added below
                grad_h_hat[b, k] = (1 - d) * dh
                grads[t, b, g_h_hat + k] = grad_h_hat[b, k]
            if proj:
                grad_u[b] = 0
        if proj:
            add_product(weight_hr_t, blas_hr, grad_h_hat, order, n_active, grad_u, hr_in, hr_out)
        for i in range(n_active):
            b = order[i]
            t = position(lengths, b, step, reverse)
            rec, grad = tape[t, b], grads[t, b]
            for j in range(hidden):  # through h = o * tanh(y), y = LN_c(c_hat)
                o, tanh_y = rec[3 * hidden + j], rec[tanh_c + j]
                grad[g_y + j] = grad_u[b, j] * o * (1 - tanh_y * tanh_y)
                grad[3 * hidden + j] = grad_u[b, j] * tanh_y * o * (1 - o)
                scratch[j] = grad[g_y + j] * ln_c_gain[j] if layer_norm else grad[g_y + j]
            if layer_norm:
                cn = rec[c_norm : c_norm + hidden]
                group_norm_backward(scratch[:hidden], cn, rec[rstd + 4 :], 1, grad_c_hat)
            else:
                grad_c_hat[:] = scratch[:hidden]
            for j in range(hidden):  # through c_t and c_hat = f * c_{t-1} + i * g
                d = zone_c[t, b, j] if zoned_c else 0.0
                dc = grad_c_hat[j] + (1 - d) * grad_c[b, j]
                if peep:
                    dc += grad[3 * hidden + j] * peephole[2, j]
                i_, f, g = rec[j], rec[hidden + j], rec[2 * hidden + j]
                grad[j] = dc * g * i_ * (1 - i_)
                grad[hidden + j] = dc * rec[c_prev + j] * f * (1 - f)
                grad[2 * hidden + j] = dc * i_ * (1 - g * g)
                grad_c[b, j] = d * grad_c[b, j] + dc * f
                if peep:
                    grad_c[b, j] += grad[j] * peephole[0, j] + grad[hidden + j] * peephole[1, j]
            if layer_norm:  # through a^h = LN_h(W_hh s) + b_hh
                for j in range(4 * hidden):
                    scratch[j] = grad[j] * ln_hh_gain[j]
                hn = rec[hh_norm : hh_norm + 4 * hidden]
                group_norm_backward(scratch, hn, rec[rstd:], 4, grad_hh[b])
                grad[g_hh : g_hh + 4 * hidden] = grad_hh[b]
            else:
                grad_hh[b] = grad[: 4 * hidden]
            if masked:
                grad_s[b] = 0
        add_product(weight_hh_t, blas_hh, grad_hh, order, n_active, grad_s, hh_in, hh_out)
        if masked:
            for i in range(n_active):
                b = order[i]
                for k in range(out_size):
                    grad_h[b, k] += h_mask[b, k] * grad_s[b, k]
    return grad_h, grad_c


def _peepholes(w_ci: Tensor | None, w_cf: Tensor | None, w_co: Tensor | None) -> Tensor | None:
    return None if w_ci is None else torch.stack([w_ci.detach(), w_cf.detach(), w_co.detach()])


def lstm_forward(static: Static, tensors: tuple, save: bool) -> tuple[tuple, Tensor]:
    """((output (T, B, P), h_n, c_n), tape) for tensors (x_proj, h0, c0, weight_hh, bias_hh,
    ln_hh_weight, ln_hh_bias, weight_ci, weight_cf, weight_co, ln_c_weight, ln_c_bias,
    weight_hr), None where an option is off."""
    x_proj, h0, c0, weight_hh, bias_hh, ln_hh_g, ln_hh_b, w_ci, w_cf, w_co, ln_c_g, ln_c_b, w_hr = (
        tensors
    )
    steps, batch, _ = x_proj.shape
    hidden, out_size = c0.shape[1], h0.shape[1]
    layout = tape_layout(hidden, out_size, ln_hh_g is not None)
    new = x_proj.new_zeros if static.padded else x_proj.new_empty
    output = new(steps, batch, out_size)
    tape = new(steps if save else 1, batch, layout["width"])
    bias = bias_hh.detach() if bias_hh is not None else x_proj.new_zeros(4 * hidden)
    h_n, c_n = lstm_forward_loop(
        numpy_view(x_proj), numpy_view(h0), numpy_view(c0), *operand(weight_hh, batch, x_proj),
        numpy_view(bias), optional_view(pair(ln_hh_g, ln_hh_b), 2, x_proj),
        optional_view(_peepholes(w_ci, w_cf, w_co), 2, x_proj),
        optional_view(pair(ln_c_g, ln_c_b), 2, x_proj), *operand(w_hr, batch, x_proj),
        optional_view(static.h_mask, 2, x_proj), optional_view(static.zone_h, 3, x_proj),
        optional_view(static.zone_c, 3, x_proj), static.lengths, static.order, static.reverse,
        static.eps, output.numpy(), tape.numpy(), save,
    )  # fmt: skip
    return (output, torch.from_numpy(h_n), torch.from_numpy(c_n)), tape


def lstm_backward(static: Static, tensors: tuple, saved: tuple, grads: tuple) -> list:
    """The gradients of `lstm_forward`'s tensors, from the upstream (grad_output, grad_h_n,
    grad_c_n) and `saved` = (outputs..., tape)."""
    x_proj, h0, c0, weight_hh, _, ln_hh_g, _, w_ci, w_cf, w_co, ln_c_g, _, w_hr = tensors
    tape = saved[-1]
    hidden, out_size = c0.shape[1], h0.shape[1]
    at, offset = tape_layout(hidden, out_size, ln_hh_g is not None), grad_layout(hidden, out_size)
    new = x_proj.new_zeros if static.padded else x_proj.new_empty
    grad = new(*x_proj.shape[:2], offset["width"])  # (T, B, width)
    batch = x_proj.shape[1]
    grad_h0, grad_c0 = lstm_backward_loop(
        numpy_view(grads[0]), numpy_view(grads[1]), numpy_view(grads[2]),
        *operand(weight_hh.t(), batch, x_proj), optional_view(ln_hh_g, 1, x_proj),
        optional_view(_peepholes(w_ci, w_cf, w_co), 2, x_proj), optional_view(ln_c_g, 1, x_proj),
        *operand(None if w_hr is None else w_hr.t(), batch, x_proj),
        optional_view(static.h_mask, 2, x_proj), optional_view(static.zone_h, 3, x_proj),
        optional_view(static.zone_c, 3, x_proj), tape.numpy(), static.lengths, static.order,
        static.reverse, grad.numpy(),
    )  # fmt: skip
    grad_a = grad[..., : 4 * hidden]  # (T, B, 4H): dL/da = dL/da^x = dL/da^h

    def piece(name: str, size: int) -> Tensor:
        return tape[..., at[name] : at[name] + size]

    def total(values: Tensor) -> Tensor:
        return values.sum((0, 1))

    grad_hh = grad_a if ln_hh_g is None else grad[..., offset["hh"] : offset["hh"] + 4 * hidden]
    grad_w_hh, _ = weight_grads(grad_hh, piece("s", out_size), True, False)
    result = [grad_a, torch.from_numpy(grad_h0), torch.from_numpy(grad_c0), grad_w_hh]
    result.append(total(grad_a))  # bias_hh
    if ln_hh_g is not None:
        result += [total(grad_a * piece("hh_norm", 4 * hidden)), total(grad_a)]
    else:
        result += [None, None]
    if w_ci is not None:
        c_prev, c_hat = piece("c_prev", hidden), piece("c_hat", hidden)
        result += [
            total(grad_a[..., :hidden] * c_prev),
            total(grad_a[..., hidden : 2 * hidden] * c_prev),
            total(grad_a[..., 3 * hidden :] * c_hat),
        ]
    else:
        result += [None, None, None]
    if ln_c_g is not None:
        grad_y = grad[..., offset["y"] : offset["y"] + hidden]
        result += [total(grad_y * piece("c_norm", hidden)), total(grad_y)]
    else:
        result += [None, None]
    if w_hr is not None:
        u = tape[..., 3 * hidden : 4 * hidden] * piece("tanh_c", hidden)  # o * tanh(LN_c(c_hat))
        grad_h_hat = grad[..., offset["h_hat"] : offset["h_hat"] + out_size]
        result.append(weight_grads(grad_h_hat, u, True, False)[0])
    else:
        result.append(None)
    return result


LSTM_LOOPS = Loops(lstm_forward, lstm_backward)
