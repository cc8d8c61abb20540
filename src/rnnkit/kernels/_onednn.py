"""dL/dW = grad.T @ inputs summed over every step and sequence, through oneDNN where torch
carries it: the weight gradients of all the compiled sequence kernels.

torch's CPU matrix product calls MKL, which on AMD processors runs its AVX2 code: 82-93 GFLOP/s
on one thread of a Zen 5 core for these products, whose reduction runs over T * B rows. oneDNN,
the library under torch.nn.LSTM on the CPU, chooses its kernels by the processor's features and
ran the same products at 117-193 GFLOP/s, 1.4-2.3x MKL's time (`benchmarks/RESULTS.md`, "A
processor with full-width AVX-512"). torch exposes it as `torch.ops.mkldnn._linear_pointwise`
(the op Inductor's CPU code calls); a = inputs.T and b = grad.T there, both with the long
dimension T * B inside, gives (grad.T @ inputs).T, which measured 1.1-1.6x faster than the
transposed order. Its call costs about 10 us, so small products stay with torch's matmul; an
operand whose rows are not contiguous (a slice of columns) it took 1000x longer for, so such
a one is copied first.

The route is taken only where torch has the op and it agreed with torch's matmul on a test
product in this process; float32 only (oneDNN has no float64 product).
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

MIN_MULTIPLY_ADDS = 1 << 21  # below, oneDNN's call costs what its rate saves


@functools.cache
def onednn_available() -> bool:
    """Whether torch carries oneDNN's linear op and it computes grad.T @ inputs here."""
    if not torch.backends.mkldnn.is_available():
        return False
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(67, 5, generator=generator)
    grad = torch.randn(67, 3, generator=generator)
    try:
        got = _onednn_product(grad, inputs)
    except (AttributeError, RuntimeError, NotImplementedError):  # no such op, or it refused
        return False
    return torch.allclose(got, grad.t() @ inputs, rtol=1e-5, atol=1e-5)


def _onednn_product(grad: Tensor, inputs: Tensor) -> Tensor:
    a, b = inputs.contiguous().t(), grad.contiguous().t()
    return torch.ops.mkldnn._linear_pointwise(a, b, None, "none", [], "").t()


def summed_outer_products(grad: Tensor, inputs: Tensor) -> Tensor:
    """grad (N, G).T @ inputs (N, K): (G, K), the sum over N rows of grad[n] outer inputs[n];
    through oneDNN for a float32 product of at least 2**21 multiply-adds, else torch's matmul.
    The result may be a transposed view."""
    rows, outer = grad.shape
    large = rows * outer * inputs.shape[1] >= MIN_MULTIPLY_ADDS
    if grad.dtype == inputs.dtype == torch.float32 and large and onednn_available():
        return _onednn_product(grad, inputs)
    return grad.t() @ inputs
