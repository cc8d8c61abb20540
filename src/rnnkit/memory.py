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

It is a setting of the whole process, so rnnkit never makes it on import: `rnnkit bench` makes
it for both sides of its comparison, and programs call it once at start.
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_MAX = 32 * 2**20  # the largest value glibc accepts on 64-bit machines


def keep_freed_memory(limit: int = 2**30) -> bool:
    """Make glibc's malloc serve blocks up to 32 MiB from its heap and keep up to `limit` bytes
    of freed memory there instead of returning it to the system. Returns True if set, False
    where the C library is not glibc (other allocators need no such setting, or their own)."""
    if not isinstance(limit, int) or limit < MMAP_THRESHOLD_MAX:
        raise ValueError(
            f"limit must be an int of at least {MMAP_THRESHOLD_MAX} bytes, got {limit!r}"
        )
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    limit = min(limit, 2**31 - 1)  # mallopt takes an int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX) and mallopt(M_TRIM_THRESHOLD, limit))
