"""Importing rnnkit compiles nothing and does not import Numba; the dispatch predicate is sane."""

from __future__ import annotations

import subprocess
import sys

import pytest

from rnnkit.kernels import numba_is_faster


def run_python(code: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    return result.stdout.strip()


def test_import_rnnkit_does_not_import_numba():
    code = (  # modules a site hook loaded before (numba-cuda's redirector) do not count
        "import sys; before = set(sys.modules)\n"
        "import rnnkit, rnnkit.kernels\n"
        "print([m for m in set(sys.modules) - before if 'numba' in m])"
    )
    assert run_python(code) == "[]"


def test_loading_a_kernel_compiles_nothing_until_it_is_called():
    code = (
        "from rnnkit.kernels import numba_elman, numba_gru, numba_step\n"
        "modules = (numba_elman, numba_gru, numba_step)\n"
        "kernels = [f for m in modules for f in vars(m).values() if hasattr(f, 'signatures')]\n"
        "print(len(kernels), sum(len(f.signatures) for f in kernels))"
    )
    n_kernels, n_compiled = map(int, run_python(code).split())
    assert n_kernels >= 6
    assert n_compiled == 0


@pytest.mark.parametrize("kind", ["gru", "rnn_tanh", "rnn_relu"])
def test_dispatch_prefers_numba_for_small_batches_and_torch_for_large(kind):
    assert numba_is_faster(kind, batch=1, hidden=128, seq_len=1000)
    assert not numba_is_faster(kind, batch=256, hidden=1024, seq_len=100)


def test_dispatch_keeps_torch_for_the_lstm():
    assert not numba_is_faster("lstm", batch=1, hidden=128, seq_len=1000)
