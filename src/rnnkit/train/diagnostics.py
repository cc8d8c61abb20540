"""Gradient-flow diagnostics: how much of the loss's gradient reaches each time step.

`hidden_gradient_norms(layer, inputs, loss_fn)` runs a recurrent layer one step at a time, keeps
every hidden state h_t, and returns ||dL/dh_t|| for t = 0 .. T-1. The derivative is the total one:
h_t reaches the loss through the output at t and through every later step, so for a loss on the
last output,

    dL/dh_t = dL/dh_{T-1} * prod_{s=t+1}^{T-1} dh_s/dh_{s-1}

and the product of Jacobians is what vanishes (or explodes) in an Elman RNN. Plot the result with
`rnnkit.plots.plot_gradient_flow`. The layer is any torch.nn-compatible RNN, LSTM or GRU
(`rnnkit.LSTM` or `torch.nn.LSTM`): called as layer(x, hx) -> (output, h_n or (h_n, c_n)).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


def hidden_gradient_norms(
    layer: nn.Module,
    inputs: torch.Tensor,
    loss_fn: Callable[[torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """||dL/dh_t|| for each time step t of one batch: a (T,) tensor.

    layer:   a recurrent layer with batch_first=True, unidirectional
    inputs:  (B, T, H_in)
    loss_fn: maps the top layer's outputs (B, T, H_out) to a scalar loss L
    The norm at t is taken over the whole batch and every layer's h_t, (num_layers, B, H_out).
    The layer's parameter gradients are left as they were.
    """
    if not getattr(layer, "batch_first", False):
        raise ValueError("hidden_gradient_norms needs a layer built with batch_first=True")
    if getattr(layer, "bidirectional", False):
        raise ValueError("hidden_gradient_norms needs a unidirectional layer (h_t has one past)")
    hidden_states = []  # h_t: (num_layers, B, H_out), each a node the gradient passes through
    outputs = []  # the top layer's h_t: (B, H_out)
    hx = None
    for t in range(inputs.shape[1]):
        _, hx = layer(inputs[:, t : t + 1], hx)  # one step, state carried
        h = hx[0] if isinstance(hx, tuple) else hx  # LSTM: (h, c); RNN, GRU: h
        hidden_states.append(h)
        outputs.append(h[-1])
    loss = loss_fn(torch.stack(outputs, dim=1))  # (B, T, H_out) -> scalar
    grads = torch.autograd.grad(loss, hidden_states)  # total derivatives; .grad untouched
    return torch.stack([g.norm() for g in grads]).detach()
