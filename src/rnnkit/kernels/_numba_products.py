"""The per-step matrix products of the compiled sequence kernels: `product_prefix` for states
kept in the order of their lengths (the plain GRU and Elman kernels, `numba_gru.py` and
`numba_elman.py`; the LSTM and GRU variant loops, `numba_lstm.py` and `numba_variants.py`),
`add_product` for states kept in batch order (the Elman variant loop). Each runs on one of
three routes, one rule for all of them (`product_route`): OpenBLAS's gemm/gemv (NumPy's `dot`
in Numba, through SciPy's BLAS), the register-blocked tiles of `_numba_gemm.packed_product` on a
weight packed once per call, or the hand-written dot-product loop of `_numba_common.add_matvec`.

Measured (one thread, float32, the product alone in a loop; GFLOP/s), first on a Zen 4
machine, whose AVX-512 units split each 512-bit operation in two:

| B x K x G | BLAS | packed tiles | hand loop |
| --- | --- | --- | --- |
| 1 x 64 x 256, 1 x 256 x 1024 | 33-35 | 40-44 | 12-21 |
| 8 x 64 x 256, 8 x 128 x 512 | 97-112 | 99-106 | 32-38 |
| 16 x 256 x 1024 | 42 | 104 | 41 |
| 32 x 256 x 1024, 64 x 512 x 2048 | 61-75 | 106-111 | 50-52 |

OpenBLAS packs the weight on every call, which costs little while the weight stays in the
core's 1 MiB L2 between steps; a larger one it streams in again each step, and at batch 2-16
it lost to the hand loop by up to 2.8x. In whole layers there, BLAS took 0.53-0.93 of the hand
loop's time for the plain GRU and Elman at the benchmark's shapes (B 1-8, H 64-128;
`benchmarks/products.py`); the packed tiles took 1.01-1.06 of BLAS's at B = 1-8 with a small
weight (0.90 for GRU training at B = 8, H = 64) and 0.72-0.91 from batch 16 or with a weight
over 512 KiB.

Then on a Zen 5 machine, whose AVX-512 units are full width: the tiles run at 193-245 GFLOP/s
from batch 4 (127 at batch 2) where OpenBLAS's gemm, on its AVX2 kernels, ran at 10-58; at
batch 1 the three routes are level (54-75 GFLOP/s, bound by reading the weight). In whole
layers (`benchmarks/products.py`) the tiles took 0.35-0.57 of BLAS's time at B = 8, 0.55-0.79
at B = 32-64, and 0.95-1.10 at batch 1.

So, with full-width vectors to gain and at most 6% to lose, the packed tiles from batch 2
wherever Numba compiles for AVX-512; at batch 1 BLAS (gemv: one row, nothing for packing to
save). Without AVX-512 (not measured; the tiles are half as wide there) the rule from Zen 4
before: BLAS for a weight of at most 512 KiB below batch 16, the tiles otherwise. The hand
loop stays as a route the tests check against the others.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from rnnkit.kernels._numba_common import (
    add_matvec,
    jit,
    jit_inline,
    numpy_view,
    recomputed_gradients,
    unowned,
    weight_grads,
)
from rnnkit.kernels._numba_gemm import VECTOR_BYTES, pack_panels, packed_product
from rnnkit.kernels._onednn import dense_product, takes

BLAS_MAX_WEIGHT_BYTES = 512 * 1024  # a weight this small stays in L2 between steps
PACKED_MIN_BATCH = 16  # from this batch the packed tiles beat BLAS on small weights too
HAND, BLAS, PACKED = 0, 1, 2  # the routes of a product: `add_matvec`, `np.dot`, `packed_product`


def product_route(batch: int, weight: Tensor) -> int:
    """The fastest route for `weight` (G, K) times `batch` vectors per step (measurements in
    the module docstring): BLAS at batch 1; from batch 2 the packed tiles where Numba compiles
    for AVX-512, else BLAS for a weight that stays in L2 below batch 16 and the tiles beyond."""
    if batch == 1:
        return BLAS
    if VECTOR_BYTES == 64:
        return PACKED
    small = weight.numel() * weight.element_size() <= BLAS_MAX_WEIGHT_BYTES
    return BLAS if small and batch < PACKED_MIN_BATCH else PACKED


def product_operand(matrix: Tensor, route: int) -> np.ndarray:
    """`matrix` (G, K) of out = matrix @ v as the products take it for `route`: packed into
    panels (P * K, W) (`pack_panels`), its transpose (K, G) for BLAS, itself for the hand
    loop, C-contiguous; always 2-D, so that one compiled kernel serves every route."""
    if route == PACKED:
        panels = pack_panels(matrix)
        return panels.reshape(-1, panels.shape[2])
    return numpy_view(matrix.t() if route == BLAS else matrix)


def operand(matrix: Tensor | None, batch: int, like: Tensor) -> tuple[np.ndarray, int]:
    """(`product_operand` of `matrix` (G, K), its route) for `batch` sequences; an empty
    (0, 0) array that says "off" to a kernel for None."""
    if matrix is None:
        return np.empty((0, 0), dtype=like.detach().numpy().dtype), HAND
    route = product_route(batch, matrix)
    return product_operand(matrix, route), route


@jit_inline
def _packed(operand, vectors, n_rows, out):
    """packed_product on panels given as (P * K, W), K = vectors.shape[1]. The arrays go in
    `unowned` (the caller holds them for the call): a compiled function takes a reference to
    each array argument and releases it, two atomic operations, and packed_product passes its
    three to `_tiles` once per panel, in every step of a loop (with the LSTM loops' own views,
    13% of the layer-norm LSTM's training call at B = 8, T = 1000, H = 64)."""
    inner = vectors.shape[1]
    panels = unowned(operand).reshape(operand.shape[0] // inner, inner, operand.shape[1])
    packed_product(panels, unowned(vectors), n_rows, unowned(out))


@jit_inline
def product_prefix(operand, route, vectors, n_rows, out, identity):
    """out[:n_rows] = vectors[:n_rows] @ M.T for sequences kept in rows 0..n_rows-1 (in the order
    of their lengths), M (G, K) as `product_operand` made it for `route`: the packed tiles or
    one BLAS gemm straight from and into the rows, or the hand loop (`add_matvec`,
    identity = arange(B))."""
    if route == PACKED:
        _packed(operand, vectors, n_rows, out)
    elif route == BLAS:
        np.dot(unowned(vectors)[:n_rows], unowned(operand), unowned(out)[:n_rows])
    else:
        out[:n_rows] = 0
        add_matvec(operand, vectors, identity, n_rows, out)


@jit
def product_buffers(operand, route, batch, inner):
    """Scratch for `add_product` with this operand and vectors of width `inner`: the packed
    vectors (B, K) and products (B, G, or the panels' padded width) for BLAS and the packed
    tiles, empty for the hand loop."""
    rows = batch if route != HAND else 0
    if route == PACKED:
        outer = operand.shape[1] * (operand.shape[0] // max(inner, 1))
    elif route == BLAS:
        outer = operand.shape[1]
    else:
        outer = operand.shape[0]
    dtype = operand.dtype
    return np.zeros((rows, inner), dtype=dtype), np.zeros((rows, outer), dtype=dtype)


@jit_inline
def add_product(operand, route, vectors, order, n_rows, out, packed_in, packed_out):
    """out[b] += M @ vectors[b] for b in order[:n_rows], M (G, K) given as `product_operand`
    made it for `route`; packed_in, packed_out from `product_buffers`."""
    if route == HAND:
        add_matvec(operand, vectors, order, n_rows, out)
        return
    for i in range(n_rows):  # the running sequences, contiguous for the product
        packed_in[i] = vectors[order[i]]
    if route == PACKED:
        _packed(operand, packed_in, n_rows, packed_out)
    else:
        np.dot(unowned(packed_in)[:n_rows], unowned(operand), unowned(packed_out)[:n_rows])
    for i in range(n_rows):
        b = order[i]
        for j in range(out.shape[1]):
            out[b, j] += packed_out[i, j]


# ---- whole-sequence products -------------------------------------------------------------------


def packed_matmul(inputs: Tensor, matrix: Tensor) -> Tensor:
    """inputs (..., K) @ matrix.T for matrix (G, K), through the packed tiles: (..., G)."""
    inner, outer = matrix.shape[1], matrix.shape[0]
    rows = numpy_view(inputs.reshape(-1, inner))  # (N, K)
    out = inputs.new_empty(rows.shape[0], outer)  # (N, G)
    packed_product(pack_panels(matrix), rows, rows.shape[0], out.numpy())
    return out.view(*inputs.shape[:-1], outer)


class PackedLinear(torch.autograd.Function):
    """inputs @ weight.T over all steps at once, forward and dL/d(inputs) through
    `whole_product` (the packed tiles from 512 rows, oneDNN below), dL/d(weight) through
    `weight_grads` (`summed_outer_products`): on this machine 11-23% faster than torch's
    linear at the benchmark's shapes from 512 rows, about twice as fast below
    (`benchmarks/RESULTS.md`)."""

    @staticmethod
    def forward(ctx, inputs: Tensor, weight: Tensor) -> Tensor:
        ctx.save_for_backward(inputs, weight)
        return whole_product(inputs, weight)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None]:
        if torch.is_grad_enabled():  # create_graph=True: through torch's operators instead
            return recomputed_gradients(
                torch.nn.functional.linear, ctx.saved_tensors, ctx.needs_input_grad, (grad,)
            )
        return PackedLinear.compiled_backward(ctx, grad)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def compiled_backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None]:
        inputs, weight = ctx.saved_tensors
        needs_inputs, needs_weight = ctx.needs_input_grad
        grad_inputs = whole_product(grad, weight.t()) if needs_inputs else None
        grad_weight, _ = weight_grads(grad, inputs, needs_weight, False)  # (G, K)
        return grad_inputs, grad_weight


PACKED_LINEAR_MIN_ROWS = 512  # below, packing the weight costs what the tiles save


def _tiled(inputs: Tensor, matrix: Tensor) -> bool:
    """Whether inputs (..., K) @ matrix.T goes through the packed tiles (from 512 rows)."""
    return inputs.numel() >= PACKED_LINEAR_MIN_ROWS * matrix.shape[1]


def whole_product(inputs: Tensor, matrix: Tensor) -> Tensor:
    """inputs (..., K) @ matrix.T over all steps, no autograd: the packed tiles from 512 rows;
    below, oneDNN's product (`dense_product`: float32, 2**21 multiply-adds and more; 0.43-0.48
    of MKL's time at 128-400 rows), else torch's matmul."""
    inputs, matrix = inputs.detach(), matrix.detach()
    if _tiled(inputs, matrix):
        return packed_matmul(inputs, matrix)
    outer, inner = matrix.shape
    return dense_product(inputs.reshape(-1, inner), matrix).view(*inputs.shape[:-1], outer)


def project(inputs: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """inputs (T, B, K) @ weight.T + bias as one matrix product over all steps: (T, B, G),
    contiguous, no autograd (`whole_product`)."""
    out = whole_product(inputs, weight).contiguous()
    return out if bias is None else out.add_(bias.detach())


def packed_linear(inputs: Tensor, weight: Tensor) -> Tensor:
    """inputs (..., K) @ weight.T (..., G), differentiable in both: `PackedLinear` where its
    products take the tiles or oneDNN, torch's linear elsewhere (small or float64 below 512
    rows)."""
    rows = inputs.numel() // weight.shape[1]
    if _tiled(inputs, weight) or takes(inputs.dtype, rows * weight.numel()):
        return PackedLinear.apply(inputs, weight)
    return torch.nn.functional.linear(inputs, weight)
