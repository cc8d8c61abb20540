"""What the compiled Numba kernels share: the jit flags, the hand-written blocked matrix product
`add_matvec` (the choice between it and OpenBLAS is `_numba_products.py`'s), the gate
nonlinearities, and the argument checks and buffers on the Python side.

Importing this module imports Numba (about a second), so `rnnkit.kernels` loads it only when a
kernel is first called. Functions are compiled on their first call for a dtype and cached on
disk (`cache=True`), so a later process loads them in milliseconds.
The GRU, Elman and streaming kernels themselves live in `numba_gru.py`, `numba_elman.py` and
`numba_step.py`; the variant cells' kernels in `numba_lstm.py` and `numba_variants.py`.
"""

from __future__ import annotations

from collections.abc import Callable

import numba
import numpy as np
import torch
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic
from numba.np.arrayobj import populate_array
from torch import Tensor

from rnnkit.kernels import _cache
from rnnkit.kernels._onednn import summed_outer_products

_cache.refresh()  # every module with kernels imports this one: before any kernel loads

# `reassoc` lets LLVM split a dot product over several vector accumulators; no flag that assumes
# away NaN or infinity, so the kernels propagate them the way torch does.
FASTMATH = {"reassoc", "contract"}


def jit(function):
    """Compile `function` with Numba on its first call, cached on disk."""
    return numba.njit(cache=True, fastmath=FASTMATH, nogil=True, error_model="numpy")(function)


def jit_inline(function):
    """`jit`, and inlined into its callers by Numba itself."""
    return numba.njit(
        cache=True, fastmath=FASTMATH, nogil=True, error_model="numpy", inline="always"
    )(function)


# exp(x) = 2**k * exp(r) with k = round(x / ln 2) and |r| <= ln(2) / 2; ln 2 in two parts so that
# k * LN2_HI is exact (Cody and Waite), and 2**k built from its bits, so the loops over these
# scalar functions vectorise (libm's exp does not). float64: a degree-14 Taylor polynomial gives
# expm1(r) to a float64 ulp. float32: Cephes's degree-5 minimax polynomial for expf, and all of
# sigmoid and tanh after it in float32 (a float64 division took half the time): 0.3 ns an element
# against 3-3.7 for libm, within 2 float32 ulp of exact.
LOG2E = 1.4426950408889634
LN2_HI = 0.693359375
LN2_LO = -2.1219444005469058e-4


@intrinsic
def _float_from_bits(typingctx, bits):
    """The float whose bits are `bits` (int32 to float32, int64 to float64): LLVM's bitcast,
    which vectorises where a view of a one-element array would not."""
    floats = {
        types.int32: (types.float32, ir.FloatType()),
        types.int64: (types.float64, ir.DoubleType()),
    }
    if bits not in floats:
        return None
    result, llvm_type = floats[bits]

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], llvm_type)

    return result(bits), codegen


@jit
def _exp_split64(x):
    """(scale, q) with exp(x) = scale * (1 + q), scale = 2**k, in float64 (x clamped to +-700)."""
    x = min(max(x, -700.0), 700.0)
    k = np.floor(x * LOG2E + 0.5)
    r = x - k * LN2_HI - k * LN2_LO
    q = 1 / 6227020800 + r * (1 / 87178291200)  # Horner on expm1(r) = r + r^2/2! + ... + r^14/14!
    q = 1 / 479001600 + r * q
    q = 1 / 39916800 + r * q
    q = 1 / 3628800 + r * q
    q = 1 / 362880 + r * q
    q = 1 / 40320 + r * q
    q = 1 / 5040 + r * q
    q = 1 / 720 + r * q
    q = 1 / 120 + r * q
    q = 1 / 24 + r * q
    q = 1 / 6 + r * q
    q = 1 / 2 + r * q
    q = 1.0 + r * q
    return _float_from_bits((np.int64(k) + 1023) << 52), r * q


