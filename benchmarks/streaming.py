"""Streaming steps at batch 1: the compiled kernel alone and the layer's public `step()`.

    OMP_NUM_THREADS=1 python benchmarks/streaming.py [--repeats 41] [--json streaming.json]

For the LSTM and GRU at H = 256, H_in = 64 and 256, inference (`torch.no_grad()`, eval mode),
it times one step of `kernels.LSTMStep` / `GRUStep` (the kernel with its tensor <-> NumPy
conversion), of `rnnkit.LSTM(...).step(x, state)` / `GRU` (what a user calls: checks, the
state in torch.nn's layout, the kernel), and of torch.nn.LSTMCell / GRUCell for contrast, each
feeding back the state it returned, and the kernel held to reading its weights in one
direction ("kernel, one way"; the kernel alternates directions from call to call, see
docs/kernels.md); and for a layer-norm LSTM and GRU (`layer_norm=True`) the
same with `kernels.VariantLSTMStep` / `VariantGRUStep` plus the cell's own step in torch ops
(`step()` on backend "reference"). Processor time of this thread per step, `calls` steps per
timing, the contenders in turn (alternating order), after `--warmup` untimed rounds (without
them the first case's timings split between two levels 40% apart); the median of the repeats
and the 10th-90th percentile spread. Results: benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

import rnnkit
from rnnkit import kernels

HIDDEN = 256
INPUT_SIZES = (64, 256)


def timings(functions: dict, repeats: int, calls: int) -> dict[str, dict[str, float]]:
    """Microseconds per call of each function: median, 10th and 90th percentile."""
    times = {name: [] for name in functions}
    for repeat in range(repeats):
        for name in list(functions)[:: 1 if repeat % 2 == 0 else -1]:
            start = time.thread_time()
            for _ in range(calls):
                functions[name]()
            times[name].append((time.thread_time() - start) / calls * 1e6)
    result = {}
    for name, values in times.items():
        values = sorted(values)
        tenth = len(values) // 10
        result[name] = {
            "median_us": statistics.median(values),
            "p10_us": values[tenth],
            "p90_us": values[-1 - tenth],
        }
    return result


def variant_contenders(kind: str, input_size: int) -> dict:
    """A layer-norm LSTM's or GRU's step: the compiled `VariantLSTMStep` / `VariantGRUStep`
    alone, `step()` (on it), the cell's own step in torch ops (`step()` on backend "reference")
    and torch.nn.LSTMCell / GRUCell."""
    torch.manual_seed(0)
    lstm = kind == "lstm_layer_norm"
    make = rnnkit.LSTM if lstm else rnnkit.GRU
    layer = make(input_size, HIDDEN, layer_norm=True).eval()
    loop = make(input_size, HIDDEN, layer_norm=True, backend="reference").eval()
    loop.load_state_dict(layer.state_dict())
    step = (kernels.VariantLSTMStep if lstm else kernels.VariantGRUStep)(layer.cells[0])
    torch_cell = (torch.nn.LSTMCell if lstm else torch.nn.GRUCell)(input_size, HIDDEN)
    x, h = torch.randn(1, input_size), torch.zeros(1, HIDDEN)
    start = (h, h.clone()) if lstm else h
    states = {"kernel": start, "layer": None, "loop": None, "torch": start}

    def kernel_step() -> None:
        states["kernel"] = step(x, states["kernel"])

    def layer_step() -> None:
        states["layer"] = layer.step(x, states["layer"])[1]

    def loop_step() -> None:
        states["loop"] = loop.step(x, states["loop"])[1]

    def torch_step() -> None:
        states["torch"] = torch_cell(x, states["torch"])

    return {"kernel": kernel_step, "step()": layer_step, "loop step()": loop_step,
            "torch cell": torch_step}  # fmt: skip


def contenders(kind: str, input_size: int) -> dict:
    """The three ways to take one step, each a no-argument function carrying its own state."""
    if kind.endswith("layer_norm"):
        return variant_contenders(kind, input_size)
    torch.manual_seed(0)
    layer = {"lstm": rnnkit.LSTM, "gru": rnnkit.GRU}[kind](input_size, HIDDEN).eval()
    cell = layer.cells[0]
    weights = (cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh)
    step = {"lstm": kernels.LSTMStep, "gru": kernels.GRUStep}[kind](*weights)
    torch_cell = {"lstm": torch.nn.LSTMCell, "gru": torch.nn.GRUCell}[kind](input_size, HIDDEN)
    x, h = torch.randn(1, input_size), torch.zeros(1, HIDDEN)
    one_way = {"lstm": kernels.LSTMStep, "gru": kernels.GRUStep}[kind](*weights)
    states = {"kernel": (h, h.clone()) if kind == "lstm" else h, "layer": None, "torch": None}
    states["torch"] = states["one way"] = states["kernel"]

    def kernel_step() -> None:
        states["kernel"] = step(x, states["kernel"])

    def one_way_step() -> None:  # the kernel held to reading the weights first to last
        one_way._backward = True  # the call flips it: every call reads forward
        states["one way"] = one_way(x, states["one way"])

    def layer_step() -> None:
        states["layer"] = layer.step(x, states["layer"])[1]

    def torch_step() -> None:
        states["torch"] = torch_cell(x, states["torch"])

    return {"kernel": kernel_step, "kernel, one way": one_way_step, "step()": layer_step,
            "torch cell": torch_step}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=41, help="timings per contender")
    parser.add_argument("--calls", type=int, default=200, help="steps per timing")
    parser.add_argument(
        "--warmup", type=int, default=5, help="untimed rounds of every contender first"
    )
    parser.add_argument("--json", help="write the results to this file")
    args = parser.parse_args()
    torch.set_num_threads(1)
    records = []
    with torch.no_grad():
        for kind in ("lstm", "gru", "lstm_layer_norm", "gru_layer_norm"):
            for input_size in INPUT_SIZES:
                functions = contenders(kind, input_size)
                for function in functions.values():
                    function()  # compile or load the kernel
                timings(functions, args.warmup, args.calls)  # untimed: caches, allocator, clock
                for name, times in timings(functions, args.repeats, args.calls).items():
                    shape = {"batch": 1, "input_size": input_size, "hidden": HIDDEN}
                    records.append({"kind": kind, "route": name, "shape": shape, **times})
                    print(
                        f"{kind} H_in={input_size:<4d} {name:<15s} {times['median_us']:7.2f} "
                        f"us/step  (p10-p90 {times['p10_us']:.2f}-{times['p90_us']:.2f})",
                        flush=True,
                    )
    if args.json:
        with open(args.json, "w") as file:
            json.dump(records, file, indent=1)


if __name__ == "__main__":
    main()
