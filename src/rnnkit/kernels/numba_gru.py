"""A GRU layer direction as one compiled loop over time, forward and backward (Numba, CPU).

Equations (gate order r|z|n as torch.nn.GRU), with x_proj = x @ W_ih.T + b_ih done for all steps
as one matrix product before the loop and h_proj = h @ W_hh.T + b_hh inside it:

    r  = sigmoid(x_proj_r + h_proj_r)
    z  = sigmoid(x_proj_z + h_proj_z)
    n  = tanh(x_proj_n + r * h_proj_n)
    h' = (1 - z) * n + z * h

The backward pass is backpropagation through time written out by hand: one loop from the last
step to the first carries dL/dh and writes the gradients of x_proj and h_proj per step; the
gradients of x, W_ih, W_hh and the biases then come from matrix products over all steps.
Tests prove outputs and gradients equal to torch.nn.GRU (`tests/test_kernels_sequence.py`).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from rnnkit.kernels._numba_common import (
    add_matvec,
    bias_or_zeros,
    check_sequence_args,
    jit,
    lengths_and_order,
    needs_grad,
    numpy_view,
    position,
    project,
    running,
    sigmoid_,
    tanh_,
    weight_grads,
)


@jit
def gru_gates(gates, x_proj, h_proj, work):
    """Fill gates (4H,) = r|z|n|h_proj_n of one sequence from its x_proj and h_proj (3H,)."""
    hidden = len(h_proj) // 3
    for j in range(2 * hidden):
        gates[j] = x_proj[j] + h_proj[j]
    sigmoid_(gates, 0, 2 * hidden, work)  # r, z
    for j in range(hidden):
        gates[3 * hidden + j] = h_proj[2 * hidden + j]
        gates[2 * hidden + j] = x_proj[2 * hidden + j] + gates[j] * h_proj[2 * hidden + j]
    tanh_(gates, 2 * hidden, 3 * hidden, work)  # n


@jit
def gru_forward_loop(
    x_proj, h0, weight_hh, bias_hh, lengths, order, reverse, output, gates, h_prev, save
):
    """Run the recurrence; fill output (T, B, H) and, if `save`, h_prev (T, B, H), the state
    before each step, and gates (T, B, 4H) = r|z|n|h_proj_n for the backward pass (else they
    are (1, B, ...) scratch). Returns the final state (B, H)."""
    batch, hidden = h0.shape
    h = h0.copy()  # (B, H), the running state of every sequence
    h_proj = np.empty((batch, 3 * hidden), dtype=h0.dtype)  # (B, 3H)
    work = np.empty(4 * hidden)  # scratch of the nonlinearities
    n_active = batch
    for step in range(lengths[order[0]]):
        n_active = running(lengths, order, step, n_active)
        for i in range(n_active):
            h_proj[order[i]] = bias_hh
        add_matvec(weight_hh, h, order, n_active, h_proj)
        for i in range(n_active):
            b = order[i]
            t = position(lengths, b, step, reverse)
            slot = t if save else 0
            g = gates[slot, b]
            gru_gates(g, x_proj[t, b], h_proj[b], work)
            for j in range(hidden):
                z = g[hidden + j]
                n = g[2 * hidden + j]
                h_prev[slot, b, j] = h[b, j]
                h[b, j] = n + z * (h[b, j] - n)  # (1 - z) * n + z * h, rounded as torch does
                output[t, b, j] = h[b, j]
    return h


@jit
def gru_backward_loop(
    grad_output,
    grad_h_n,
    weight_hh_t,
    gates,
    h_prev,
    lengths,
    order,
    reverse,
    grad_x_proj,
    grad_h_proj,
):
    """Backpropagate through time; fill grad_x_proj and grad_h_proj (T, B, 3H).
    weight_hh_t is W_hh.T (H, 3H), C-contiguous. Returns dL/dh0 (B, H)."""
    hidden = grad_h_n.shape[1]
    grad_h = grad_h_n.copy()  # (B, H), dL/dh carried back through time
    step_grad = np.zeros((grad_h_n.shape[0], 3 * hidden), dtype=grad_h_n.dtype)  # (B, 3H)
    n_active = 0
    for step in range(lengths[order[0]] - 1, -1, -1):
        n_active = running(lengths, order, step, n_active)
        for i in range(n_active):
            b = order[i]
            t = position(lengths, b, step, reverse)
            for j in range(hidden):
                r = gates[t, b, j]
                z = gates[t, b, hidden + j]
                n = gates[t, b, 2 * hidden + j]
                h_proj_n = gates[t, b, 3 * hidden + j]
                dh = grad_h[b, j] + grad_output[t, b, j]
                da_n = dh * (1 - z) * (1 - n * n)  # dL/d(x_proj_n + r * h_proj_n)
                da_r = da_n * h_proj_n * r * (1 - r)  # dL/d(x_proj_r + h_proj_r)
                da_z = dh * (h_prev[t, b, j] - n) * z * (1 - z)  # dL/d(x_proj_z + h_proj_z)
                grad_x_proj[t, b, j] = da_r
                grad_x_proj[t, b, hidden + j] = da_z
                grad_x_proj[t, b, 2 * hidden + j] = da_n
                step_grad[b, j] = da_r
                step_grad[b, hidden + j] = da_z
                step_grad[b, 2 * hidden + j] = da_n * r
                grad_h[b, j] = dh * z  # the direct path; W_hh.T @ step_grad is added below
            grad_h_proj[t, b] = step_grad[b]
        add_matvec(weight_hh_t, step_grad, order, n_active, grad_h)
    return grad_h


def gru_forward(x, h0, weight_ih, weight_hh, bias_ih, bias_hh, lengths, reverse, save):
    """The forward pass: (output, h_n, gates, h_prev, lengths, order), see `gru_forward_loop`."""
    steps, batch, _, hidden = check_sequence_args(
        x, h0, weight_ih, weight_hh, bias_ih, bias_hh, gates=3
    )
    lengths_np, order = lengths_and_order(lengths, steps, batch)
    new = x.new_empty if lengths is None else x.new_zeros  # padding must read as zeros
    x_proj = project(x, weight_ih, bias_ih)  # (T, B, 3H)
    output = new(steps, batch, hidden)  # (T, B, H)
    saved_steps = steps if save else 1  # T, or 1 for scratch when no backward follows
    h_prev = new(saved_steps, batch, hidden)  # (T, B, H)
    gates = new(saved_steps, batch, 4 * hidden)  # (T, B, 4H): r|z|n|h_proj_n
    h_n = gru_forward_loop(
        x_proj.numpy(), numpy_view(h0), numpy_view(weight_hh),
        numpy_view(bias_or_zeros(bias_hh, 3 * hidden, x)), lengths_np, order, reverse,
        output.numpy(), gates.numpy(), h_prev.numpy(), save,
    )  # fmt: skip
    return output, torch.from_numpy(h_n), gates, h_prev, lengths_np, order


class GRUSequence(torch.autograd.Function):
    """One direction of one GRU layer over a whole sequence, with the compiled loops above."""

    @staticmethod
    def forward(ctx, x, h0, weight_ih, weight_hh, bias_ih, bias_hh, lengths, reverse):
        output, h_n, gates, h_prev, ctx.lengths, ctx.order = gru_forward(
            x, h0, weight_ih, weight_hh, bias_ih, bias_hh, lengths, reverse, save=True
        )
        ctx.save_for_backward(x, weight_ih, weight_hh, gates, h_prev)
        ctx.reverse = reverse
        return output, h_n

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output, grad_h_n):
        x, weight_ih, weight_hh, gates, h_prev = ctx.saved_tensors
        steps, batch, hidden = h_prev.shape
        new = x.new_empty if ctx.lengths.min() == steps else x.new_zeros
        grad_x_proj = new(steps, batch, 3 * hidden)
        grad_h_proj = new(steps, batch, 3 * hidden)
        grad_h0 = gru_backward_loop(
            numpy_view(grad_output), numpy_view(grad_h_n), numpy_view(weight_hh.t()),
            gates.numpy(), h_prev.numpy(), ctx.lengths, ctx.order, ctx.reverse,
            grad_x_proj.numpy(), grad_h_proj.numpy(),
        )  # fmt: skip
        needs = ctx.needs_input_grad
        grad_x = grad_x_proj @ weight_ih if needs[0] else None
        grad_w_ih, grad_b_ih = weight_grads(grad_x_proj, x, needs[2], needs[4])
        grad_w_hh, grad_b_hh = weight_grads(grad_h_proj, h_prev, needs[3], needs[5])
        return (
            grad_x,
            torch.from_numpy(grad_h0),
            grad_w_ih,
            grad_w_hh,
            grad_b_ih,
            grad_b_hh,
            None,
            None,
        )


def gru_sequence(
    x: Tensor,
    h0: Tensor,
    weight_ih: Tensor,
    weight_hh: Tensor,
    bias_ih: Tensor | None,
    bias_hh: Tensor | None,
    lengths: Tensor | None = None,
    reverse: bool = False,
) -> tuple[Tensor, Tensor]:
    """One direction of one GRU layer over x (T, B, H_in) from h0 (B, H), time-major.

    Weights in torch.nn.GRU's layout: weight_ih (3H, H_in), weight_hh (3H, H), biases (3H,) or
    None. `lengths` (B,) in [1, T] or None; past a sequence's length its output is zero, and h_n
    is its state at its true end. With `reverse`, each sequence runs from its own last valid
    step down to 0. Returns (output (T, B, H), h_n (B, H)); differentiable in every tensor.
    """
    arguments = (x, h0, weight_ih, weight_hh, bias_ih, bias_hh, lengths, reverse)
    if needs_grad(arguments):
        return GRUSequence.apply(*arguments)
    return gru_forward(*arguments, save=False)[:2]