@jit
def _exp_split32(x):
    """(scale, q) with exp(x) = scale * (1 + q), scale = 2**k, in float32; x clamped to
    [-87, 88], where 2**k stays a normal float32 (sigmoid and tanh saturate long before)."""
    x = min(max(x, np.float32(-87.0)), np.float32(88.0))
    k = np.floor(x * np.float32(LOG2E) + np.float32(0.5))
    r = x - k * np.float32(LN2_HI) - k * np.float32(LN2_LO)
    p = np.float32(1.9875691500e-4) * r + np.float32(1.3981999507e-3)
    p = np.float32(8.3334519073e-3) + r * p
    p = np.float32(4.1665795894e-2) + r * p
    p = np.float32(1.6666665459e-1) + r * p
    p = np.float32(5.0000001201e-1) + r * p
    return _float_from_bits(np.int32((np.int32(k) + 127) << 23)), p * (r * r) + r


@jit
def _sigmoid64(x):
    scale, q = _exp_split64(-x)
    return 1.0 / ((1.0 + scale) + scale * q)  # 1 + exp(-x), rounded once


@jit
def _sigmoid32(x):
    scale, q = _exp_split32(-x)
    one = np.float32(1)
    return one / ((one + scale) + scale * q)


@jit
def _tanh64(x):
    scale, q = _exp_split64(-2.0 * abs(x))  # e = expm1(-2|x|): tanh|x| = -e / (2 + e)
    return np.copysign(-(scale * q + (scale - 1.0)) / ((scale + 1.0) + scale * q), x)


@jit
def _tanh32(x):
    scale, q = _exp_split32(np.float32(-2) * abs(x))
    one = np.float32(1)
    return np.copysign(-(scale * q + (scale - one)) / ((scale + one) + scale * q), x)


@jit_inline
def sigmoid_(v, start, stop):
    """v[start:stop] = sigmoid(v[start:stop]) in place; v 1-D float32 or float64."""
    segment = v[start:stop]  # from 0: a loop over range(start, stop) would not vectorise
    if v.itemsize == 4:  # a constant of the compiled type: LLVM drops the other branch
        for i in range(len(segment)):
            segment[i] = _sigmoid32(segment[i])
    else:
        for i in range(len(segment)):
            segment[i] = _sigmoid64(segment[i])


@jit_inline
def tanh_(v, start, stop):
    """v[start:stop] = tanh(v[start:stop]) in place; v 1-D float32 or float64."""
    segment = v[start:stop]
    if v.itemsize == 4:
        for i in range(len(segment)):
            segment[i] = _tanh32(segment[i])
    else:
        for i in range(len(segment)):
            segment[i] = _tanh64(segment[i])


@jit
def add_matvec(weight, vectors, rows, n_rows, out):
    """out[b] += weight @ vectors[b] for b in rows[:n_rows].

    weight (G, K) C-contiguous, vectors (B, K), out (B, G). Sequences go four at a time through
    blocks of two rows of `weight` by four vectors (six loads feed eight multiply-adds), the last
    n_rows % 4 alone through blocks of four rows of `weight`; each block's sums stay in registers.
    """
    n_out = weight.shape[0]
    n_blocked = n_rows - n_rows % 4
    for j in range(0, n_out - n_out % 2, 2):
        for i in range(0, n_blocked, 4):
            _add_2x4(weight, j, vectors, rows[i], rows[i + 1], rows[i + 2], rows[i + 3], out)
    for i in range(n_blocked, n_rows):
        for j in range(0, n_out - n_out % 4, 4):
            _add_4x1(weight, j, vectors, rows[i], out)
    for i in range(n_rows):  # the rows of `weight` that the blocks leave over
        for j in range(n_out - n_out % (2 if i < n_blocked else 4), n_out):
            out[rows[i], j] += _dot(weight, j, vectors, rows[i])


@jit
def add_matvec1(weight, vector, out, backward):
    """out += weight @ vector for one sequence: vector (K,), out (G,). Eight rows of `weight`
    per pass over `vector`, their sums in registers; one matrix after the other, each read
    front to back, streams from the cache faster than rows of two matrices interleaved. With
    `backward` the blocks of rows go last to first (each row's sum the same): a stream of steps
    that alternates directions first reads what the step before read last, still in the cache
    when the weights are larger than it (0.88-0.95 of the time at 1-2 MiB of weights)."""
    rows = weight.shape[0]
    blocks = rows // 8
    for block in range(blocks):
        j = (blocks - 1 - block if backward else block) * 8
        a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = weight.dtype.type(0)
        for k in range(weight.shape[1]):
            v = vector[k]
            a0 += weight[j, k] * v
            a1 += weight[j + 1, k] * v
            a2 += weight[j + 2, k] * v
            a3 += weight[j + 3, k] * v
            a4 += weight[j + 4, k] * v
            a5 += weight[j + 5, k] * v
            a6 += weight[j + 6, k] * v
            a7 += weight[j + 7, k] * v
        out[j] += a0
        out[j + 1] += a1
        out[j + 2] += a2
        out[j + 3] += a3
        out[j + 4] += a4
        out[j + 5] += a5
        out[j + 6] += a6
        out[j + 7] += a7
    for j in range(blocks * 8, rows):
        acc = weight.dtype.type(0)
        for k in range(weight.shape[1]):
            acc += weight[j, k] * vector[k]
        out[j] += acc


