"""The autograd glue of the compiled variant kernels (`numba_lstm.py`, `numba_variants.py`):
a cell's compiled recurrence is a pair of functions (`Loops`), called with the tensors that
autograd differentiates and the constants of one call (`Static`); `CompiledSequence` turns such
a pair into an autograd Function, and `run` calls it (or only the forward pass when no gradient
is wanted). The loops themselves are passed in; nothing here is compiled.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from rnnkit.kernels._numba_common import needs_grad


class Loops(NamedTuple):
    """A cell's compiled recurrence: `forward(static, tensors, save) -> (outputs, tape)` and
    `backward(static, tensors, saved, grads) -> gradients of tensors`."""

    forward: Callable
    backward: Callable


class Static(NamedTuple):
    """What a kernel call needs besides its differentiable tensors: the sequences' lengths and
    order, the direction, the masks (no gradient) and LN's epsilon."""

    lengths: np.ndarray  # (B,) int64
    order: np.ndarray  # (B,) int64, longest first
    padded: bool  # some sequence is shorter than T
    reverse: bool
    h_mask: Tensor | None  # (B, P) recurrent-dropout mask
    zone_h: Tensor | None  # (T, B, P) zoneout's draws (training) or rate (eval) for h
    zone_c: Tensor | None  # (T, B, H) the same for LSTM's c
    eps: float
    relu: bool = False  # Elman's nonlinearity


def pair(gain: Tensor | None, shift: Tensor | None) -> Tensor | None:
    """LN's gain and shift stacked as (2, G*H) for a kernel, or None without layer norm."""
    return None if gain is None else torch.stack([gain.detach(), shift.detach()])


class CompiledSequence(torch.autograd.Function):
    """One layer direction through a cell's compiled loops (`Loops`): the forward pass keeps its
    tape, the backward pass runs the backward loop on it. Inputs that are None get None."""

    @staticmethod
    def forward(ctx, loops: Loops, static: Static, *tensors):
        outputs, tape = loops.forward(static, tensors, save=True)
        ctx.loops, ctx.static, ctx.count = loops, static, len(tensors)
        ctx.save_for_backward(*tensors, tape)
        return outputs

    @staticmethod
    def backward(ctx, *grads):
        if torch.is_grad_enabled():
            raise RuntimeError(
                "a gradient of a gradient (create_graph=True) cannot go through the compiled "
                "kernel of the variant layers (layer norm, peepholes, dropout, zoneout, weight "
                "drop, projections); build the layer with backend='reference', whose torch "
                "operators are differentiable any number of times"
            )
        return CompiledSequence.compiled_backward(ctx, *grads)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def compiled_backward(ctx, *grads):
        saved = ctx.saved_tensors
        tensors = saved[: ctx.count]
        result = ctx.loops.backward(ctx.static, tensors, saved[ctx.count :], grads)
        needs = ctx.needs_input_grad[2:]
        pairs = zip(result, tensors, needs, strict=True)
        return (None, None, *(g if need and t is not None else None for g, t, need in pairs))


def run(loops: Loops, static: Static, tensors: tuple) -> tuple:
    """The outputs of `loops` on `tensors`, through autograd when a gradient is wanted."""
    if needs_grad(tensors):
        return CompiledSequence.apply(loops, static, *tensors)
    return loops.forward(static, tensors, save=False)[0]
