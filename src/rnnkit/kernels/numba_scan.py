"""The linear recurrence of minGRU and minLSTM (`rnnkit.minimal`) as one compiled sequential loop
over time, forward and backward (Numba, CPU):

    h_t = a_t * h_{t-1} + b_t                       (elementwise, t = 1..T)

and backward, with g_t = dL/dh_t (from the output at t and from step t + 1):

    g_t = dL/d(output_t) + a_{t+1} * g_{t+1}
    dL/db_t = g_t,   dL/da_t = g_t * h_{t-1},   dL/dh_0 = a_1 * g_1

On the CPU one pass over (T, B, H) numbers, a multiply-add each, costs less than the log-space
parallel scan (`rnnkit.minimal.log_space_scan`: cumulative sums, a log-cumulative-sum-exp and
exponentials over the same numbers), which stays the route for other devices. The sequential
form needs no logarithms: nothing underflows that the step would not.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from rnnkit.kernels._numba_common import (
    alive,
    jit,
    needs_grad,
    numpy_view,
    recomputed_gradients,
    sigmoid_,
    unowned,
)


@jit
def recurrence_forward(a, b, h0, out):
    """out[t] = a[t] * out[t - 1] + b[t] from h0; a, b, out (T, N), h0 (N,)."""
    prev = h0
    for t in range(a.shape[0]):
        for j in range(a.shape[1]):
            out[t, j] = a[t, j] * prev[j] + b[t, j]
        prev = out[t]


@jit
def recurrence_backward(a, h, h0, grad_h, grad_a, grad_b):
    """Fill grad_a, grad_b (T, N) from grad_h = dL/dh (T, N) (the outputs' own gradients) and
    the forward's h (T, N); return dL/dh0 (N,)."""
    carry = np.zeros_like(h0)  # a_{t+1} * g_{t+1}
    for t in range(a.shape[0] - 1, -1, -1):
        prev = h[t - 1] if t > 0 else h0
        for j in range(a.shape[1]):
            g = grad_h[t, j] + carry[j]
            grad_b[t, j] = g
            grad_a[t, j] = g * prev[j]
            carry[j] = a[t, j] * g
    return carry


class LinearRecurrence(torch.autograd.Function):
    """h (T, ...) from a, b (T, ...) and h0 (...), all of one shape after dim 0."""

    @staticmethod
    def forward(ctx, a: Tensor, b: Tensor, h0: Tensor) -> Tensor:
        steps = a.shape[0]
        h = a.new_empty(a.shape)
        recurrence_forward(
            numpy_view(a).reshape(steps, -1),
            numpy_view(b).reshape(steps, -1),
            numpy_view(h0).reshape(-1),
            h.numpy().reshape(steps, -1),
        )
        ctx.save_for_backward(a, b, h0, h)
        return h

    @staticmethod
    def backward(ctx, grad_h: Tensor):
        if torch.is_grad_enabled():  # create_graph=True: through torch's operators instead
            a, b, h0, _ = ctx.saved_tensors
            return recomputed_gradients(
                recurrence_reference, (a, b, h0), ctx.needs_input_grad, (grad_h,)
            )
        return LinearRecurrence.compiled_backward(ctx, grad_h)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def compiled_backward(ctx, grad_h: Tensor):
        a, _, h0, h = ctx.saved_tensors
        steps = a.shape[0]
        grad_a, grad_b = a.new_empty(a.shape), a.new_empty(a.shape)
        grad_h0 = recurrence_backward(
            numpy_view(a).reshape(steps, -1),
            h.numpy().reshape(steps, -1),
            numpy_view(h0).reshape(-1),
            numpy_view(grad_h).reshape(steps, -1),
            grad_a.numpy().reshape(steps, -1),
            grad_b.numpy().reshape(steps, -1),
        )
        return grad_a, grad_b, torch.from_numpy(grad_h0).reshape(h0.shape)


def recurrence_reference(a: Tensor, b: Tensor, h0: Tensor) -> Tensor:
    """`recurrence_forward` in torch's operators, step by step (differentiable any number of
    times: `LinearRecurrence`'s backward with a graph)."""
    h, out = h0, []
    for t in range(a.shape[0]):
        h = a[t] * h + b[t]
        out.append(h)
    return torch.stack(out)


def linear_scan(a: Tensor, b: Tensor, h0: Tensor) -> Tensor:
    """Every h_t of h_t = a_t * h_{t-1} + b_t over dim 0, sequentially, compiled: a, b (T, B, H),
    h0 (B, H) -> h (T, B, H), CPU float32 or float64 tensors of one dtype; differentiable in all
    three (twice and more through torch's operators, `recurrence_reference`)."""
    if a.shape != b.shape or a.shape[1:] != h0.shape:
        shapes = f"{tuple(a.shape)}, {tuple(b.shape)}, {tuple(h0.shape)}"
        raise ValueError(f"a, b (T, B, H) and h0 (B, H) expected, got {shapes}")
    return LinearRecurrence.apply(a, b, h0)


# ---- minGRU and minLSTM whole: gates and recurrence in one pass ------------------------------
#
# From the preactivations P = W_ih x + b_ih (T, B, G*H), blocks z|h (minGRU) or f|i|h (minLSTM),
# with s = sigmoid(P) (one vectorised call per step, over all its sequences) and g(v) = v + 1/2
# for v >= 0, sigmoid(v) below (the paper's positive candidate state):
#
#     minGRU:  a = 1 - s_z,             b = s_z * g(p_h)
#     minLSTM: a = s_f / (s_f + s_i),   b = s_i / (s_f + s_i) * g(p_h)
#     h_t = a_t * h_{t-1} + b_t
#
# and backward, with g_t = dL/dh_t + a_{t+1} g_{t+1}, dL/da = g_t h_{t-1}, dL/db = g_t:
#
#     minGRU:  dL/dp_z = (h~ dL/db - dL/da) s_z (1 - s_z),  dL/dp_h = s_z g'(p_h) dL/db
#     minLSTM: with q = s_f + s_i,
#              dL/dp_f = s_i / q^2 (dL/da - h~ dL/db) s_f (1 - s_f),
#              dL/dp_i = s_f / q^2 (h~ dL/db - dL/da) s_i (1 - s_i),
#              dL/dp_h = s_i / q g'(p_h) dL/db,      g'(v) = 1 (v >= 0), s (1 - s) below.


@jit
def _coefficients(p, s, lstm, a, b):
    """a and b (H,) of one row from its preactivations p and their sigmoids s (G*H,)."""
    hidden = len(a)
    p_h, s_h = p[(1 + lstm) * hidden :], s[(1 + lstm) * hidden :]
    s_i = s[hidden:]
    for j in range(hidden):
        v = p_h[j]
        h_tilde = v + 0.5 if v >= 0 else s_h[j]
        if lstm:
            total = s[j] + s_i[j]
            a[j] = s[j] / total
            b[j] = s_i[j] / total * h_tilde
        else:
            a[j] = 1 - s[j]
            b[j] = s[j] * h_tilde


@jit
def minimal_forward(p, h0, lstm, s, out):
    """out (T, B, H) = every h_t from p (T, B, G*H) and h0 (B, H); s = sigmoid(p), step by step
    (so that a step's numbers stay in cache), into s (T, B, G*H), or (1, B, G*H) scratch when
    no backward pass needs it."""
    steps, batch, width = p.shape
    hidden = h0.shape[1]
    a_own = np.empty(hidden, dtype=out.dtype)
    b_own = np.empty(hidden, dtype=out.dtype)
    # unowned: their rows, and their passing to `_coefficients` (which takes a reference to
    # each array argument), count no references; the caller holds the arguments, and a_own
    # and b_own are kept until the loop ends (`alive`)
    p, h0, s, out = unowned(p), unowned(h0), unowned(s), unowned(out)
    a, b = unowned(a_own), unowned(b_own)
    for t in range(steps):
        s_step = s[t if s.shape[0] > 1 else 0]
        flat_p, flat_s = p[t].reshape(-1), s_step.reshape(-1)
        for k in range(batch * width):
            flat_s[k] = flat_p[k]
        sigmoid_(flat_s, 0, batch * width)
        for i in range(batch):
            _coefficients(p[t, i], s_step[i], lstm, a, b)
            prev, row = (out[t - 1, i] if t > 0 else h0[i]), out[t, i]
            for j in range(hidden):
                row[j] = a[j] * prev[j] + b[j]
    alive(a_own)
    alive(b_own)


@jit
def minimal_backward(p, s, h0, h, lstm, grad_h, grad_p):
    """Fill grad_p (T, B, G*H) = dL/dp from grad_h = dL/dh (T, B, H), the forward's h and
    s = sigmoid(p); return dL/dh0 (B, H)."""
    steps, batch, _ = p.shape
    hidden = h0.shape[1]
    carry_own = np.zeros_like(h0)  # a_{t+1} * g_{t+1} per sequence
    a_own = np.empty(hidden, dtype=h.dtype)
    b_own = np.empty(hidden, dtype=h.dtype)
    p, s, h0, h = unowned(p), unowned(s), unowned(h0), unowned(h)  # as in minimal_forward
    grad_h, grad_p = unowned(grad_h), unowned(grad_p)
    carry, a, b = unowned(carry_own), unowned(a_own), unowned(b_own)
    for t in range(steps - 1, -1, -1):
        for i in range(batch):
            p_row, s_row, grad_row = p[t, i], s[t, i], grad_p[t, i]
            _coefficients(p_row, s_row, lstm, a, b)
            prev, upstream, carried = (h[t - 1, i] if t > 0 else h0[i]), grad_h[t, i], carry[i]
            first = (1 + lstm) * hidden  # where p_h starts
            p_h, s_h, grad_h_block = p_row[first:], s_row[first:], grad_row[first:]
            s_i, grad_i = s_row[hidden:], grad_row[hidden:]
            for j in range(hidden):
                g = upstream[j] + carried[j]
                grad_a, grad_b = g * prev[j], g
                carried[j] = a[j] * g
                v, sig_h = p_h[j], s_h[j]
                h_tilde = v + 0.5 if v >= 0 else sig_h
                slope = 1.0 if v >= 0 else sig_h * (1 - sig_h)  # g'(p_h)
                if lstm:
                    s_f, s_i_j = s_row[j], s_i[j]
                    total = s_f + s_i_j
                    mixed = (grad_a - h_tilde * grad_b) / (total * total)
                    grad_row[j] = s_i_j * mixed * s_f * (1 - s_f)
                    grad_i[j] = -s_f * mixed * s_i_j * (1 - s_i_j)
                    grad_h_block[j] = s_i_j / total * slope * grad_b
                else:
                    s_z = s_row[j]
                    grad_row[j] = (h_tilde * grad_b - grad_a) * s_z * (1 - s_z)
                    grad_h_block[j] = s_z * slope * grad_b
    alive(a_own)
    alive(b_own)
    return carry_own


def _minimal_forward(p: Tensor, h0: Tensor, lstm: bool, keep: bool) -> tuple[Tensor, Tensor]:
    """(h (T, B, H), sigmoid(p) (T, B, G*H), or one step's scratch unless `keep`)."""
    steps, batch, width = p.shape
    h = p.new_empty(steps, batch, h0.shape[1])
    s = p.new_empty(steps if keep else 1, batch, width)
    minimal_forward(numpy_view(p), numpy_view(h0), lstm, s.numpy(), h.numpy())
    return h, s


class MinimalSequence(torch.autograd.Function):
    """h (T, B, H) of minGRU or minLSTM from the preactivations p (T, B, G*H) and h0 (B, H)."""

    @staticmethod
    def forward(ctx, p: Tensor, h0: Tensor, lstm: bool) -> Tensor:
        h, s = _minimal_forward(p, h0, lstm, keep=True)
        ctx.save_for_backward(p, h0, h, s)  # s = sigmoid(p) for the backward pass
        ctx.lstm = lstm
        return h

    @staticmethod
    def backward(ctx, grad_h: Tensor):
        if torch.is_grad_enabled():  # create_graph=True: through torch's operators instead
            p, h0, _, _ = ctx.saved_tensors
            lstm = ctx.lstm

            def reference(p: Tensor, h0: Tensor) -> Tensor:
                return minimal_reference(p, h0, lstm)

            grads = recomputed_gradients(reference, (p, h0), ctx.needs_input_grad[:2], (grad_h,))
            return (*grads, None)
        return MinimalSequence.compiled_backward(ctx, grad_h)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def compiled_backward(ctx, grad_h: Tensor):
        p, h0, h, s = ctx.saved_tensors
        grad_p = p.new_empty(p.shape)
        grad_h0 = minimal_backward(
            numpy_view(p), s.numpy(), numpy_view(h0), h.numpy(), ctx.lstm,
            numpy_view(grad_h), grad_p.numpy(),
        )  # fmt: skip
        return grad_p, torch.from_numpy(grad_h0), None


def minimal_reference(p: Tensor, h0: Tensor, lstm: bool) -> Tensor:
    """`minimal_forward` in torch's operators (the coefficients of `rnnkit.minimal`'s cells, then
    `recurrence_reference`): `MinimalSequence`'s backward with a graph."""
    from rnnkit.minimal import positive  # the minimal cells import this module

    hidden = h0.shape[-1]
    s = p.sigmoid()
    h_tilde = positive(p[..., (1 + lstm) * hidden :])
    if lstm:
        f, i = s[..., :hidden], s[..., hidden : 2 * hidden]
        a, b = f / (f + i), i / (f + i) * h_tilde
    else:
        z = s[..., :hidden]
        a, b = 1 - z, z * h_tilde
    return recurrence_reference(a, b, h0)


def minimal_scan(preactivations: Tensor, h0: Tensor, lstm: bool) -> Tensor:
    """Every h_t of minGRU (`lstm` False: blocks z|h) or minLSTM (True: f|i|h) from the
    preactivations W_ih x_t + b_ih (T, B, G*H) and h0 (B, H), gates and recurrence in one
    compiled pass: (T, B, H), CPU float32 or float64 tensors of one dtype, differentiable in
    both (a gradient of the gradient through `minimal_reference`)."""
    gates = 3 if lstm else 2
    steps, batch, width = preactivations.shape
    if width % gates or h0.shape != (batch, width // gates):
        shapes = f"{tuple(preactivations.shape)}, {tuple(h0.shape)}"
        raise ValueError(f"preactivations (T, B, {gates}*H) and h0 (B, H) expected, got {shapes}")
    if needs_grad((preactivations, h0)):
        return MinimalSequence.apply(preactivations, h0, lstm)
    return _minimal_forward(preactivations, h0, lstm, keep=False)[0]
