"""`rnnkit.keep_freed_memory`: after it, a large block freed and allocated again is reused
without paging it in afresh; before it (glibc's defaults), every call pays its page faults."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from rnnkit.memory import keep_freed_memory

GLIBC = platform.libc_ver()[0] == "glibc"

_FAULTS = """
import resource, sys, torch
from rnnkit.memory import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
def faults():  # as a layer's call: temporaries of a few MiB, all freed at its end
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    blocks = [torch.ones(2**19) for _ in range(48)]  # 48 x 2 MiB, every page written
    del blocks
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
faults()  # the first call pages its memory in either way
print(min(faults() for _ in range(5)))
"""


def page_faults(mode: str) -> int:
    command = [sys.executable, "-c", _FAULTS, mode]
    return int(subprocess.run(command, capture_output=True, text=True, check=True).stdout)


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's; other C libraries return False")
def test_freed_memory_is_reused_without_page_faults():
    pages = 96 * 2**20 // 4096  # the 96 MiB of the blocks, in 4 KiB pages
    assert page_faults("keep") < pages // 20
    # By default glibc gives them back and pages them in again (96 MiB is more than the most it
    # keeps free at the top of its heap, twice its largest mmap threshold of 32 MiB), unless
    # something the imports allocated lies above them (about one process in four): the test
    # asks that one of five processes shows it.
    assert any(page_faults("default") > pages // 2 for _ in range(5))


def test_keep_freed_memory_says_whether_it_applied():
    assert keep_freed_memory() is GLIBC


def test_keep_freed_memory_rejects_a_limit_below_the_block_size():
    with pytest.raises(ValueError, match="limit must be an int of at least"):
        keep_freed_memory(2**20)
