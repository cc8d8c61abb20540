"""An Elman (vanilla) RNN layer direction as one compiled loop over time, forward and backward
(Numba, CPU).

Equation, as torch.nn.RNN with f = tanh or relu, with x_proj = x @ W_ih.T + b_ih + b_hh done for
all steps as one matrix product before the loop:

    h' = f(x_proj + h @ W_hh.T)

The backward pass carries dL/dh from the last step to the first and writes dL/d(pre-activation)
per step; the gradients of x, W_ih, W_hh and the biases then come from matrix products over all
steps. Tests prove outputs and gradients equal to torch.nn.RNN (`tests/test_kernels_sequence.py`).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from rnnkit.kernels._numba_common import (
    PREFETCH_AHEAD,
    alive,
    cell_loop_gradients,
    check_sequence_args,
    copy_,
    jit,
    lengths_and_order,
    needs_grad,
    numpy_view,
    position,
    prefetch_step,
    running,
    sort_rows,
    tanh_,
    unowned,
    unsort,
    weight_grads,
)
from rnnkit.kernels._numba_products import operand, product_prefix, project, whole_product

NONLINEARITIES = ("tanh", "relu")


@jit
def elman_forward_loop(
    x_proj, h0, weight_hh, blas, lengths, order, reverse, relu, output, h_prev, save
):
    """Run the recurrence; fill output (T, B, H) and, if `save`, h_prev (T, B, H), the state
    before each step, for the backward pass (else it is (1, B, H) scratch). weight_hh (H, H) as
    `product_operand` gives it for `blas`. Returns the final state (B, H). The states live in
    `order`, so the running ones are rows 0..n_active-1 and h @ W_hh.T is one product over them
    (`product_prefix`)."""
    batch, hidden = h0.shape
    identity_own = np.arange(batch)
    zero = h0.dtype.type(0)  # an int literal would make max() float64
    h_own = sort_rows(h0, order)  # (B, H), the running state, row i for sequence order[i]
    pre_own = np.empty_like(h_own)  # (B, H), the pre-activation of the current step
    # every array below is unowned, so that its views and its passing to the inlined helpers
    # take no reference counts (`unowned`): the caller holds the arguments, h_own is returned
    # and the other owners are kept until the loop ends (`alive`)
    x_proj, output, h_prev = unowned(x_proj), unowned(output), unowned(h_prev)
    lengths, order, weight_hh = unowned(lengths), unowned(order), unowned(weight_hh)
    h, pre, identity = unowned(h_own), unowned(pre_own), unowned(identity_own)
    pre_flat = pre.reshape(-1)
    n_active = batch
    for step in range(lengths[order[0]]):
        n_active = running(lengths, order, step, n_active)
        prefetch_step(x_proj, lengths, order, n_active, step + PREFETCH_AHEAD, reverse)
        product_prefix(weight_hh, blas, h, n_active, pre, identity)
        for i in range(n_active):
            pre_row = pre[i]
            x_row = x_proj[position(lengths, order[i], step, reverse), order[i]]
            for j in range(hidden):
                pre_row[j] += x_row[j]
        if relu:
            for k in range(n_active * hidden):
                pre_flat[k] = max(pre_flat[k], zero)
        else:
            tanh_(pre_flat, 0, n_active * hidden)  # one call over all running rows
        for i in range(n_active):
            b = order[i]
            t = position(lengths, b, step, reverse)
            copy_(h[i], h_prev[t if save else 0, b])
            copy_(pre[i], h[i])
            copy_(pre[i], output[t, b])
    alive(identity_own)
    alive(pre_own)
    return unsort(h_own, order)


@jit
def elman_backward_loop(
    grad_output, grad_h_n, weight_hh_t, blas, output, lengths, order, reverse, relu, grad_pre
):
    """Backpropagate through time; fill grad_pre (T, B, H) = dL/d(pre-activation).
    weight_hh_t is W_hh.T (H, H) as `product_operand` gives it for `blas`. Returns dL/dh0 (B, H).
    Rows of the carried gradients follow `order`, as in `elman_forward_loop`."""
    batch, hidden = grad_h_n.shape
    identity_own = np.arange(batch)
    zero, one = grad_h_n.dtype.type(0), grad_h_n.dtype.type(1)  # int literals: float64 math
    grad_h_own = sort_rows(grad_h_n, order)  # (B, H), dL/dh carried back through time
    step_grad_own = np.zeros_like(grad_h_own)  # (B, H)
    grad_output, output, grad_pre = unowned(grad_output), unowned(output), unowned(grad_pre)
    lengths, order, weight_hh_t = unowned(lengths), unowned(order), unowned(weight_hh_t)
    grad_h, step_grad = unowned(grad_h_own), unowned(step_grad_own)  # as in the forward loop
    identity = unowned(identity_own)
    n_active = 0
    for step in range(lengths[order[0]] - 1, -1, -1):
        n_active = running(lengths, order, step, n_active)
        for i in range(n_active):
            b = order[i]
            t = position(lengths, b, step, reverse)
            carried, grad_output_row, output_row = grad_h[i], grad_output[t, b], output[t, b]
            grad = step_grad[i]
            for j in range(hidden):
                dh = carried[j] + grad_output_row[j]
                h = output_row[j]
                if relu:
                    grad[j] = dh if h > 0 else zero
                else:
                    grad[j] = dh * (one - h * h)
            copy_(grad, grad_pre[t, b])
        product_prefix(weight_hh_t, blas, step_grad, n_active, grad_h, identity)
    alive(identity_own)
    alive(step_grad_own)
    return unsort(grad_h_own, order)


def elman_forward(
    x, h0, weight_ih, weight_hh, bias_ih, bias_hh, lengths, reverse, nonlinearity, save
):
    """The forward pass: (output, h_n, h_prev, lengths, order), see `elman_forward_loop`."""
    steps, batch, _, hidden = check_sequence_args(
        x, h0, weight_ih, weight_hh, bias_ih, bias_hh, gates=1
    )
    if nonlinearity not in NONLINEARITIES:
        raise ValueError(f"nonlinearity must be one of {NONLINEARITIES}, got {nonlinearity!r}")
    lengths_np, order = lengths_and_order(lengths, steps, batch)
    new = x.new_empty if lengths is None else x.new_zeros  # padding must read as zeros
    bias = bias_ih if bias_hh is None else bias_hh if bias_ih is None else bias_ih + bias_hh
    x_proj = project(x, weight_ih, bias)  # (T, B, H)
    output, h_prev = new(steps, batch, hidden), new(steps if save else 1, batch, hidden)
    h_n = elman_forward_loop(
        x_proj.numpy(), numpy_view(h0), *operand(weight_hh, batch, x), lengths_np, order,
        reverse, nonlinearity == "relu", output.numpy(), h_prev.numpy(), save,
    )  # fmt: skip
    return output, torch.from_numpy(h_n), h_prev, lengths_np, order


class ElmanSequence(torch.autograd.Function):
    """One direction of one Elman layer over a whole sequence, with the compiled loops above."""

    @staticmethod
    def forward(ctx, x, h0, weight_ih, weight_hh, bias_ih, bias_hh, lengths, reverse, nonlinearity):
        output, h_n, h_prev, ctx.lengths, ctx.order = elman_forward(
            x, h0, weight_ih, weight_hh, bias_ih, bias_hh, lengths, reverse, nonlinearity, save=True
        )
        ctx.save_for_backward(x, weight_ih, weight_hh, output, h_prev, h0, bias_ih, bias_hh)
        ctx.reverse, ctx.relu, ctx.lengths_given = reverse, nonlinearity == "relu", lengths
        return output, h_n

    @staticmethod
    def backward(ctx, grad_output, grad_h_n):
        if torch.is_grad_enabled():  # create_graph=True: through torch's operators instead
            kernel = torch._VF.rnn_relu_cell if ctx.relu else torch._VF.rnn_tanh_cell
            grads = cell_loop_gradients(ctx, kernel, (grad_output, grad_h_n))
            return (*grads, None, None, None)
        return ElmanSequence.compiled_backward(ctx, grad_output, grad_h_n)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def compiled_backward(ctx, grad_output, grad_h_n):
        x, weight_ih, weight_hh, output, h_prev, _, _, _ = ctx.saved_tensors
        steps, batch, hidden = output.shape
        new = x.new_empty if ctx.lengths.min() == steps else x.new_zeros
        grad_pre = new(steps, batch, hidden)
        grad_h0 = elman_backward_loop(
            numpy_view(grad_output), numpy_view(grad_h_n), *operand(weight_hh.t(), batch, x),
            output.detach().numpy(), ctx.lengths, ctx.order, ctx.reverse, ctx.relu,
            grad_pre.numpy(),
        )  # fmt: skip
        needs = ctx.needs_input_grad
        grad_x = whole_product(grad_pre, weight_ih.t()) if needs[0] else None
        grad_w_ih, grad_b = weight_grads(grad_pre, x, needs[2], needs[4] or needs[5])
        grad_w_hh, _ = weight_grads(grad_pre, h_prev, needs[3], False)
        grad_b_ih = grad_b if needs[4] else None
        grad_b_hh = grad_b if needs[5] else None
        return (
            grad_x,
            torch.from_numpy(grad_h0),
            grad_w_ih,
            grad_w_hh,
            grad_b_ih,
            grad_b_hh,
            None,
            None,
            None,
        )


def elman_sequence(
    x: Tensor,
    h0: Tensor,
    weight_ih: Tensor,
    weight_hh: Tensor,
    bias_ih: Tensor | None,
    bias_hh: Tensor | None,
    lengths: Tensor | None = None,
    reverse: bool = False,
    nonlinearity: str = "tanh",
) -> tuple[Tensor, Tensor]:
    """One direction of one Elman layer over x (T, B, H_in) from h0 (B, H), time-major.

    Weights in torch.nn.RNN's layout: weight_ih (H, H_in), weight_hh (H, H), biases (H,) or
    None; `nonlinearity` "tanh" or "relu". `lengths` and `reverse` as in `gru_sequence`.
    Returns (output (T, B, H), h_n (B, H)); differentiable in every tensor.
    """
    arguments = (x, h0, weight_ih, weight_hh, bias_ih, bias_hh, lengths, reverse, nonlinearity)
    if needs_grad(arguments):
        return ElmanSequence.apply(*arguments)
    return elman_forward(*arguments, save=False)[:2]
