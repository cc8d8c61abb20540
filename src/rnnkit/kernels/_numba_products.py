"""The per-step matrix products of the compiled sequence kernels: `product_prefix` for states
kept in the order of their lengths (the plain GRU and Elman kernels, `numba_gru.py` and
`numba_elman.py`; the LSTM and GRU variant loops, `numba_lstm.py` and `numba_variants.py`),
`add_product` for states kept in batch order (the Elman variant loop). Either is OpenBLAS's
gemm/gemv (NumPy's `dot` in Numba, through SciPy's BLAS) or the hand-written blocked loop of
`_numba_common.add_matvec`, whichever measured faster for the size: one rule for all of them,
`blas_is_faster`.

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

At batch 1 BLAS shows no packing cost: alone, a 768 KiB-24 MiB weight (3H x H, H 256-1024,
float32 and float64) times one vector took 0.59-1.03 of the hand loop's time, against up to
2.8x at batch 2-8 in float32. Whole layers at B=1 T=200 H=256 (float32, W_hh 768 KiB-1 MiB) on BLAS
took 0.96 (training) and 0.82 (inference) of the loop's time for the plain GRU, 0.86-0.99 and
0.89-1.04 for the LSTM and GRU variants. So: BLAS at batch 1 whatever the weight.

The plain GRU and Elman (tanh) kernels at the benchmark's shapes (float32, training = forward +
backward), BLAS's time over the hand loop's (`OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python
benchmarks/products.py --repeats 15`, medians of alternating runs in one process):

     B     T    H   GRU train  infer   Elman train  infer   the rule takes
     1  1000  128        0.93   0.71          0.93   0.87   BLAS
     1   200  256        0.96   0.82          0.96   0.95   BLAS
     8   200  128        0.81   0.68          0.79   0.80   BLAS
     8  1000   64        0.79   0.53          0.69   0.63   BLAS
    32   100  256        0.95   0.95          1.06   0.98   GRU the loop, Elman BLAS
    64    50  512        0.93   0.92          0.97   0.97   BLAS

These kernels chose by B x G x K <= 2**20 before; where that and this rule differ (GRU at B=1
H=256, GRU and Elman at B=64 H=512, Elman at B=32 H=256) this rule's choice was the faster or
even: Elman at B=32 H=256 measured 0.99-1.06 training and 0.98-1.03 inference over four runs.
The GRU at B=32 H=256 (768 KiB) takes the loop though BLAS measured 0.95 there: whole variant
layers measured 0.98-1.05 at batch 32.
"""

from __future__ import annotations

import numpy as np
from torch import Tensor

from rnnkit.kernels._numba_common import add_matvec, jit, numpy_view

BLAS_MAX_WEIGHT_BYTES = 512 * 1024  # a weight this small stays in L2 between steps
BLAS_MIN_BATCH = 48  # from this batch gemm's packing of a larger weight pays for itself


def blas_is_faster(batch: int, weight: Tensor) -> bool:
    """Whether BLAS beats the hand loop for `weight` (G, K) times `batch` vectors per step: for
    a weight that stays in L2 at any batch, for a larger one at batch 1 (no packing cost shows
    there) and from batch 48 (measurements in the module docstring)."""
    small = weight.numel() * weight.element_size() <= BLAS_MAX_WEIGHT_BYTES
    return small or batch == 1 or batch >= BLAS_MIN_BATCH


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
