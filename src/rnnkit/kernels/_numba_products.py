"""The per-step matrix products of the variant kernels (`numba_lstm.py`, `numba_variants.py`):
`product_prefix` for states kept in the order of their lengths (LSTM, GRU), `add_product` for
states kept in batch order (Elman). Either is OpenBLAS's gemm/gemv (NumPy's `dot` in Numba,
through SciPy's BLAS) or the hand-written blocked loop of `_numba_common.add_matvec`, whichever
measured faster for the size.

Measured on this machine (one thread, OpenBLAS from SciPy): alone in a loop, the product of a
4H x H weight by B vectors through BLAS takes 0.2-0.5 of the hand loop's time when the weight
fits in the core's 1 MiB L2 cache with room to spare (float32 H <= 128, float64 H <= 64-128),
batch 1 (gemv) included; with a larger weight gemm copies ("packs") the whole weight on every
call and loses by up to 4x at batch 2-16. In the whole layer (LSTM with peepholes, forward +
backward) BLAS took 0.74-0.92 of the hand loops' time at batch 4-8, H 64-128, and 0.91-0.97 at
batch 1. With a 1-4 MiB weight (float32 H 256-512) the packing's cost is spread over the batch:
whole layers (LSTM with layer norm, peepholes or zoneout, GRU with layer norm or a projection,
Elman with a projection; float32) took 1.13-1.27 of the hand loops' time through BLAS at
batch 16, 0.98-1.05 at batch 32, 0.96-0.98 at 48 and 0.84-0.98 at 64. So: BLAS for small
weights, and for any weight from batch 48.
"""

from __future__ import annotations

import numpy as np
from torch import Tensor

from rnnkit.kernels._numba_common import add_matvec, jit, numpy_view

BLAS_MAX_WEIGHT_BYTES = 512 * 1024  # a weight this small stays in L2 between steps
BLAS_MIN_BATCH = 48  # from this batch gemm's packing of a larger weight pays for itself


def blas_is_faster(batch: int, weight: Tensor) -> bool:
    """Whether BLAS beats the hand loop for `weight` (G, K) times `batch` vectors per step: for
    a weight that stays in L2 at any batch, for a larger one from batch 48 (measurements in the
    module docstring)."""
    small = weight.numel() * weight.element_size() <= BLAS_MAX_WEIGHT_BYTES
    return small or batch >= BLAS_MIN_BATCH


def product_operand(matrix: Tensor, blas: bool) -> np.ndarray:
    """`matrix` (G, K) of out = matrix @ v as `add_product` takes it: its transpose (K, G) for
    BLAS, itself for the hand loop, C-contiguous."""
    return numpy_view(matrix.t() if blas else matrix)


def operand(matrix: Tensor | None, batch: int, like: Tensor) -> tuple[np.ndarray, bool]:
    """(`product_operand` of `matrix` (G, K), whether it is BLAS's) for `batch` sequences; an
    empty (0, 0) array that says "off" to a kernel for None."""
    if matrix is None:
        return np.empty((0, 0), dtype=like.detach().numpy().dtype), False
    blas = blas_is_faster(batch, matrix)
    return product_operand(matrix, blas), blas


@jit
def product_prefix(operand, blas, vectors, n_rows, out, identity):
    """out[:n_rows] = vectors[:n_rows] @ M.T for sequences kept in rows 0..n_rows-1 (in the order
    of their lengths), M (G, K) as `product_operand` made it: M.T (K, G) for one BLAS gemm
    straight from and into the rows, no packing; M for the hand loop (`add_matvec`,
    identity = arange(B))."""
    if blas:
        np.dot(vectors[:n_rows], operand, out[:n_rows])
    else:
        out[:n_rows] = 0
        add_matvec(operand, vectors, identity, n_rows, out)


@jit
def product_buffers(operand, blas, batch):
    """Scratch for `add_product` with this operand: the packed vectors (B, K) and products
    (B, G) for BLAS, empty for the hand loop."""
    rows = batch if blas else 0
    if blas:
        inner, outer = operand.shape[0], operand.shape[1]
    else:
        inner, outer = operand.shape[1], operand.shape[0]
    dtype = operand.dtype
    return np.zeros((rows, inner), dtype=dtype), np.zeros((rows, outer), dtype=dtype)


@jit
def add_product(operand, blas, vectors, order, n_rows, out, packed_in, packed_out):
    """out[b] += M @ vectors[b] for b in order[:n_rows], M (G, K) given as `product_operand`
    made it (M.T for BLAS); packed_in, packed_out from `product_buffers`."""
    if not blas:
        add_matvec(operand, vectors, order, n_rows, out)
        return
    for i in range(n_rows):  # the running sequences, contiguous for gemm
        packed_in[i] = vectors[order[i]]
    np.dot(packed_in[:n_rows], operand, packed_out[:n_rows])
    for i in range(n_rows):
        b = order[i]
        for j in range(out.shape[1]):
            out[b, j] += packed_out[i, j]
