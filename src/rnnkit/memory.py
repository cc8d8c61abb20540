"""Keep freed memory in the process, so that large temporaries are not paged in afresh per call.

glibc's malloc serves large blocks (from 128 KiB, rising to the largest block freed so far, at
most 32 MiB) with fresh pages from the kernel, and gives freed memory at the top of its heap
back once more than twice that lies free. A recurrent layer that allocates a few MB of tape,
projections and layer-norm temporaries per call then pays a page fault per 4 KiB on every call:
rnnkit's layer-norm GRU at B = 8, T = 200, H = 128 spent 4 of its 12.8 ms per inference call
that way (docs/kernels.md, "Memory"). `keep_freed_memory()` tells malloc to keep up to `limit`
bytes of freed memory for reuse, which is what the environment variables
`MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=1073741824` do for a process started
with them, and what jemalloc or tcmalloc (recommended for PyTorch on the CPU) do by design.

Blocks above 32 MiB malloc always maps afresh. The largest of the compiled kernels' buffers, a
training call's tape (the variant LSTM's: 43 MB at B = 32, T = 100, H = 256), is such a block:
with `keep_freed_memory()` on, the kernels take their tapes from `tape_buffer`, which keeps
those above 32 MiB once autograd has released them and hands them to the next call of the same
size (5,600 page faults a call there, and a fifth of its time: benchmarks/RESULTS.md,
change 18).

It is a setting of the whole process, so rnnkit never makes it on import: `rnnkit bench` makes
it for both sides of its comparison, and programs call it once at start.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
import threading

import torch
from torch import Tensor

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_MAX = 32 * 2**20  # the largest value glibc accepts on 64-bit machines


_kept_tapes: list[Tensor] = []  # `tape_buffer`'s, least recently handed out first
_kept_lock = threading.Lock()  # calls on two threads: one looks through the list at a time
_tape_limit = 0  # bytes of tapes kept; 0 until keep_freed_memory()


def keep_freed_memory(limit: int = 2**30) -> bool:
    """Make glibc's malloc serve blocks up to 32 MiB from its heap and keep up to `limit` bytes
    of freed memory there instead of returning it to the system, and the kernels keep up to
    `limit` bytes of tapes above 32 MiB (`tape_buffer`). Returns True if malloc was set, False
    where the C library is not glibc (other allocators need no such setting, or their own)."""
    global _tape_limit
    if not isinstance(limit, int) or limit < MMAP_THRESHOLD_MAX:
        raise ValueError(
            f"limit must be an int of at least {MMAP_THRESHOLD_MAX} bytes, got {limit!r}"
        )
    _tape_limit = limit
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    limit = min(limit, 2**31 - 1)  # mallopt takes an int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX) and mallopt(M_TRIM_THRESHOLD, limit))


def tape_buffer(numel: int, like: Tensor, zeros: bool) -> Tensor:
    """A flat CPU buffer of `numel` numbers of like's dtype for a kernel's tape (zero-filled if
    `zeros`). Above 32 MiB, once `keep_freed_memory()` is on, a kept buffer of that size that
    nothing else holds (no autograd graph, view or NumPy array: `_unused`) is handed out again
    instead of new memory, and a new one is kept, the least recently used unused ones let go
    beyond the limit. Else, new memory."""
    nbytes = numel * like.element_size()
    if nbytes <= MMAP_THRESHOLD_MAX or nbytes > _tape_limit or like.device.type != "cpu":
        return like.new_zeros(numel) if zeros else like.new_empty(numel)
    with _kept_lock:
        for index in range(len(_kept_tapes)):
            if _fits(index, numel, like.dtype) and _unused(index):
                kept = _kept_tapes.pop(index)
                _kept_tapes.append(kept)  # the most recently used last
                return kept.zero_() if zeros else kept
        buffer = like.new_zeros(numel) if zeros else like.new_empty(numel)
        _kept_tapes.append(buffer)
        _trim(_tape_limit)  # `buffer` is held here, so it stays
        return buffer


def release_tapes() -> None:
    """Let go of the tapes `tape_buffer` keeps (their memory returns once nothing else holds
    them)."""
    with _kept_lock:
        _kept_tapes.clear()


def _fits(index: int, numel: int, dtype: torch.dtype) -> bool:
    return _kept_tapes[index].numel() == numel and _kept_tapes[index].dtype == dtype


def _trim(limit: int) -> None:
    """Let go of the least recently used unused kept tapes until they take at most `limit`."""
    total = sum(tape.nbytes for tape in _kept_tapes)
    index = 0
    while total > limit and index < len(_kept_tapes):
        if _unused(index):
            total -= _kept_tapes.pop(index).nbytes
        else:
            index += 1


def _unused(index: int) -> bool:
    """Whether nothing but `_kept_tapes` holds its tensor `index` or that tensor's memory: no
    other reference to the Python object, no other holder of the C++ tensor (an autograd graph
    that saved it, a DLPack capsule) and no other user of its storage (a view, `.data`, its
    storage object, a NumPy array). The callers hold no reference of their own while asking."""
    tensor = _kept_tapes[index]
    if _STORAGE_USE_COUNT is None or not hasattr(tensor, "_use_count"):
        return False  # a torch without the use counts: never handed out again
    # the list, `tensor` and getrefcount's argument; torch 2.13 counts a C++ holder of the
    # tensor in its Python refcount too, the use count tells on any version
    if sys.getrefcount(tensor) > 3 or tensor._use_count() != 1:
        return False
    # torch keeps one Python object per storage: a caller holding it shows in its refcount
    storage = tensor.untyped_storage()
    if sys.getrefcount(storage) > _STORAGE_REFERENCES:
        return False
    return _STORAGE_USE_COUNT(storage._cdata) <= 2  # the tensor's and the storage object's


def _storage_references() -> int:
    """getrefcount of the storage object of a tensor that nothing else holds, asked for as
    `_unused` asks (torch's own references to it differ between versions)."""
    tensor = torch.empty(1)
    storage = tensor.untyped_storage()
    return sys.getrefcount(storage)


_STORAGE_USE_COUNT = getattr(torch._C, "_storage_Use_Count", None)
_STORAGE_REFERENCES = _storage_references()
