"""Whole-sequence matrix products through oneDNN where torch carries it: the weight gradients
dL/dW = grad.T @ inputs summed over every step and sequence (all the compiled sequence kernels),
and x @ W.T and dL/dx = grad @ W over all steps where they have too few rows for the packed tiles.

torch's CPU matrix product calls MKL, which on AMD processors runs its AVX2 code: 82-93 GFLOP/s
on one thread of a Zen 5 core for these products. oneDNN, the library under torch.nn.LSTM on the
CPU, chooses its kernels by the processor's features and ran the weight gradients at 117-193
GFLOP/s, 1.4-2.3x MKL's time, and x @ W.T and grad @ W at 128-400 rows in 0.43-0.48 of MKL's
time (`benchmarks/RESULTS.md`, "A processor with full-width AVX-512"). torch exposes it as
`torch.ops.mkldnn._linear_pointwise(a, b, ...)` = a @ b.T (the op Inductor's CPU code calls).
For the weight gradients a = inputs.T and b = grad.T, both with the long dimension T * B inside,
gives (grad.T @ inputs).T, which measured 1.1-1.6x faster than the transposed order. Its call
costs about 10 us, so small products stay with torch's matmul. oneDNN takes an operand whose
rows or columns have unit stride (a transposed matrix: W.T for dL/dx) at full speed; one with
neither (a slice of columns seen transposed) it took 1000x longer for, so such a one is copied.

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
    """Whether torch carries oneDNN's linear op and it computes grad.T @ inputs, inputs @ W.T
    and grad @ W here."""
    if not torch.backends.mkldnn.is_available():
        return False
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(67, 5, generator=generator)
    grad = torch.randn(67, 3, generator=generator)
    weight = torch.randn(3, 5, generator=generator)
    try:
        got = (_onednn_product(grad, inputs), _linear(inputs, weight), _linear(grad, weight.t()))
    except (AttributeError, RuntimeError, NotImplementedError):  # no such op, or it refused
        return False
    expected = (grad.t() @ inputs, inputs @ weight.t(), grad @ weight)
    return all(
        torch.allclose(a, b, rtol=1e-5, atol=1e-5) for a, b in zip(got, expected, strict=True)
    )


def takes(dtype: torch.dtype, multiply_adds: int) -> bool:
    """Whether a product of this dtype and size goes through oneDNN."""
    return dtype == torch.float32 and multiply_adds >= MIN_MULTIPLY_ADDS and onednn_available()


def _unit_stride(matrix: Tensor) -> Tensor:
    """matrix with rows or columns of unit stride, as oneDNN takes it at full speed: itself if
    it has them (contiguous, or a contiguous matrix transposed), else a contiguous copy."""
    if matrix.is_contiguous() or matrix.t().is_contiguous():
        return matrix
    return matrix.contiguous()


def _linear(a: Tensor, b: Tensor) -> Tensor:
    """a (N, K) @ b.T for b (G, K), through oneDNN: (N, G), contiguous."""
    return torch.ops.mkldnn._linear_pointwise(
        _unit_stride(a), _unit_stride(b), None, "none", [], ""
    )


def _onednn_product(grad: Tensor, inputs: Tensor) -> Tensor:
    return _linear(inputs.contiguous().t(), grad.contiguous().t()).t()


def summed_outer_products(grad: Tensor, inputs: Tensor) -> Tensor:
    """grad (N, G).T @ inputs (N, K): (G, K), the sum over N rows of grad[n] outer inputs[n];
    through oneDNN for a float32 product of at least 2**21 multiply-adds, else torch's matmul.
    Contiguous, as a parameter's gradient: autograd adds a transposed one into `.grad` by
    strided reads (0.47 ms at 1024 x 256 against 0.016 for a contiguous one) or copies it when
    `.grad` is None, so oneDNN's transposed result is copied here once."""
    rows, outer = grad.shape
    if grad.dtype == inputs.dtype and takes(grad.dtype, rows * outer * inputs.shape[1]):
        return _onednn_product(grad, inputs).contiguous()
    return grad.t() @ inputs


def dense_product(inputs: Tensor, weight: Tensor) -> Tensor:
    """inputs (N, K) @ weight.T for weight (G, K): (N, G); through oneDNN for a float32 product
    of at least 2**21 multiply-adds, else torch's matmul. weight may be a transposed view
    (dL/dx = grad @ W is dense_product(grad, W.t()))."""
    rows, inner = inputs.shape
    if inputs.dtype == weight.dtype and takes(inputs.dtype, rows * inner * weight.shape[0]):
        return _linear(inputs, weight)
    return inputs @ weight.t()
