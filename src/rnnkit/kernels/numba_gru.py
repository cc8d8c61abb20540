"""A GRU layer direction as one compiled loop over time, forward and backward (Numba, CPU).

Equations (gate order r|z|n as torch.nn.GRU), with x_proj = x @ W_ih.T + b_ih done for all steps
as one matrix product before the loop and h_proj = h @ W_hh.T + b_hh inside it:

    r  = sigmoid(x_proj_r + h_proj_r)
    z  = sigmoid(x_proj_z + h_proj_z)
    n  = tanh(x_proj_n + r * h_proj_n)
    h' = (1 - z) * n + z * h

The backward pass is backpropagation through time written out by hand: one loop from the last
step to the first carries dL/dh and writes the gradients of x_proj and of h_proj's n third per
step (its r and z thirds equal x_proj's); the gradients of x, W_ih, W_hh and the biases then
come from matrix products over all steps.
Tests prove outputs and gradients equal to torch.nn.GRU (`tests/test_kernels_sequence.py`).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from rnnkit.kernels._numba_common import (
    PREFETCH_AHEAD,
    alive,
    bias_or_zeros,
    cell_loop_gradients,
    check_sequence_args,
    jit,
    jit_inline,
    lengths_and_order,
    needs_grad,
    numpy_view,
    offset,
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
from rnnkit.kernels._numba_products import operand, product_prefix, project, whole_product
from rnnkit.kernels._onednn import summed_outer_products


@jit_inline
def gru_gates(gates, x_proj, h_proj):
    """Fill gates (4H,) = r|z|n|h_proj_n of one sequence from its x_proj and h_proj (3H,)."""
    hidden = len(h_proj) // 3
    for j in range(2 * hidden):
        gates[j] = x_proj[j] + h_proj[j]
    sigmoid_(gates, 0, 2 * hidden)  # r, z
    for j in range(hidden):
        gates[3 * hidden + j] = h_proj[2 * hidden + j]
        gates[2 * hidden + j] = x_proj[2 * hidden + j] + gates[j] * h_proj[2 * hidden + j]
    tanh_(gates, 2 * hidden, 3 * hidden)  # n


@jit
def gru_forward_loop(
    x_proj, h0, weight_hh, blas, bias_hh, lengths, order, reverse, output, gates, h_prev, save
):
    """Run the recurrence; fill output (T, B, H) and, if `save`, h_prev (T, B, H), the state
    before each step, and gates (T, B, 4H) = r|z|n|h_proj_n for the backward pass (else they
    are (1, B, ...) scratch). weight_hh (3H, H) as `product_operand` gives it for `blas`.
    Returns the final state (B, H).

    The states live in `order` (longest first), so the running ones are rows 0..n_active-1 and
    h @ W_hh.T is one product over them (`product_prefix`: BLAS or the blocked loop); so are the
    step's pre-activations, so that each nonlinearity is one call over one contiguous block of
    all running sequences. Rows are read through 1-D views, whose unit stride lets LLVM
    vectorise the loops over units."""
    batch, hidden = h0.shape
    identity_own = np.arange(batch)
    h_own = sort_rows(h0, order)  # (B, H), the running state, row i for sequence order[i]
    h_proj_own = np.empty((batch, 3 * hidden), dtype=h0.dtype)  # (B, 3H)
    rz_own = np.empty((batch, 2 * hidden), dtype=h0.dtype)  # (B, 2H): r|z of the step
    n_gate_own = np.empty((batch, hidden), dtype=h0.dtype)  # (B, H): n of the step
    # every array below is unowned, so that its views and its passing to the inlined helpers
    # take no reference counts (`unowned`): the caller holds the arguments, h_own is returned
    # and the other owners are kept until the loop ends (`alive`)
    x_proj, output = unowned(x_proj), unowned(output)
    gates, h_prev = unowned(gates), unowned(h_prev)
    lengths, order, weight_hh = unowned(lengths), unowned(order), unowned(weight_hh)
    h, h_proj, identity = unowned(h_own), unowned(h_proj_own), unowned(identity_own)
    rz, n_gate = unowned(rz_own), unowned(n_gate_own)
    rz_flat, n_flat = rz.reshape(-1), n_gate.reshape(-1)
    n_active = batch
    for step in range(lengths[order[0]]):
        n_active = running(lengths, order, step, n_active)
        prefetch_step(x_proj, lengths, order, n_active, step + PREFETCH_AHEAD, reverse)
        product_prefix(weight_hh, blas, h, n_active, h_proj, identity)
        for i in range(n_active):
            x_row = x_proj[position(lengths, order[i], step, reverse), order[i]]
            h_proj_row, rz_row = h_proj[i], rz[i]
            for j in range(2 * hidden):
                rz_row[j] = x_row[j] + (h_proj_row[j] + bias_hh[j])
        sigmoid_(rz_flat, 0, n_active * 2 * hidden)
        for i in range(n_active):
            b = order[i]
            t = position(lengths, b, step, reverse)
            g, x_row, h_proj_row = gates[t if save else 0, b], x_proj[t, b], h_proj[i]
            r_row, n_row = rz[i], n_gate[i]
            for j in range(hidden):  # offset(k * H, j): unsigned, so that the loop vectorises
                n_at = offset(2 * hidden, j)
                h_proj_n = h_proj_row[n_at] + bias_hh[n_at]
                g[offset(3 * hidden, j)] = h_proj_n
                n_row[j] = x_row[n_at] + r_row[j] * h_proj_n
        tanh_(n_flat, 0, n_active * hidden)
        for i in range(n_active):
            b = order[i]
            t = position(lengths, b, step, reverse)
            slot = t if save else 0
            g, rz_row, n_row, h_row = gates[slot, b], rz[i], n_gate[i], h[i]
            h_prev_row, output_row = h_prev[slot, b], output[t, b]
            for j in range(2 * hidden):
                g[j] = rz_row[j]
            for j in range(hidden):
                z = rz_row[offset(hidden, j)]
                n = n_row[j]
                g[offset(2 * hidden, j)] = n
                h_prev_row[j] = h_row[j]
                h_new = n + z * (h_row[j] - n)  # (1 - z) * n + z * h, rounded as torch does
                h_row[j] = h_new
                output_row[j] = h_new
    alive(identity_own)
    alive(h_proj_own)
    alive(rz_own)
    alive(n_gate_own)
    return unsort(h_own, order)


@jit
def gru_backward_loop(
    grad_output, grad_h_n, weight_hh_t, blas, gates, h_prev, lengths, order, reverse,
    grad_x_proj, grad_h_proj_n,
):  # fmt: skip
    """Backpropagate through time; fill grad_x_proj (T, B, 3H) = dL/d(x_proj) and
    grad_h_proj_n (T, B, H) = dL/d(h_proj_n); dL/d(h_proj) is grad_x_proj in its r and z
    thirds, so it is not written twice. weight_hh_t is W_hh.T (H, 3H) as `product_operand`
    gives it for `blas`. Returns dL/dh0 (B, H). Rows of the carried gradients follow `order`, as in
    `gru_forward_loop`."""
    batch, hidden = grad_h_n.shape
    identity_own = np.arange(batch)
    grad_h_own = sort_rows(grad_h_n, order)  # (B, H), dL/dh through W_hh, carried back
    grad_direct_own = np.zeros_like(grad_h_own)  # (B, H), dL/dh through h' = ... + z * h
    step_grad_own = np.zeros((batch, 3 * hidden), dtype=grad_h_n.dtype)  # (B, 3H): dL/d(h_proj)
    grad_output, gates, h_prev = unowned(grad_output), unowned(gates), unowned(h_prev)
    grad_x_proj, grad_h_proj_n = unowned(grad_x_proj), unowned(grad_h_proj_n)
    lengths, order, weight_hh_t = unowned(lengths), unowned(order), unowned(weight_hh_t)
    grad_h, grad_direct = unowned(grad_h_own), unowned(grad_direct_own)  # as in the forward loop
    step_grad, identity = unowned(step_grad_own), unowned(identity_own)
    # 1 in the tensors' dtype (an int literal would make float32 arithmetic float64), and
    # offset(k * H, j) (unsigned) for the gate thirds, so that the loops vectorise
    one = grad_h_n.dtype.type(1)
    dh_row = np.zeros(hidden, dtype=grad_h_n.dtype)  # dL/dh_t of one sequence
    n_active = 0
    for step in range(lengths[order[0]] - 1, -1, -1):
        n_active = running(lengths, order, step, n_active)
        for i in range(n_active):
            b = order[i]
            t = position(lengths, b, step, reverse)
            g, h_prev_row, grad_output_row = gates[t, b], h_prev[t, b], grad_output[t, b]
            grad_x_row, grad_n_row = grad_x_proj[t, b], grad_h_proj_n[t, b]
            grad_h_row = step_grad[i]
            carried, direct = grad_h[i], grad_direct[i]
            # four passes over few arrays each: one loop over all of them needs more runtime
            # alias checks than LLVM makes, and stays scalar
            for j in range(hidden):  # dL/dh_t, and its part through h' = ... + z * h
                dh = carried[j] + direct[j] + grad_output_row[j]
                dh_row[j] = dh
                direct[j] = dh * g[offset(hidden, j)]
            for j in range(hidden):  # dL/da of the three gates, into grad_x_row
                z_at, n_at = offset(hidden, j), offset(2 * hidden, j)
                r, z, n, dh = g[j], g[z_at], g[n_at], dh_row[j]
                da_n = dh * (one - z) * (one - n * n)  # dL/d(x_proj_n + r * h_proj_n)
                grad_x_row[j] = da_n * g[offset(3 * hidden, j)] * r * (one - r)  # r's
                grad_x_row[z_at] = dh * (h_prev_row[j] - n) * z * (one - z)  # z's
                grad_x_row[n_at] = da_n
            for j in range(2 * hidden):  # dL/d(h_proj) is dL/d(x_proj) in the r and z thirds
                grad_h_row[j] = grad_x_row[j]
            for j in range(hidden):  # and dL/d(h_proj_n) = r * dL/d(x_proj_n)
                n_at = offset(2 * hidden, j)
                grad_n_row[j] = grad_h_row[n_at] = grad_x_row[n_at] * g[j]
        product_prefix(weight_hh_t, blas, step_grad, n_active, grad_h, identity)
    alive(identity_own)
    alive(step_grad_own)
    return unsort(grad_h_own + grad_direct_own, order)


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
        x_proj.numpy(), numpy_view(h0), *operand(weight_hh, batch, x),
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
        ctx.save_for_backward(x, weight_ih, weight_hh, gates, h_prev, h0, bias_ih, bias_hh)
        ctx.reverse, ctx.lengths_given = reverse, lengths
        return output, h_n

    @staticmethod
    def backward(ctx, grad_output, grad_h_n):
        if torch.is_grad_enabled():  # create_graph=True: through torch's operators instead
            grads = cell_loop_gradients(ctx, torch._VF.gru_cell, (grad_output, grad_h_n))
            return (*grads, None, None)
        return GRUSequence.compiled_backward(ctx, grad_output, grad_h_n)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def compiled_backward(ctx, grad_output, grad_h_n):
        x, weight_ih, weight_hh, gates, h_prev, _, _, _ = ctx.saved_tensors
        steps, batch, hidden = h_prev.shape
        new = x.new_empty if ctx.lengths.min() == steps else x.new_zeros
        grad_x_proj = new(steps, batch, 3 * hidden)
        grad_h_proj_n = new(steps, batch, hidden)
        grad_h0 = gru_backward_loop(
            numpy_view(grad_output), numpy_view(grad_h_n), *operand(weight_hh.t(), batch, x),
            gates.numpy(), h_prev.numpy(), ctx.lengths, ctx.order, ctx.reverse,
            grad_x_proj.numpy(), grad_h_proj_n.numpy(),
        )  # fmt: skip
        needs = ctx.needs_input_grad
        grad_x = whole_product(grad_x_proj, weight_ih.t()) if needs[0] else None
        grad_w_ih, grad_b_ih = weight_grads(grad_x_proj, x, needs[2], needs[4])
        grad_w_hh, grad_b_hh = hh_grads(grad_x_proj, grad_h_proj_n, h_prev, needs[3], needs[5])
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


def hh_grads(
    grad_x_proj: Tensor, grad_h_proj_n: Tensor, h_prev: Tensor, needs_weight: bool, needs_bias: bool
) -> tuple[Tensor | None, Tensor | None]:
    """Gradients of W_hh and b_hh from dL/d(h_proj) = grad_x_proj's r and z thirds beside
    grad_h_proj_n, by rows: (r|z rows, n rows), as `weight_grads` would from the whole."""
    steps, batch, hidden = h_prev.shape
    flat_x = grad_x_proj.reshape(steps * batch, 3 * hidden)[:, : 2 * hidden]  # (T*B, 2H)
    flat_n = grad_h_proj_n.reshape(steps * batch, hidden)  # (T*B, H)
    grad_weight = grad_bias = None
    if needs_weight:
        states = h_prev.reshape(steps * batch, hidden)
        parts = (summed_outer_products(flat_x, states), summed_outer_products(flat_n, states))
        grad_weight = torch.cat(parts)
    if needs_bias:
        grad_bias = torch.cat((flat_x.sum(0), flat_n.sum(0)))
    return grad_weight, grad_bias


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
