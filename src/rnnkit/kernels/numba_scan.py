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

from rnnkit.kernels._numba_common import jit, numpy_view


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
        ctx.save_for_backward(a, h0, h)
        return h

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_h: Tensor):
        a, h0, h = ctx.saved_tensors
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


def linear_scan(a: Tensor, b: Tensor, h0: Tensor) -> Tensor:
    """Every h_t of h_t = a_t * h_{t-1} + b_t over dim 0, sequentially, compiled: a, b (T, B, H),
    h0 (B, H) -> h (T, B, H), CPU float32 or float64 tensors of one dtype; differentiable in all
    three (once)."""
    if a.shape != b.shape or a.shape[1:] != h0.shape:
        shapes = f"{tuple(a.shape)}, {tuple(b.shape)}, {tuple(h0.shape)}"
        raise ValueError(f"a, b (T, B, H) and h0 (B, H) expected, got {shapes}")
    return LinearRecurrence.apply(a, b, h0)
