"""The plain GRU and Elman kernels with their per-step products on each route.

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python benchmarks/products.py [--repeats 15]

For `kernels.gru_sequence` and `elman_sequence` (tanh), training (forward + backward) and
inference (`torch.no_grad()`) at the benchmark's shapes (`rnnkit.bench.SHAPES`, float32), it
times the kernel with `_numba_products.product_route` forced to BLAS, the packed tiles and the
hand loop, in turn (`rnnkit.bench.median_times`: medians of this thread's processor time), and
prints the three, the tiles' and the loop's time over BLAS's and the route that the rule picks.
`_numba_products.py` records the results.
"""

from __future__ import annotations

import argparse
from unittest import mock

import torch

from rnnkit import kernels
from rnnkit.bench import SHAPES, median_times
from rnnkit.kernels import _numba_products

GATES = {"gru": 3, "elman": 1}


ROUTES = {
    "BLAS": _numba_products.BLAS,
    "tiles": _numba_products.PACKED,
    "loop": _numba_products.HAND,
}


def forced(kind: str, training: bool, route: int, shape: tuple[int, int, int, int]):
    """One call of the kernel at `shape` (B, T, H_in, H) with the products on `route`."""
    batch, steps, input_size, hidden = shape
    torch.manual_seed(0)
    module = torch.nn.GRU(input_size, hidden) if kind == "gru" else torch.nn.RNN(input_size, hidden)
    weights = (module.weight_ih_l0, module.weight_hh_l0, module.bias_ih_l0, module.bias_hh_l0)
    x = torch.randn(steps, batch, input_size, requires_grad=training)
    h0 = torch.zeros(batch, hidden)
    sequence = kernels.gru_sequence if kind == "gru" else kernels.elman_sequence

    def call() -> None:
        with mock.patch.object(_numba_products, "product_route", lambda *_: route):
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
    print(
        f"{'case':36s} {'BLAS ms':>8s} {'tiles ms':>8s} {'loop ms':>8s} tiles/BLAS loop/BLAS rule"
    )
    for kind in GATES:
        for training in (True, False):
            for shape in SHAPES:
                functions = {
                    name: forced(kind, training, route, shape) for name, route in ROUTES.items()
                }
                for function in functions.values():
                    function()  # compile or load the kernels, fill caches
                seconds = median_times(functions, repeats, calls=1)
                batch, steps, _, hidden = shape
                weight_hh = torch.empty(GATES[kind] * hidden, hidden)
                route = _numba_products.product_route(batch, weight_hh)
                rule = next(name for name, value in ROUTES.items() if value == route)
                mode = "train" if training else "infer"
                name = f"{kind} {mode} B={batch} T={steps} H={hidden}"
                blas, tiles, loop = (seconds[name_] * 1e3 for name_ in ROUTES)
                print(
                    f"{name:36s} {blas:8.2f} {tiles:8.2f} {loop:8.2f} {tiles / blas:10.2f} "
                    f"{loop / blas:9.2f} {rule}"
                )


if __name__ == "__main__":
    main()
