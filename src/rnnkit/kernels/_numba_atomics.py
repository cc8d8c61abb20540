"""Atomic operations on int64 arrays and the few system calls a spinning thread needs, as Numba
intrinsics (LLVM's atomic instructions, x86's `pause`, the time-stamp counter, usleep and
sched_yield from the C library), for `_step_partner`'s handshake between two threads.

Every operation is sequentially consistent or release, on an element of a C-contiguous int64
array; x86-64 and POSIX only (`_step_partner.SUPPORTED` says where the partner runs).
"""

from __future__ import annotations

import platform

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

_X86 = platform.machine() in ("x86_64", "AMD64", "i686")


def _int64_slot(context, builder, signature, arguments):
    """The address of element arguments[1] of the int64 array arguments[0]."""
    data = context.make_array(signature.args[0])(context, builder, value=arguments[0]).data
    index = context.cast(builder, arguments[1], signature.args[1], types.intp)
    return builder.gep(data, [index])


def _is_int64_array(array) -> bool:
    return isinstance(array, types.Array) and array.dtype == types.int64


@intrinsic
def load_acquire(typingctx, array, index):
    """array[index], an atomic load that later reads and writes cannot precede."""
    if not _is_int64_array(array):
        return None

    def codegen(context, builder, signature, arguments):
        slot = _int64_slot(context, builder, signature, arguments)
        return builder.load_atomic(slot, "seq_cst", 8)

    return types.int64(array, index), codegen


@intrinsic
def store_release(typingctx, array, index, value):
    """array[index] = value, an atomic store that earlier reads and writes precede."""
    if not _is_int64_array(array):
        return None

    def codegen(context, builder, signature, arguments):
        value_ = context.cast(builder, arguments[2], signature.args[2], types.int64)
        slot = _int64_slot(context, builder, signature, arguments)
        builder.store_atomic(value_, slot, "release", 8)
        return context.get_dummy_value()

    return types.void(array, index, value), codegen


@intrinsic
def exchange(typingctx, array, index, value):
    """array[index] = value, sequentially consistent (no later load passes it: the handshake
    of a ticket published against a status read needs that); returns the old value."""
    if not _is_int64_array(array):
        return None

    def codegen(context, builder, signature, arguments):
        value_ = context.cast(builder, arguments[2], signature.args[2], types.int64)
        slot = _int64_slot(context, builder, signature, arguments)
        return builder.atomic_rmw("xchg", slot, value_, "seq_cst")

    return types.int64(array, index, value), codegen


@intrinsic
def compare_swap(typingctx, array, index, expected, new):
    """If array[index] == expected, set it to new, atomically; returns the old value."""
    if not _is_int64_array(array):
        return None

    def codegen(context, builder, signature, arguments):
        slot = _int64_slot(context, builder, signature, arguments)
        expected_, new_ = (
            context.cast(builder, arguments[i], signature.args[i], types.int64) for i in (2, 3)
        )
        pair = builder.cmpxchg(slot, expected_, new_, "seq_cst", "seq_cst")
        return builder.extract_value(pair, 0)

    return types.int64(array, index, expected, new), codegen


def _declared(builder, name: str, result, arguments: list):
    return cgutils.get_or_insert_function(builder.module, ir.FunctionType(result, arguments), name)


@intrinsic
def spin_pause(typingctx):
    """A spin-wait hint (x86's `pause`): the core idles a few cycles, its sibling runs."""

    def codegen(context, builder, signature, arguments):
        if _X86:
            builder.call(_declared(builder, "llvm.x86.sse2.pause", ir.VoidType(), []), [])
        return context.get_dummy_value()

    return types.void(), codegen


@intrinsic
def cycle_counter(typingctx):
    """The processor's time-stamp counter (`Partner` measures its rate once)."""

    def codegen(context, builder, signature, arguments):
        i64 = ir.IntType(64)
        return builder.call(_declared(builder, "llvm.readcyclecounter", i64, []), [])

    return types.int64(), codegen


@intrinsic
def nap(typingctx, microseconds):
    """Sleep `microseconds` (the C library's usleep), without the GIL."""

    def codegen(context, builder, signature, arguments):
        i32 = ir.IntType(32)
        value = context.cast(builder, arguments[0], signature.args[0], types.int32)
        builder.call(_declared(builder, "usleep", i32, [i32]), [value])
        return context.get_dummy_value()

    return types.void(microseconds), codegen


@intrinsic
def yield_processor(typingctx):
    """Give the core to another thread ready to run on it, if any (sched_yield): a spinning
    partner that shares a core with the caller steps aside for it."""

    def codegen(context, builder, signature, arguments):
        builder.call(_declared(builder, "sched_yield", ir.IntType(32), []), [])
        return context.get_dummy_value()

    return types.void(), codegen
