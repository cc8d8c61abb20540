"""`rnnkit.keep_freed_memory`: after it, a large block freed and allocated again is reused
without paging it in afresh; before it (glibc's defaults), every call pays its page faults."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest
import torch

import rnnkit
from rnnkit import memory
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


def test_keep_freed_memory_says_whether_it_applied(monkeypatch):
    monkeypatch.setattr(memory, "_tape_limit", memory._tape_limit)  # as it was, after the test
    assert keep_freed_memory() is GLIBC
    assert memory._tape_limit == 2**30


def test_keep_freed_memory_rejects_a_limit_below_the_block_size():
    with pytest.raises(ValueError, match="limit must be an int of at least"):
        keep_freed_memory(2**20)


@pytest.fixture
def kept(monkeypatch):
    """`tape_buffer` keeping tapes above 1 KiB, as after keep_freed_memory() above 32 MiB."""
    monkeypatch.setattr(memory, "MMAP_THRESHOLD_MAX", 1024)
    monkeypatch.setattr(memory, "_tape_limit", 2**20)
    monkeypatch.setattr(memory, "_kept_tapes", [])
    return memory


class _Saves(torch.autograd.Function):
    """Saves `tape` for its backward, as the kernels' autograd glue does."""

    @staticmethod
    def forward(ctx, x, tape):
        ctx.save_for_backward(tape)
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad, None


def test_a_kept_tape_is_handed_out_again_once_nothing_holds_it(kept):
    """Every other buffer stays held (`others`), so the only one that can come back is the
    tape's: a holder the check missed would show as the tape handed out while held."""
    like = torch.empty(0, dtype=torch.float64)
    tape = kept.tape_buffer(1000, like, zeros=False)
    address = tape.data_ptr()
    others = [kept.tape_buffer(1000, like, zeros=False)]
    assert others[0].data_ptr() != address  # still held
    tape.fill_(7.0)
    del tape
    tape = kept.tape_buffer(1000, like, zeros=True)
    assert tape.data_ptr() == address and tape.dtype == torch.float64 and not tape.any()
    holders = {
        "its storage object": lambda t: t.untyped_storage(),
        "a view": lambda t: t[3:],
        "a NumPy array": lambda t: t.numpy(),
        ".data": lambda t: t.data,
        "a DLPack capsule": torch.utils.dlpack.to_dlpack,
        "an autograd graph": lambda t: _Saves.apply(torch.ones(2, requires_grad=True), t),
    }
    for what, hold in holders.items():
        holder = hold(tape)
        del tape
        others.append(kept.tape_buffer(1000, like, zeros=False))
        assert others[-1].data_ptr() != address, f"handed out while {what} holds it"
        if what == "an autograd graph":
            holder.sum().backward()  # the graph lets go of its saved tensors
        del holder
        tape = kept.tape_buffer(1000, like, zeros=False)
        assert tape.data_ptr() == address, f"not handed out again after {what} let go"


def test_tapes_are_new_memory_below_the_size_and_without_keep_freed_memory(kept, monkeypatch):
    like = torch.empty(0)
    small = kept.tape_buffer(200, like, zeros=False)  # 800 bytes
    address = small.data_ptr()
    del small
    assert kept._kept_tapes == []
    monkeypatch.setattr(memory, "_tape_limit", 0)  # keep_freed_memory() not called
    assert kept.tape_buffer(1000, like, zeros=True).numel() == 1000 and kept._kept_tapes == []
    assert address  # (the small one went back to malloc)


def test_kept_tapes_stay_within_the_limit_and_can_be_released(kept):
    like = torch.empty(0)
    for numel in (100_000, 120_000, 140_000):  # 400, 480 and 560 KB, a limit of 1 MiB
        kept.tape_buffer(numel, like, zeros=False)
    assert sum(t.nbytes for t in kept._kept_tapes) <= 2**20
    assert [t.numel() for t in kept._kept_tapes] == [120_000, 140_000]  # the oldest went
    held = kept.tape_buffer(120_000, like, zeros=False)
    kept.release_tapes()
    assert kept._kept_tapes == [] and held.numel() == 120_000


@pytest.mark.parametrize(
    "make",
    [
        lambda: rnnkit.LSTM(5, 6, num_layers=2, bidirectional=True, layer_norm=True, zoneout=0.2),
        lambda: rnnkit.GRU(5, 6, num_layers=2, bidirectional=True, layer_norm=True, proj_size=4),
        lambda: rnnkit.RNN(5, 6, num_layers=2, bidirectional=True, proj_size=3, zoneout=0.3),
    ],
)
def test_training_with_kept_tapes_gives_the_same_gradients(kept, monkeypatch, make):
    """The compiled variant kernels' tapes from `tape_buffer`: two calls in flight at once (each
    graph holds its tapes), then repeated calls that reuse them, with lengths (zero-filled
    tapes), give bit for bit the gradients of new memory every call."""
    torch.manual_seed(0)
    layer = make().double()
    x = torch.randn(7, 3, 5, dtype=torch.float64)
    lengths = torch.tensor([7, 4, 2])

    def gradients(seed: int) -> list[torch.Tensor]:
        torch.manual_seed(seed)  # zoneout's draws
        output, _ = layer(x, lengths=lengths)
        return torch.autograd.grad(output.square().sum(), list(layer.parameters()))

    def in_flight() -> tuple[list, list]:
        torch.manual_seed(1)
        first, _ = layer(x, lengths=lengths)
        torch.manual_seed(2)
        second, _ = layer(x, lengths=lengths)
        parameters = list(layer.parameters())
        later = torch.autograd.grad(second.square().sum(), parameters)
        return torch.autograd.grad(first.square().sum(), parameters), later

    monkeypatch.setattr(memory, "_tape_limit", 0)
    expected = [gradients(1), gradients(2)]
    monkeypatch.setattr(memory, "_tape_limit", 2**20)
    for _ in range(3):
        got = in_flight()
        for grads, wanted in zip(got, expected, strict=True):
            for g, w in zip(grads, wanted, strict=True):
                torch.testing.assert_close(g, w, rtol=0, atol=0)
    tapes = len(kept._kept_tapes)
    assert tapes >= 8  # 2 layers x 2 directions x 2 calls in flight: all kept, all reused
    gradients(3)
    assert len(kept._kept_tapes) == tapes


def test_without_torchs_use_counts_no_tape_is_handed_out_again(kept, monkeypatch):
    monkeypatch.setattr(memory, "_STORAGE_USE_COUNT", None)
    like = torch.empty(0)
    tape = kept.tape_buffer(1000, like, zeros=False)
    address = tape.data_ptr()
    del tape
    again = kept.tape_buffer(1000, like, zeros=False)
    assert again.data_ptr() != address and len(kept._kept_tapes) == 2  # a new one, both kept