@jit_inline
def add_matvecs(weight, vectors, out, backward):
    """out[b] += weight @ vectors[b] for every sequence b: vectors (B, K), out (B, G). From
    four sequences up, blocks of four go through `add_matvec` (each weight read once per
    block); the others (batch 1 in real-time use) through `add_matvec1` (`backward`: its
    blocks of rows last to first)."""
    batch = vectors.shape[0]
    blocked = batch - batch % 4
    if blocked:
        add_matvec(weight, vectors, np.arange(blocked), blocked, out)
    for b in range(blocked, batch):
        add_matvec1(weight, vectors[b], out[b], backward)


@jit
def _dot(weight, j, vectors, b):
    acc = weight.dtype.type(0)
    for k in range(weight.shape[1]):
        acc += weight[j, k] * vectors[b, k]
    return acc


@jit
def _add_2x4(weight, j, vectors, b0, b1, b2, b3, out):
    """out[b, j:j+2] += weight[j:j+2] @ vectors[b] for the four sequences b0..b3."""
    a0 = a1 = a2 = a3 = c0 = c1 = c2 = c3 = weight.dtype.type(0)
    for k in range(weight.shape[1]):
        w, u = weight[j, k], weight[j + 1, k]
        v0, v1, v2, v3 = vectors[b0, k], vectors[b1, k], vectors[b2, k], vectors[b3, k]
        a0 += w * v0
        a1 += w * v1
        a2 += w * v2
        a3 += w * v3
        c0 += u * v0
        c1 += u * v1
        c2 += u * v2
        c3 += u * v3
    out[b0, j] += a0
    out[b1, j] += a1
    out[b2, j] += a2
    out[b3, j] += a3
    out[b0, j + 1] += c0
    out[b1, j + 1] += c1
    out[b2, j + 1] += c2
    out[b3, j + 1] += c3


@jit
def _add_4x1(weight, j, vectors, b, out):
    """out[b, j:j+4] += weight[j:j+4] @ vectors[b]."""
    a0 = a1 = a2 = a3 = weight.dtype.type(0)
    for k in range(weight.shape[1]):
        v = vectors[b, k]
        a0 += weight[j, k] * v
        a1 += weight[j + 1, k] * v
        a2 += weight[j + 2, k] * v
        a3 += weight[j + 3, k] * v
    out[b, j] += a0
    out[b, j + 1] += a1
    out[b, j + 2] += a2
    out[b, j + 3] += a3


@intrinsic
def unowned(typingctx, array):
    """`array` without its reference to the memory's owner (meminfo null): the same data, shape
    and strides. A view taken in compiled code increments and decrements its owner's count, two
    atomic operations (~9% of the layer-norm LSTM's inference loop); views of an unowned array
    skip them. Only for arrays whose owner outlives every use: the kernels' arguments, which
    the caller holds for the call, or a local array still used after the loop."""
    if not isinstance(array, types.Array):
        return None

    def codegen(context, builder, signature, arguments):
        source = context.make_array(array)(context, builder, value=arguments[0])
        target = context.make_array(array)(context, builder)
        populate_array(
            target,
            data=source.data,
            shape=source.shape,
            strides=source.strides,
            itemsize=source.itemsize,
            meminfo=None,
        )
        return target._getvalue()

    return array(array), codegen


@jit
def alive(array):
    """Nothing but a use: Numba releases a local array after its last use, so a loop that
    reads a local array through `unowned` views calls this with the array after the loop
    (without it, a test's loop read the block of its next allocation instead:
    tests/test_kernels_unowned.py). A call, which no dead-code pass removes, says so by name."""
    return array.shape[0]


