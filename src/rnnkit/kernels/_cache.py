"""Numba's disk cache of the kernels, kept in step with their sources.

Numba checks a cached kernel against the source file of the function called and nothing else,
but a kernel carries compiled copies of what it calls from the other kernel modules: after an
edit of `_numba_common.py` alone, `numba_lstm.py`'s loops would load from the cache with the
old helpers inside (numba/numba#1833). So the cache directory holds a digest of every kernel
module's source (`STAMP`); when the sources no longer match it, the cached kernels of these
modules are deleted before any is loaded, and recompile on their first call.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

KERNELS = Path(__file__).parent
STAMP = "rnnkit-kernels.sha256"  # in the cache directory: the digest its kernels were built from


def sources_digest(directory: Path = KERNELS) -> str:
    """SHA-256 of the names and contents of the `*.py` files in `directory` (their times do
    not count: a checkout that rewrites the same text keeps the cache)."""
    digest = hashlib.sha256()
    for path in sorted(directory.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _located() -> None:
    """A function of this directory, for Numba to say where it caches this directory's kernels."""


def cache_directory() -> Path | None:
    """Where Numba caches the kernels of this directory: its own choice (`__pycache__` beside
    the sources, NUMBA_CACHE_DIR, or the user-wide cache where the first is not writable), or
    None where it can cache nothing, or where this Numba has no such API (the cache then works
    as Numba's own, without the digest)."""
    try:
        from numba.core.caching import FunctionCache

        return Path(FunctionCache(_located).cache_path)
    except (ImportError, AttributeError, RuntimeError):  # the API moved or renamed, or
        return None  # "cannot cache function ...: no locator available for file ..."


def drop_stale(directory: Path, digest: str, modules: set[str]) -> bool:
    """Delete the cached kernels (`.nbi` index and `.nbc` data files) of `modules` (module names
    without the package, as Numba begins the files' names) from `directory` unless its stamp
    says `digest`, then write that stamp. True if they were dropped. Files of other modules
    stay; a directory that cannot be read or written is left as it is (Numba then compiles
    without caching, or loads what it can)."""
    stamp = directory / STAMP
    try:
        if stamp.read_text() == digest:
            return False
    except OSError:  # no stamp yet: a cache from before stamps, or none at all
        pass
    try:
        for path in directory.glob("*.nb[ic]"):
            if path.name.split(".", 1)[0] in modules:
                path.unlink(missing_ok=True)
        written = stamp.with_name(f"{STAMP}.{os.getpid()}.tmp")
        written.write_text(digest)
        os.replace(written, stamp)  # whole or not at all, for processes starting together
    except OSError:
        return False
    return True


def refresh() -> bool:
    """`drop_stale` for this directory's kernels in Numba's cache directory; called once, when
    the kernels' shared module is first imported (before any kernel is compiled or loaded)."""
    directory = cache_directory()
    if directory is None:
        return False
    modules = {path.stem for path in KERNELS.glob("*.py")}
    return drop_stale(directory, sources_digest(), modules)
