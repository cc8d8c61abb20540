"""A register-blocked matrix product for the per-step products of the variant kernels: the
weight packed once per call into panels, then out = vectors @ weight.T by tiles of up to 8 rows
by one panel whose sums stay in vector registers (Numba, CPU).

OpenBLAS, which Numba's `np.dot` calls, copies ("packs") the weight on every call; a recurrent
layer multiplies the same weight by a new batch of states at every step, so here the weight is
packed once (`pack_panels`) and each step only runs the tiles. A tile of R rows by W columns
keeps R * 2 vectors of sums in registers while it walks the inner dimension k: per k it loads
one row of the panel (two vectors) and broadcasts each row's v[r, k], two fused multiply-adds
per row. Numba has no vector types, so the tile is written in LLVM IR (`_tile`, a Numba
intrinsic; `llvm.fma` on <16 x float> or <8 x double> with AVX-512, half that width without).
The same tiles with sums that start from the output add outer products to a weight gradient,
a step's rows at a time (`add_outer_products`).

Measured (one thread, float32, the product alone in a loop): on Zen 4, whose AVX-512 units
split each 512-bit operation in two, 104-111 GFLOP/s at B = 8-64 rows by a 256 x 64 to
2048 x 512 weight, against OpenBLAS's 61-75 at B = 32-64 with a weight of 1-4 MiB (97-106 at
B = 8 with a small one) and the hand-written dot-product loop's 46-52; on Zen 5, full width,
193-245 GFLOP/s from batch 4 (OpenBLAS 10-58, oneDNN through torch 173-179 at 64-512 rows).
A single row is latency-bound (two chains of multiply-adds): 54-75 GFLOP/s on Zen 5.
"""

from __future__ import annotations

import numba
import numpy as np
from llvmlite import binding, ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic
from torch import Tensor

from rnnkit.kernels._numba_common import jit


def _vector_bytes() -> int:
    """The width of the vector registers Numba compiles for: 64 bytes with AVX-512, 32 with
    AVX2 or without knowing, 16 where Numba targets a generic CPU (NUMBA_CPU_NAME)."""
    if numba.config.CPU_NAME not in (None, "host"):
        return 16
    try:
        features = binding.get_host_cpu_features()
    except RuntimeError:  # LLVM cannot tell on this platform
        return 32
    return 64 if features.get("avx512f", False) else 32


VECTOR_BYTES = _vector_bytes()
PANEL_VECTORS = 2  # a panel is two vector registers wide
TILE_ROWS = 8 if VECTOR_BYTES == 64 else 4  # 2 * rows sums + 3 more vectors fit the registers


def panel_width(itemsize: int) -> int:
    """Columns of out per panel (W) for elements of `itemsize` bytes."""
    return PANEL_VECTORS * VECTOR_BYTES // itemsize