@intrinsic
def prefetch(typingctx, array, index):
    """A hint to bring the cache line holding element `index` of `array`'s flat data (C order)
    into the cache (LLVM's `llvm.prefetch`: a read, kept in all levels). It never faults, so an
    index past the end costs nothing but the hint."""
    if not isinstance(array, types.Array) or not isinstance(index, types.Integer):
        return None

    def codegen(context, builder, signature, arguments):
        data = context.make_array(array)(context, builder, value=arguments[0]).data
        index_ = context.cast(builder, arguments[1], signature.args[1], types.intp)
        address = builder.bitcast(builder.gep(data, [index_]), ir.IntType(8).as_pointer())
        i32 = ir.IntType(32)
        hint = cgutils.get_or_insert_function(
            builder.module,
            ir.FunctionType(ir.VoidType(), [address.type, i32, i32, i32]),
            "llvm.prefetch.p0",
        )
        read, keep, data_cache = (ir.Constant(i32, value) for value in (0, 3, 1))
        builder.call(hint, [address, read, keep, data_cache])
        return context.get_dummy_value()

    return types.void(array, index), codegen


@intrinsic
def _address_pointer(typingctx, address, like):
    """The integer `address` as a pointer to numbers of `like`'s dtype."""
    if not isinstance(address, types.Integer) or not isinstance(like, types.Array):
        return None
    pointer = types.CPointer(like.dtype)

    def codegen(context, builder, signature, arguments):
        return builder.inttoptr(arguments[0], context.get_value_type(pointer))

    return pointer(address, like), codegen


@jit_inline
def rows_at(address, rows, cols, like):
    """The C-contiguous (rows, cols) array of `like`'s dtype at memory `address`: a tensor's
    `data_ptr()`, of that dtype and shape, contiguous, which the caller holds for the call.
    Passing the address costs 70 ns in Python where `tensor.numpy()` costs 600 and the array's
    dispatch to Numba 50 more (the streaming steps' input x)."""
    return numba.carray(_address_pointer(address, like), (rows, cols))


PREFETCH_AHEAD = 2  # steps: a step of 8 sequences takes microseconds, memory 0.1-0.2 us


@jit_inline
def prefetch_step(rows, lengths, order, n_running, step, reverse):
    """Hint the rows of `rows` (T, B, G), C-contiguous, that the first `n_running` sequences of
    `order` read at `step` (a loop step; each sequence's own time index is `position`'s), if
    they run then. The loops read x_proj (and the backward loops grad_output and zoneout's
    draws) one step at a time; written for the whole sequence before the loop, at T * B * G
    numbers larger than the caches each step's rows come from memory, and the processor's own
    prefetch, which stops at the 4 KiB pages a step's rows cross, left the variant LSTM's loop
    waiting on them (0.81-0.91 of its time with these hints, B = 8, H = 64, T = 1000)."""
    if step < 0:
        return
    batch, width = rows.shape[1], rows.shape[2]
    line = 64 // rows.itemsize
    for i in range(n_running):
        b = order[i]
        if lengths[b] > step:
            start = (position(lengths, b, step, reverse) * batch + b) * width
            for at in range(0, width, line):
                prefetch(rows, start + at)


@jit_inline
def prefetch_block(rows, k):
    """Hint all of rows[k] for `rows` (K, ...) C-contiguous (a tape's step k), if k < K."""
    if 0 <= k < rows.shape[0]:
        size = rows.size // rows.shape[0]
        line = 64 // rows.itemsize
        for at in range(0, size, line):
            prefetch(rows, k * size + at)


@jit_inline
def offset(start, j):
    """start + j as an unsigned index. Numba wraps no negative index for it, so a loop over
    v[offset(start, j)] vectorises with unit stride as one over a view v[start:][j] does, but
    without the view: each view in compiled code takes and releases a reference to its array
    (two atomic operations, 230 against 83 ns for layer norm's 4 gate groups of 64)."""
    return np.uint64(start) + np.uint64(j)


@jit_inline
def copy_(source, target):
    """target[j] = source[j] for j < len(target), both 1-D. Numba's `target[:] = source` checks
    for overlap and may copy through a new array; a loop costs a fraction of that per row."""
    for j in range(len(target)):
        target[j] = source[j]


