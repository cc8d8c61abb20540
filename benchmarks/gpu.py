"""rnnkit on a CUDA device against torch.nn on the same device, in one process.

    python benchmarks/gpu.py [--repeats 9] [--json gpu.json] [--quick]

Three tables, each a median of `--repeats` timings (wall clock, `torch.cuda.synchronize()`
after each timed batch of calls; the contenders timed in turn, alternating order):
- drop-in layers: rnnkit.LSTM/GRU/RNN against torch.nn.LSTM/GRU/RNN (both cuDNN on the device:
  the ratio is rnnkit's own cost around the same kernel), training (forward + backward) and
  inference, float32;
- variants: each layer of `rnnkit.bench.VARIANTS` against torch.nn.LSTM of the same size (on
  the device a variant runs its cells step by step in torch operators, or minGRU/minLSTM's
  log-space scan);
- streaming: one `step()` at batch 1, H = 256 (LSTM, GRU, layer-norm LSTM) against
  torch.nn.LSTMCell / GRUCell.
Results: benchmarks/RESULTS.md ("On a GPU").
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

import rnnkit
from rnnkit.bench import VARIANTS, Case, variant_layer, workload

SHAPES = [(1, 1000, 128, 128), (8, 200, 128, 128), (64, 100, 256, 256), (256, 100, 512, 512)]
VARIANT_SHAPES = [(8, 200, 128, 128), (64, 100, 256, 256)]
PLAIN = {
    "lstm": (torch.nn.LSTM, rnnkit.LSTM, {}),
    "gru": (torch.nn.GRU, rnnkit.GRU, {}),
    "rnn_tanh": (torch.nn.RNN, rnnkit.RNN, {"nonlinearity": "tanh"}),
}


def gpu_times(functions: dict, repeats: int, calls: int) -> dict[str, float]:
    """Median seconds per call of each function, the device synchronised around each timing."""
    times = {name: [] for name in functions}
    for repeat in range(repeats):
        for name in list(functions)[:: 1 if repeat % 2 == 0 else -1]:
            torch.cuda.synchronize()
            start = time.perf_counter()
            for _ in range(calls):
                functions[name]()
            torch.cuda.synchronize()
            times[name].append((time.perf_counter() - start) / calls)
    return {name: statistics.median(values) for name, values in times.items()}


def warm(functions: dict) -> None:
    for function in functions.values():
        for _ in range(3):
            function()
    torch.cuda.synchronize()


def plain_case(kind: str, mode: str, shape, repeats: int) -> dict:
    torch_cls, ours_cls, extra = PLAIN[kind]
    batch, steps, input_size, hidden = shape
    torch.manual_seed(0)
    reference = torch_cls(input_size, hidden, device="cuda", **extra)
    ours = ours_cls(input_size, hidden, device="cuda", **extra)
    ours.load_state_dict(reference.state_dict())
    case = Case(kind, mode, *shape)
    x = torch.randn(steps, batch, input_size, device="cuda", requires_grad=mode == "train")
    functions = {
        "ours": workload(case, ours, x, None),
        "reference": workload(case, reference, x, None),
    }
    warm(functions)
    seconds = gpu_times(functions, repeats, calls=5)
    return row(case, f"torch.nn.{torch_cls.__name__}", seconds)


def variant_case(kind: str, mode: str, shape, repeats: int) -> dict:
    case = Case(kind, mode, *shape)
    torch.manual_seed(0)
    ours = variant_layer(case, "auto").cuda()
    lstm = torch.nn.LSTM(case.input_size, case.hidden, device="cuda")
    x = torch.randn(*shape[1::-1], case.input_size, device="cuda", requires_grad=mode == "train")
    functions = {"ours": workload(case, ours, x, None), "reference": workload(case, lstm, x, None)}
    warm(functions)
    seconds = gpu_times(functions, repeats, calls=1)
    return row(case, "torch.nn.LSTM", seconds)


def stream_case(kind: str, repeats: int) -> dict:
    torch.manual_seed(0)
    options = {"layer_norm": True} if kind.endswith("layer_norm") else {}
    gru = kind.startswith("gru")
    layer_cls, cell_cls = (
        (rnnkit.GRU, torch.nn.GRUCell) if gru else (rnnkit.LSTM, torch.nn.LSTMCell)
    )
    layer = layer_cls(64, 256, device="cuda", **options).eval()
    cell = cell_cls(64, 256, device="cuda")
    x = torch.randn(1, 64, device="cuda")
    zeros = torch.zeros(1, 256, device="cuda")
    box = {"ours": None, "reference": zeros if gru else (zeros, zeros)}

    def ours() -> None:
        with torch.no_grad():
            box["ours"] = layer.step(x, box["ours"])[1]

    def reference() -> None:
        with torch.no_grad():
            box["reference"] = cell(x, box["reference"])

    functions = {"ours": ours, "reference": reference}
    warm(functions)
    seconds = gpu_times(functions, repeats, calls=200)
    return row(Case(kind, "stream", 1, 1, 64, 256), f"torch.nn.{cell_cls.__name__}", seconds)


def row(case: Case, reference: str, seconds: dict[str, float]) -> dict:
    result = {
        "name": case.name,
        "shape": {
            "batch": case.batch,
            "seq_len": case.seq_len,
            "input_size": case.input_size,
            "hidden": case.hidden,
        },
        "kind": case.kind,
        "mode": case.mode,
        "device": torch.cuda.get_device_name(),
        "ours_ms": seconds["ours"] * 1e3,
        "reference": reference,
        "reference_ms": seconds["reference"] * 1e3,
        "ratio": seconds["ours"] / seconds["reference"],
    }
    print(
        f"{case.name:<48} {result['ours_ms']:10.3f} {result['reference_ms']:10.3f} "
        f"{result['ratio']:7.2f}  {reference}",
        flush=True,
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--json", default=None)
    parser.add_argument("--quick", action="store_true", help="two shapes, no variant training")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("benchmarks/gpu.py needs a CUDA device")
    torch.backends.cudnn.benchmark = False
    print(
        f"{torch.cuda.get_device_name()}, torch {torch.__version__}, "
        f"cuDNN {torch.backends.cudnn.version()}"
    )
    print(f"{'case':<48} {'ours ms':>10} {'ref ms':>10} {'ratio':>7}")
    shapes = SHAPES[:2] if args.quick else SHAPES
    records = [
        plain_case(kind, mode, shape, args.repeats)
        for kind in PLAIN
        for mode in ("train", "infer")
        for shape in shapes
    ]
    modes = ("infer",) if args.quick else ("train", "infer")
    records += [
        variant_case(kind, mode, shape, args.repeats)
        for kind in VARIANTS
        for mode in modes
        for shape in VARIANT_SHAPES
    ]
    records += [stream_case(kind, args.repeats) for kind in ("lstm", "gru", "lstm_layer_norm")]
    if args.json:
        with open(args.json, "w") as file:
            json.dump(records, file, indent=1)


if __name__ == "__main__":
    main()
