"""Numba's disk cache follows the kernels' sources (`rnnkit.kernels._cache`): an edit of one
kernel module drops the cached kernels that may carry a compiled copy of it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import rnnkit
from rnnkit.kernels import _cache

MODULES = {"_numba_common", "numba_lstm"}


def cache_files(directory: Path) -> list[str]:
    names = (
        "_numba_common.sigmoid_-136.py311.nbi",
        "_numba_common.sigmoid_-136.py311.1.nbc",
        "numba_lstm.lstm_forward_loop-218.py311.nbi",
        "numba_lstm.lstm_forward_loop-218.py311.1.nbc",
        "numba_lstm.lstm_forward_loop-218.py311.2.nbc",
        "other_package.kernel-10.py311.nbi",  # another library's, in a shared NUMBA_CACHE_DIR
        "other_package.kernel-10.py311.1.nbc",
        "notes.txt",
    )
    for name in names:
        (directory / name).write_text("x")
    return sorted(names)


def test_stale_cache_loses_the_kernels_of_these_modules_only(tmp_path):
    cache_files(tmp_path)
    (tmp_path / _cache.STAMP).write_text("the digest of older sources")
    assert _cache.drop_stale(tmp_path, "new digest", MODULES)
    left = sorted(path.name for path in tmp_path.iterdir())
    assert left == sorted(
        [
            "other_package.kernel-10.py311.nbi",
            "other_package.kernel-10.py311.1.nbc",
            "notes.txt",
            _cache.STAMP,
        ]
    )
    assert (tmp_path / _cache.STAMP).read_text() == "new digest"


def test_cache_without_a_stamp_is_dropped_too(tmp_path):
    cache_files(tmp_path)  # built before stamps, by sources nobody knows
    assert _cache.drop_stale(tmp_path, "digest", MODULES)
    assert not list(tmp_path.glob("numba_lstm.*")) and not list(tmp_path.glob("_numba_common.*"))
    assert (tmp_path / _cache.STAMP).read_text() == "digest"


def test_fresh_cache_is_kept(tmp_path):
    names = cache_files(tmp_path)
    (tmp_path / _cache.STAMP).write_text("digest")
    assert not _cache.drop_stale(tmp_path, "digest", MODULES)
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted([*names, _cache.STAMP])


def test_missing_cache_directory_is_left_alone(tmp_path):
    assert not _cache.drop_stale(tmp_path / "gone", "digest", MODULES)
    assert not (tmp_path / "gone").exists()


def test_digest_follows_the_text_of_the_sources_not_their_times(tmp_path):
    for name in ("a.py", "b.py"):
        (tmp_path / name).write_text(f"# {name}\n")
    (tmp_path / "notes.md").write_text("not a source")
    first = _cache.sources_digest(tmp_path)
    os.utime(tmp_path / "a.py", (0, 0))  # a checkout that rewrites the same text
    (tmp_path / "notes.md").write_text("edited, still not a source")
    assert _cache.sources_digest(tmp_path) == first
    (tmp_path / "b.py").write_text("# b.py, edited\n")
    assert _cache.sources_digest(tmp_path) != first
    (tmp_path / "b.py").write_text("# b.py\n")
    (tmp_path / "c.py").write_text("")  # a new module
    assert _cache.sources_digest(tmp_path) != first


def run_python(code: str, env: dict[str, str]) -> str:
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_loading_the_kernels_stamps_numbas_cache_directory(tmp_path):
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    code = (
        "from rnnkit.kernels import _numba_common, _cache\n"  # the import refreshes
        "print(_cache.cache_directory())"
    )
    directory = Path(run_python(code, env))
    assert directory.is_relative_to(tmp_path)
    assert (directory / _cache.STAMP).read_text() == _cache.sources_digest()


SCAN = (  # a kernel of numba_scan.py whose gates come from _numba_common.py's sigmoid_
    "import rnnkit, torch\n"
    "from rnnkit.kernels import minimal_scan\n"
    "p = torch.linspace(-2.0, 2.0, 24, dtype=torch.float64).reshape(3, 1, 8)\n"
    "print(rnnkit.__file__, minimal_scan(p, torch.zeros(1, 4, dtype=torch.float64), False)"
    ".sum().item())"
)


@pytest.mark.slow
def test_edit_of_a_shared_helper_reaches_the_cached_kernels_that_use_it(tmp_path):
    """The case Numba's own check misses: the kernel's module is unchanged, the helper it
    compiled in is edited, and the next process must run the edit, not the cached kernel."""
    package = tmp_path / "rnnkit"
    shutil.copytree(
        Path(rnnkit.__file__).parent, package, ignore=shutil.ignore_patterns("__pycache__")
    )
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}  # in-tree cache
    env["PYTHONPATH"] = str(tmp_path)

    def scan() -> float:
        where, total = run_python(SCAN, env).split()
        assert Path(where).parent == package  # the copy ran, not the installed package
        return float(total)

    before = scan()
    cached = sorted((package / "kernels" / "__pycache__").glob("numba_scan.*.nb[ic]"))
    assert cached  # the first run compiled the kernel and cached it
    assert scan() == before  # loaded from the cache

    common = package / "kernels" / "_numba_common.py"
    source = common.read_text()
    line = "segment[i] = _sigmoid64(segment[i])"
    assert source.count(line) == 1
    common.write_text(source.replace(line, "segment[i] = 0.5 * _sigmoid64(segment[i])"))
    edited = scan()
    assert edited != pytest.approx(before, rel=1e-3)

    common.write_text(source)  # back as it was: the first result again
    assert scan() == before


def test_a_numba_without_the_cache_api_leaves_the_cache_alone(monkeypatch):
    import numba.core.caching

    monkeypatch.delattr(numba.core.caching, "FunctionCache")
    assert _cache.cache_directory() is None
    assert not _cache.refresh()