@jit_inline
def copy_rows(source, target, n):
    """target[:n] = source[:n] for 2-D arrays, row by row through `copy_`."""
    for i in range(n):
        copy_(source[i], target[i])


@jit
def sort_rows(rows, order):
    """A copy of rows (B, K) in `order`: row i is rows[order[i]]."""
    out = np.empty_like(rows)
    for i in range(len(order)):
        out[i] = rows[order[i]]
    return out


@jit
def unsort(rows, order):
    """The inverse of `sort_rows`: out[order[i]] = rows[i]."""
    out = np.empty_like(rows)
    for i in range(len(order)):
        out[order[i]] = rows[i]
    return out


@jit_inline
def running(lengths, order, step, n_running):
    """How many sequences run at `step` (those with lengths > step): `order` sorts them longest
    first, so they are a prefix of it. n_running is the count at the step before or after."""
    while n_running > 0 and lengths[order[n_running - 1]] <= step:
        n_running -= 1
    while n_running < len(order) and lengths[order[n_running]] > step:
        n_running += 1
    return n_running


@jit_inline
def draws_at(draws, t, b):
    """Row (t, b) of per-step draws (T, B, K), broadcast over a T or B of 1: zoneout's rate in
    eval comes as (1, 1, K), which stays in the cache where a (T, B, K) array of the rate would
    be filled and streamed through every call."""
    return draws[t if draws.shape[0] > 1 else 0, b if draws.shape[1] > 1 else 0]


@jit_inline
def position(lengths, b, step, reverse):
    """The time index that sequence b reads at `step` (its own last valid step first in reverse)."""
    return lengths[b] - 1 - step if reverse else step


# ---- Python side -------------------------------------------------------------------------------


def numpy_view(tensor: Tensor) -> np.ndarray:
    """A C-contiguous NumPy array sharing memory with `tensor` (copied only if not contiguous)."""
    return tensor.detach().contiguous().numpy()


def check_sequence_args(
    x: Tensor,
    h0: Tensor,
    weight_ih: Tensor,
    weight_hh: Tensor,
    bias_ih: Tensor | None,
    bias_hh: Tensor | None,
    gates: int,
) -> tuple[int, int, int, int]:
    """Check shapes, dtypes and device of one direction's arguments; return (T, B, H_in, H)."""
    if x.dim() != 3:
        raise ValueError(f"x must be (T, B, H_in), got shape {tuple(x.shape)}")
    if x.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"the Numba kernels take float32 or float64, got {x.dtype}")
    steps, batch, input_size = x.shape
    hidden = weight_hh.shape[1]
    expected = {
        "h0": (h0, (batch, hidden)),
        "weight_ih": (weight_ih, (gates * hidden, input_size)),
        "weight_hh": (weight_hh, (gates * hidden, hidden)),
        "bias_ih": (bias_ih, (gates * hidden,)),
        "bias_hh": (bias_hh, (gates * hidden,)),
    }
    expected = {name: pair for name, pair in expected.items() if pair[0] is not None}
    for name, (tensor, shape) in expected.items():
        if tuple(tensor.shape) != shape:
            raise ValueError(f"{name} must have shape {shape}, got {tuple(tensor.shape)}")
    for name, tensor in {"x": x, **{k: v[0] for k, v in expected.items()}}.items():
        if tensor.device.type != "cpu" or tensor.dtype != x.dtype:
            raise TypeError(
                f"{name} must be a CPU {x.dtype} tensor, got {tensor.device} {tensor.dtype}"
            )
    if steps == 0 or batch == 0:
        raise ValueError(
            f"x must have at least one step and one sequence, got shape {tuple(x.shape)}"
        )
    return steps, batch, input_size, hidden


def lengths_and_order(
    lengths: Tensor | None, steps: int, batch: int
) -> tuple[np.ndarray, np.ndarray]:
    """(lengths (B,) int64, order (B,) int64 sorting them longest first) as NumPy arrays."""
    if lengths is None:
        return np.full(batch, steps, dtype=np.int64), np.arange(batch, dtype=np.int64)
    if lengths.shape != (batch,) or lengths.dtype.is_floating_point or lengths.is_complex():
        raise ValueError(f"lengths must be an integer tensor of shape ({batch},), got {lengths}")
    array = lengths.detach().to("cpu", torch.int64).numpy()
    if array.min() < 1 or array.max() > steps:
        raise ValueError(f"lengths must lie in [1, {steps}], got {array.tolist()}")
    return array, np.argsort(-array, kind="stable")