def pack_panels(matrix: Tensor) -> np.ndarray:
    """`matrix` (G, K) as panels (P, K, W), P = ceil(G / W): panel p, row k holds
    matrix[p * W : (p + 1) * W, k], zero past G. A copy, made once per call of a kernel."""
    rows, inner = matrix.shape
    width = panel_width(matrix.element_size())
    count = -(-rows // width)
    padded = matrix.detach().new_zeros(count * width, inner)
    padded[:rows] = matrix.detach()
    return padded.view(count, width, inner).transpose(1, 2).contiguous().numpy()


def _make_tile(rows: int, accumulate: bool = False):
    """An intrinsic tile(v, v_at, v_stride, v_k_stride, panels, w_at, w_stride, inner, out,
    out_at, out_stride): out[out_at + r * out_stride + c] = (with `accumulate`, +=) the sum over
    k < inner of v[v_at + r * v_stride + k * v_k_stride] * panels[w_at + k * w_stride + c], for
    r < rows and c < W, on the flat data of three C-contiguous arrays of one float dtype
    (offsets and strides in elements). Without `accumulate` the panels are packed ones:
    v_k_stride and w_stride are taken as 1 and W, constants in the code."""

    @intrinsic
    def tile(typingctx, v, v_at, v_stride, v_k_stride, panels, w_at, w_stride, inner, out,
             out_at, out_stride):  # fmt: skip
        arrays = (v, panels, out)
        if any(not isinstance(a, types.Array) for a in arrays):
            return None
        dtype = v.dtype
        if dtype not in (types.float32, types.float64) or any(a.dtype != dtype for a in arrays):
            return None
        intp = types.intp
        sig = types.void(v, intp, intp, intp, panels, intp, intp, intp, out, intp, intp)

        def codegen(context, builder, signature, args):
            v_data = context.make_array(signature.args[0])(context, builder, args[0]).data
            w_data = context.make_array(signature.args[4])(context, builder, args[4]).data
            out_data = context.make_array(signature.args[8])(context, builder, args[8]).data
            v_at, v_stride, v_k_stride = args[1], args[2], args[3]
            w_at, w_stride, inner, out_at, out_stride = (args[i] for i in (5, 6, 7, 9, 10))
            itemsize = 4 if dtype == types.float32 else 8
            lanes = VECTOR_BYTES // itemsize
            scalar = context.get_value_type(dtype)
            vector = ir.VectorType(scalar, lanes)
            index = ir.IntType(64)
            if not accumulate:  # packed panels: the strides are constants (a few % at B = 8)
                v_k_stride = ir.Constant(index, 1)
                w_stride = ir.Constant(index, PANEL_VECTORS * lanes)
            fma = cgutils.get_or_insert_function(
                builder.module,
                ir.FunctionType(vector, [vector] * 3),
                f"llvm.fma.v{lanes}{'f32' if dtype == types.float32 else 'f64'}",
            )

            def vector_at(data, offset):
                return builder.bitcast(builder.gep(data, [offset]), vector.as_pointer())

            def out_vector(r, j):
                out_row = builder.add(out_at, builder.mul(ir.Constant(index, r), out_stride))
                return vector_at(out_data, builder.add(out_row, ir.Constant(index, j * lanes)))

            def first(r, j):
                if accumulate:
                    return builder.load(out_vector(r, j), align=itemsize)
                return ir.Constant(vector, [0.0] * lanes)

            sums = [  # promoted to registers by LLVM's mem2reg
                [cgutils.alloca_once_value(builder, first(r, j)) for j in range(PANEL_VECTORS)]
                for r in range(rows)
            ]
            broadcast = ir.Constant(ir.VectorType(ir.IntType(32), lanes), [0] * lanes)
            undefined = ir.Constant(vector, ir.Undefined)

            with cgutils.for_range(builder, inner) as loop:
                k = loop.index
                w_row = builder.add(w_at, builder.mul(k, w_stride))
                weights = [
                    builder.load(
                        vector_at(w_data, builder.add(w_row, ir.Constant(index, j * lanes))),
                        align=itemsize,
                    )
                    for j in range(PANEL_VECTORS)
                ]
                v_k = builder.add(v_at, builder.mul(k, v_k_stride))
                for r in range(rows):
                    v_row = builder.add(v_k, builder.mul(ir.Constant(index, r), v_stride))
                    x = builder.load(builder.gep(v_data, [v_row]))
                    x = builder.insert_element(undefined, x, ir.Constant(ir.IntType(32), 0))
                    x = builder.shuffle_vector(x, undefined, broadcast)
                    for j in range(PANEL_VECTORS):
                        total = builder.load(sums[r][j])
                        builder.store(builder.call(fma, [x, weights[j], total]), sums[r][j])
            for r in range(rows):
                for j in range(PANEL_VECTORS):
                    builder.store(builder.load(sums[r][j]), out_vector(r, j), align=itemsize)
            return context.get_dummy_value()

        return sig, codegen

    return tile


_tile_8, _tile_4, _tile_2, _tile_1 = (_make_tile(rows) for rows in (8, 4, 2, 1))
_sum_tile_8, _sum_tile_4, _sum_tile_2, _sum_tile_1 = (
    _make_tile(rows, accumulate=True) for rows in (8, 4, 2, 1)
)


@jit
def _tiles(vectors, i, n_rows, panels, p, out, out_at, out_stride):
    """Tiles of rows i.. of `vectors` by panel p into out's flat data from out_at (row i's
    column 0 of the panel), the largest tiles first; returns n_rows."""
    inner, width = panels.shape[1], panels.shape[2]
    v_stride = vectors.strides[0] // vectors.itemsize
    w_at = p * inner * width
    while i < n_rows:
        left = n_rows - i
        v_at = i * v_stride
        if left >= 8 and TILE_ROWS == 8:
            _tile_8(vectors, v_at, v_stride, 1, panels, w_at, width, inner, out, out_at, out_stride)
            step = 8
        elif left >= 4:
            _tile_4(vectors, v_at, v_stride, 1, panels, w_at, width, inner, out, out_at, out_stride)
            step = 4
        elif left >= 2:
            _tile_2(vectors, v_at, v_stride, 1, panels, w_at, width, inner, out, out_at, out_stride)
            step = 2
        else:
            _tile_1(vectors, v_at, v_stride, 1, panels, w_at, width, inner, out, out_at, out_stride)
            step = 1
        i += step
        out_at += step * out_stride
    return n_rows


@jit
def packed_product(panels, vectors, n_rows, out):
    """out[:n_rows] = vectors[:n_rows] @ M.T for M (G, K) packed by `pack_panels` into
    panels (P, K, W), G = out.shape[1]; vectors (B, K) and out (B, G) with rows of unit
    stride. A last panel that G cuts short goes through a scratch of (n_rows, W)."""
    n_cols = out.shape[1]
    width = panels.shape[2]
    out_stride = out.strides[0] // out.itemsize
    for p in range(panels.shape[0]):
        if (p + 1) * width <= n_cols:
            _tiles(vectors, 0, n_rows, panels, p, out, p * width, out_stride)
        else:  # the last panel: full tiles into scratch, then the columns that out has
            scratch = np.empty((n_rows, width), dtype=out.dtype)
            _tiles(vectors, 0, n_rows, panels, p, scratch, 0, width)
            for i in range(n_rows):
                out_row, scratch_row = out[i], scratch[i]
                for c in range(n_cols - p * width):
                    out_row[p * width + c] = scratch_row[c]


@jit
def add_outer_products(vectors, n_rows, matrix, out):
    """out (R, G) += vectors[:n_rows].T @ matrix[:n_rows], the sum over k < n_rows of the outer
    product of vectors[k] (R,) and matrix[k] (G,): a weight gradient accumulated one step's
    rows at a time (its few rows stay in cache, where a product over all steps at the end reads
    them back from memory). Rows of unit stride; matrix's rows are read as panels in place, so
    nothing is packed: tiles of up to 8 rows of out by one panel of W columns, their sums in
    registers, and the columns past the last full panel by a plain loop."""
    n_out, n_cols = out.shape
    width = PANEL_VECTORS * VECTOR_BYTES // out.itemsize  # W, `panel_width`
    v_k_stride = vectors.strides[0] // vectors.itemsize
    w_stride = matrix.strides[0] // matrix.itemsize
    out_stride = out.strides[0] // out.itemsize
    full = n_cols // width
    for p in range(full):
        i = 0
        while i < n_out:
            left = n_out - i
            out_at = i * out_stride + p * width
            if left >= 8 and TILE_ROWS == 8:
                _sum_tile_8(vectors, i, 1, v_k_stride, matrix, p * width, w_stride, n_rows,
                            out, out_at, out_stride)  # fmt: skip
                i += 8
            elif left >= 4:
                _sum_tile_4(vectors, i, 1, v_k_stride, matrix, p * width, w_stride, n_rows,
                            out, out_at, out_stride)  # fmt: skip
                i += 4
            elif left >= 2:
                _sum_tile_2(vectors, i, 1, v_k_stride, matrix, p * width, w_stride, n_rows,
                            out, out_at, out_stride)  # fmt: skip
                i += 2
            else:
                _sum_tile_1(vectors, i, 1, v_k_stride, matrix, p * width, w_stride, n_rows,
                            out, out_at, out_stride)  # fmt: skip
                i += 1
    for r in range(n_out):
        out_row = out[r]
        for k in range(n_rows):
            v, matrix_row = vectors[k, r], matrix[k]
            for c in range(full * width, n_cols):
                out_row[c] += v * matrix_row[c]
