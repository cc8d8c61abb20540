"""The plain GRU and Elman kernels with their per-step products on BLAS or on the hand loop.

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python benchmarks/products.py [--repeats 15]

For `kernels.gru_sequence` and `elman_sequence` (tanh), training (forward + backward) and
inference (`torch.no_grad()`) at the benchmark's shapes (`rnnkit.bench.SHAPES`, float32), it
times the kernel with `_numba_products.blas_is_faster` forced to True and to False, the two in
turn (`rnnkit.bench.median_times`: medians of this thread's processor time), and prints both,
their ratio and the route that the rule picks. `_numba_products.py` records the results.
"""

from __future__ import annotations

import argparse
from unittest import mock

import torch

from rnnkit import kernels
from rnnkit.bench import SHAPES, median_times
from rnnkit.kernels import _numba_products

GATES = {"gru": 3, "elman": 1}


def forced(kind: str, training: bool, blas: bool, shape: tuple[int, int, int, int]):
    """One call of the kernel at `shape` (B, T, H_in, H) with the products on BLAS or not."""
    batch, steps, input_size, hidden = shape
    torch.manual_seed(0)
    module = torch.nn.GRU(input_size, hidden) if kind == "gru" else torch.nn.RNN(input_size, hidden)
    weights = (module.weight_ih_l0, module.weight_hh_l0, module.bias_ih_l0, module.bias_hh_l0)
    x = torch.randn(steps, batch, input_size, requires_grad=training)
    h0 = torch.zeros(batch, hidden)
    sequence = kernels.gru_sequence if kind == "gru" else kernels.elman_sequence

    def call() -> None:
        with mock.patch.object(_numba_products, "blas_is_faster", lambda *_: blas):
            with torch.set_grad_enabled(training):
                output, h_n = sequence(x, h0, *weights)
            if training:
                (output.sum() + h_n.sum()).backward()

    return call


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=15)
    repeats = parser.parse_args().repeats
    torch.set_num_threads(1)
    print(f"{'case':36s} {'BLAS ms':>8s} {'loop ms':>8s} {'ratio':>6s}  rule")
    for kind in GATES:
        for training in (True, False):
            for shape in SHAPES:
                functions = {blas: forced(kind, training, blas, shape) for blas in (True, False)}
                for function in functions.values():
                    function()  # compile or load the kernels, fill caches
                seconds = median_times(functions, repeats, calls=1)
                batch, steps, _, hidden = shape
                weight_hh = torch.empty(GATES[kind] * hidden, hidden)
                rule = "BLAS" if _numba_products.blas_is_faster(batch, weight_hh) else "loop"
                mode = "train" if training else "infer"
                name = f"{kind} {mode} B={batch} T={steps} H={hidden}"
                blas_ms, loop_ms = seconds[True] * 1e3, seconds[False] * 1e3
                print(f"{name:36s} {blas_ms:8.2f} {loop_ms:8.2f} {blas_ms / loop_ms:6.2f}  {rule}")


if __name__ == "__main__":
    main()