def needs_grad(arguments: tuple) -> bool:
    """Whether autograd will ask for a backward pass through a kernel called with `arguments`."""
    return torch.is_grad_enabled() and any(
        isinstance(a, Tensor) and a.requires_grad for a in arguments
    )


def recomputed_gradients(
    reference: Callable, inputs: tuple, needs: tuple[bool, ...], grads: tuple
) -> tuple[Tensor | None, ...]:
    """The backward of a compiled kernel asked for a graph of its own (`create_graph=True`:
    a gradient of the gradient, e.g. a gradient penalty), which the compiled loops cannot give:
    the gradients of `reference(*inputs)`, the kernel's function in torch's operators run
    again, with respect to the inputs `needs` marks (None for the others), differentiable
    again. `grads` are the upstream gradients of the reference's outputs (a tuple or one)."""
    with torch.enable_grad():
        outputs = reference(*inputs)
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    wanted = [
        i for i, (t, need) in enumerate(zip(inputs, needs, strict=True)) if need and t is not None
    ]
    used = [
        (o, g) for o, g in zip(outputs, grads, strict=True) if g is not None and o.requires_grad
    ]
    result: list[Tensor | None] = [None] * len(inputs)
    if not wanted or not used:
        return tuple(result)
    got = torch.autograd.grad(
        [o for o, _ in used], [inputs[i] for i in wanted], [g for _, g in used],
        create_graph=True, allow_unused=True,
    )  # fmt: skip
    for i, g in zip(wanted, got, strict=True):
        result[i] = g if g is not None else torch.zeros_like(inputs[i])
    return tuple(result)


def cell_loop_gradients(ctx, kernel: Callable, grads: tuple) -> tuple[Tensor | None, ...]:
    """`recomputed_gradients` for the GRU and Elman sequences: the gradients of x, h0 and the
    four weights through torch's cell `kernel` (`torch._VF.gru_cell`, `rnn_tanh_cell`, ...)
    step by step with `rnnkit.layers.run_cell`'s semantics. `ctx` saved (x, weight_ih,
    weight_hh, two tensors of its own, h0, bias_ih, bias_hh) and `lengths_given`, `reverse`."""
    from rnnkit.layers import run_cell  # the layers import the kernels

    x, weight_ih, weight_hh, _, _, h0, bias_ih, bias_hh = ctx.saved_tensors
    lengths, reverse = ctx.lengths_given, ctx.reverse

    def reference(x, h0, *weights):
        return run_cell(lambda x_t, h: kernel(x_t, h, *weights), x, h0, lengths, reverse)

    inputs = (x, h0, weight_ih, weight_hh, bias_ih, bias_hh)
    return recomputed_gradients(reference, inputs, ctx.needs_input_grad[:6], grads)


def bias_or_zeros(bias: Tensor | None, size: int, like: Tensor) -> Tensor:
    return bias.detach() if bias is not None else like.new_zeros(size)


def weight_grads(
    grad_gates: Tensor, inputs: Tensor, needs_weight: bool, needs_bias: bool
) -> tuple[Tensor | None, Tensor | None]:
    """Gradients of `weight` and `bias` in gates = inputs @ weight.T + bias, summed over T and B."""
    flat = grad_gates.reshape(-1, grad_gates.shape[-1])  # (T*B, G)
    flat_inputs = inputs.reshape(-1, inputs.shape[-1])  # (T*B, K)
    grad_weight = summed_outer_products(flat, flat_inputs) if needs_weight else None
    grad_bias = flat.sum(0) if needs_bias else None
    return grad_weight, grad_bias


def optional_view(tensor: Tensor | None, ndim: int, like: Tensor) -> np.ndarray:
    """`numpy_view(tensor)`, or an empty array of `ndim` dimensions that says "off" to a kernel."""
    if tensor is None:
        return np.empty((0,) * ndim, dtype=like.detach().numpy().dtype)
    return numpy_view(tensor)
