"""What a tensor's layout costs the kernels' autograd glue (benchmarks/RESULTS.md, changes 16-17).

    OMP_NUM_THREADS=1 python benchmarks/layouts.py [--repeats 21]

1. A weight gradient added into a parameter's `.grad` (what autograd does from the second
   backward call on, and gradient accumulation), as a transposed view against contiguous.
2. The weight gradient's product (`_onednn.summed_outer_products`, grad.T @ inputs over T * B
   rows) followed by that addition: oneDNN's transposed result as it comes, against it copied
   contiguous first (what the kernels now return).
3. Zoneout's draws for an LSTM with both rates, (T, B * 2H) uniform numbers whose two halves
   the kernels read: compared in place and then copied contiguous by the forward and again by
   the backward call, against compared into new contiguous memory once.

Medians of this thread's processor time (`rnnkit.bench.median_times`, in alternating order),
microseconds, and the ratio new / old.
"""

from __future__ import annotations

import argparse

import torch

from rnnkit.bench import median_times
from rnnkit.kernels import _onednn

PRODUCTS = ((200, 1024, 256), (1600, 512, 128), (8000, 256, 64), (3200, 2048, 512))


def report(label: str, old: str, new: str, times: dict[str, float]) -> None:
    old_us, new_us = times[old] * 1e6, times[new] * 1e6
    print(
        f"{label:44s} {old} {old_us:8.1f} us   {new} {new_us:8.1f} us   ratio {new_us / old_us:.2f}"
    )


def accumulate(rows: int, cols: int, repeats: int) -> dict[str, float]:
    total = torch.zeros(rows, cols)
    transposed, contiguous = torch.randn(cols, rows).t(), torch.randn(rows, cols)
    functions = {
        "transposed": lambda: total.add_(transposed),
        "contiguous": lambda: total.add_(contiguous),
    }
    return median_times(functions, repeats, calls=20)


def product(steps_batch: int, gates: int, inputs_size: int, repeats: int) -> dict[str, float]:
    grad, inputs = torch.randn(steps_batch, gates), torch.randn(steps_batch, inputs_size)
    total = torch.zeros(gates, inputs_size)
    functions = {  # oneDNN's result as it comes, and as summed_outer_products returns it
        "transposed": lambda: total.add_(_onednn._onednn_product(grad, inputs)),
        "contiguous": lambda: total.add_(_onednn.summed_outer_products(grad, inputs)),
    }
    return median_times(functions, repeats, calls=3)


def draws(steps: int, batch: int, hidden: int, repeats: int) -> dict[str, float]:
    uniform = torch.rand(steps, 2 * batch * hidden)
    half = uniform[:, batch * hidden :]  # a column slice, as `zoneout_draws` splits them

    def in_place_then_copies() -> None:
        mask = half.lt_(0.1)  # in place on the slice (any values: the same work)
        mask.contiguous(), mask.contiguous()  # the forward's and the backward's copies

    def into_contiguous() -> None:
        torch.lt(half, 0.1, out=torch.empty(half.shape))

    return median_times({"old": in_place_then_copies, "new": into_contiguous}, repeats, calls=5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=21)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, one thread, oneDNN route: {_onednn.onednn_available()}")
    for rows, cols in ((256, 64), (512, 128), (1024, 256), (2048, 512)):
        times = accumulate(rows, cols, args.repeats)
        report(f"1. .grad += gradient, {rows} x {cols}", "transposed", "contiguous", times)
    for steps_batch, gates, inputs_size in PRODUCTS:
        times = product(steps_batch, gates, inputs_size, args.repeats)
        label = f"2. dW, .grad += it, T*B {steps_batch}, {gates} x {inputs_size}"
        report(label, "transposed", "contiguous", times)
    for steps, batch, hidden in ((1000, 8, 64), (200, 8, 128), (100, 32, 256)):
        times = draws(steps, batch, hidden, args.repeats)
        report(f"3. zoneout's d, T {steps}, B {batch}, H {hidden}", "old", "new", times)


if __name__ == "__main__":
    main()
