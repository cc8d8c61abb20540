"""`rnnkit bench`: rnnkit's time-loop kernels against torch.nn, in one process.

Each case runs rnnkit's layer (`rnnkit.LSTM`, `GRU`, `RNN`: the compiled Numba kernel where
`numba_is_faster` says so, torch's own fused kernel elsewhere and always for the LSTM) and
torch.nn's module on the same weights and inputs, alternating the two, and reports the
median of `repeats` timings, the ratio ours / torch, and GFLOP/s of the matrix products against
the machine's measured single-thread matrix-multiply rate. Training cases time forward +
backward; inference cases forward under `torch.no_grad()`; streaming cases one step at batch 1
against torch.nn's cell (its fastest single step), each step fed the state it returned and the
whole timing under one `torch.no_grad()`, as a real-time loop runs; the same step writing its
state in place (`update_`; a variant layer's `step_`) is timed with them
(`in_place_us_per_step`), and for LSTM and GRU the drop-in layer's `step()` and `step_()`, the
same kernel behind the layer's checks (`layer_us_per_step`, `layer_in_place_us_per_step`).
Variant cases (`VARIANTS`:
layer norm, peepholes, dropouts, zoneout, projection, minGRU, minLSTM) run rnnkit's variant
layer on its "auto" route against torch.nn.LSTM of the same size (the reference of the ratio)
and against the same layer on the reference loop, a Python loop over torch ops (`loop_ms`,
`loop_ratio`);
their streaming cases time the layer's `step()` in eval against torch.nn.LSTMCell and against
the same layer's `step()` on the reference loop.
Compile cases time the first call of each kernel in a fresh process with an empty Numba cache,
then again with that cache on disk.

torch runs on one thread (`torch.set_num_threads(1)`), the Numba kernels are single-threaded,
and times are the CPU time of the calling thread, where all that work runs, so that other
processes on a shared machine do not count; wall-clock medians are in the records too. With
`threads` above 1 both sides may use that many threads (torch's intra-op threads; the streaming
steps' partner thread, `kernels._step_partner`), work this thread's clock does not see, so the
times, ratios and rates are the wall-clock medians instead (`"clock": "wall"` in the records).
Unless told otherwise (`keep_memory=False`, `--system-malloc`), the run first calls
`rnnkit.keep_freed_memory()`, for both sides alike: freed temporaries are reused instead of
being paged in afresh on every call (`rnnkit.memory`).
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from rnnkit import kernels  # Numba loads on the first kernel looked up, not here
from rnnkit.kernels import numba_is_faster
from rnnkit.kernels._onednn import onednn_available, summed_outer_products
from rnnkit.layers import GRU, LSTM, RNN
from rnnkit.memory import keep_freed_memory
from rnnkit.minimal import MinGRU, MinLSTM

GATES = {"lstm": 4, "gru": 3, "rnn_tanh": 1, "rnn_relu": 1}
MODES = ("train", "infer", "stream")
STEP_FORMS = ("in_place", "layer", "layer_in_place")  # timed beside a stream case's step
STREAM_WARMUP = 5  # untimed rounds of 200 steps before a streaming case's timings
VARIANTS = {  # name: (layer, options, gate blocks); proj_size=True means H / 2
    "lstm_layer_norm": (LSTM, {"layer_norm": True}, 4),
    "lstm_peephole": (LSTM, {"peephole": True}, 4),
    "lstm_recurrent_dropout": (LSTM, {"recurrent_dropout": 0.25}, 4),
    "lstm_zoneout": (LSTM, {"zoneout": 0.1}, 4),
    "lstm_weight_drop": (LSTM, {"weight_drop": 0.5}, 4),
    "gru_layer_norm": (GRU, {"layer_norm": True}, 3),
    "gru_proj": (GRU, {"proj_size": True}, 3),
    "rnn_proj": (RNN, {"proj_size": True}, 1),
    "mingru": (MinGRU, {}, 2),
    "minlstm": (MinLSTM, {}, 3),
}


SHAPES = [  # (B, T, H_in, H)
    (1, 1000, 128, 128),
    (1, 200, 256, 256),
    (8, 200, 128, 128),
    (8, 1000, 32, 64),
    (32, 100, 256, 256),
    (64, 50, 512, 512),
]


@dataclass(frozen=True)
class Case:
    kind: str  # "lstm", "gru", "rnn_tanh", "rnn_relu" or a name in VARIANTS
    mode: str  # "train" (forward + backward), "infer" (forward, no grad) or "stream" (one step)
    batch: int  # B
    seq_len: int  # T (1 for streaming)
    input_size: int  # H_in
    hidden: int  # H

    @property
    def name(self) -> str:
        sizes = f"B={self.batch} T={self.seq_len} I={self.input_size} H={self.hidden}"
        return f"{self.kind} {self.mode} {sizes}"


def default_cases() -> list[Case]:
    """Small, medium and large shapes, batch 1 and long sequences, for every kind and mode."""
    cases = [
        Case(kind, mode, *shape)
        for kind in ("lstm", "gru", "rnn_tanh", "rnn_relu")
        for mode in ("train", "infer")
        for shape in (SHAPES if kind != "rnn_relu" else SHAPES[:3])
    ]
    stream = [
        Case(kind, "stream", 1, 1, size, 256) for kind in ("lstm", "gru") for size in (64, 256)
    ]
    return cases + tiny_cases() + stream + variant_cases()


def tiny_cases() -> list[Case]:
    """Tiny sizes (T = 10, H = 16, B = 1, 4, 8), where a call takes 0.1-1 ms and the layer's
    own Python cost (checks, states, dispatch) shows against torch.nn's."""
    return [
        Case(kind, mode, batch, 10, 16, 16)
        for kind in ("lstm", "gru", "rnn_tanh", "rnn_relu")
        for mode in ("train", "infer")
        for batch in (1, 4, 8)
    ]


def variant_cases() -> list[Case]:
    """Every variant in `VARIANTS`, training and inference, at the default shapes, and its
    streaming step at batch 1, H = 256."""
    return [
        Case(kind, mode, *shape)
        for kind in VARIANTS
        for mode in ("train", "infer")
        for shape in SHAPES
    ] + [Case(kind, "stream", 1, 1, 64, 256) for kind in VARIANTS]


def quick_cases() -> list[Case]:
    """A one-minute subset: the issue's shape and one large one per kind, and streaming."""
    return [
        Case(kind, mode, *shape)
        for kind in ("lstm", "gru", "rnn_tanh")
        for mode in ("train", "infer")
        for shape in ((1, 1000, 128, 128), (32, 100, 256, 256))
    ] + [Case(kind, "stream", 1, 1, 64, 256) for kind in ("lstm", "gru")]


# ---- the two routes ----------------------------------------------------------------------------


def torch_module(case: Case) -> torch.nn.Module:
    if case.mode == "stream":
        cell = torch.nn.LSTMCell if case.kind == "lstm" else torch.nn.GRUCell
        return cell(case.input_size, case.hidden)
    if case.kind == "lstm":
        return torch.nn.LSTM(case.input_size, case.hidden)
    if case.kind == "gru":
        return torch.nn.GRU(case.input_size, case.hidden)
    return torch.nn.RNN(case.input_size, case.hidden, nonlinearity=case.kind[4:])


def uses_numba(case: Case) -> bool:
    if case.mode == "stream":
        return True
    training = case.mode == "train"
    return numba_is_faster(case.kind, case.batch, case.hidden, case.seq_len, training)


def rnnkit_route(case: Case, module: torch.nn.Module) -> Callable:
    """rnnkit's route for this case, a callable like `module`: the streaming step, or rnnkit's
    layer with `module`'s weights, which runs the Numba kernel where `numba_is_faster` picks it
    and torch's fused kernel elsewhere."""
    if case.mode == "stream":
        step_class = kernels.LSTMStep if case.kind == "lstm" else kernels.GRUStep
        return step_class(module.weight_ih, module.weight_hh, module.bias_ih, module.bias_hh)
    layer_class = {"lstm": LSTM, "gru": GRU}.get(case.kind, RNN)
    options = {} if case.kind in ("lstm", "gru") else {"nonlinearity": case.kind[4:]}
    layer = layer_class(case.input_size, case.hidden, **options)
    layer.load_state_dict(module.state_dict())
    return layer


def stream_layer(case: Case, cell: torch.nn.Module) -> torch.nn.Module:
    """rnnkit's drop-in layer (`rnnkit.LSTM`, `GRU`) in eval with the weights of torch.nn's
    `cell`, whose `step()` and `step_()` run the same kernel as the cell's step object behind
    the layer's own checks (`Recurrent._compiled_steps`)."""
    layer = (LSTM if case.kind == "lstm" else GRU)(case.input_size, case.hidden).eval()
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(layer, f"{name}_l0").copy_(getattr(cell, name))
    return layer


def workload(case: Case, run: Callable, x: torch.Tensor, state) -> Callable[[], None]:
    """One timed call of `run`: a forward (+ backward) over the sequence, or one streaming step."""
    if case.mode != "train":
        inputs = x[0] if case.mode == "stream" else x

        def forward() -> None:
            with torch.no_grad():
                run(inputs, state)

        return forward

    def forward_backward() -> None:
        output, _ = run(x, state)
        output.sum().backward()
        x.grad = None

    return forward_backward


# ---- measurement -------------------------------------------------------------------------------


def median_times(functions: dict[str, Callable], repeats: int, calls: int) -> dict[str, float]:
    """Median seconds per call of each function, timed in turn (in alternating order) so that
    load changes hit all alike, by the CPU time of this thread (where torch, on one thread, and
    Numba both run, so other processes on a shared machine do not count) and by the wall clock
    (`NAME_wall`)."""
    times = {key: [] for name in functions for key in (name, f"{name}_wall")}
    for repeat in range(repeats):
        for name in list(functions)[:: 1 if repeat % 2 == 0 else -1]:
            wall, cpu = time.perf_counter(), time.thread_time()
            for _ in range(calls):
                functions[name]()
            times[name].append((time.thread_time() - cpu) / calls)
            times[f"{name}_wall"].append((time.perf_counter() - wall) / calls)
    return {key: statistics.median(values) for key, values in times.items()}


def matmul_gflops(size: int = 1024, repeats: int = 10) -> float:
    """The machine's float32 matrix-multiply rate on one thread, GFLOP/s (best of `repeats`):
    the faster of torch's matmul and oneDNN's product where torch carries it (on AMD processors
    torch's matmul runs MKL's AVX2 code, half what a full-width AVX-512 core does)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    products = [lambda: a @ b]
    if onednn_available():
        products.append(lambda: summed_outer_products(a, b))  # a.T @ b through oneDNN
    best = float("inf")
    for product in products:
        product()
        for _ in range(repeats):
            start = time.thread_time()
            product()
            best = min(best, time.thread_time() - start)
    return 2 * size**3 / best / 1e9


def case_flops(case: Case) -> float:
    """FLOPs of the layer's matrix products: the gates' input and recurrent ones (none recurrent
    for minGRU / minLSTM; from the projected state, and the projection itself, with proj_size);
    training adds the backward's two products (input and weight gradients) per forward one."""
    gates, recurrent, projection = GATES.get(case.kind, 0), case.hidden, 0
    if case.kind in VARIANTS:
        layer_class, options, gates = VARIANTS[case.kind]
        if layer_class in (MinGRU, MinLSTM):
            recurrent = 0
        elif options.get("proj_size"):
            recurrent = case.hidden // 2
            projection = recurrent * case.hidden
    per_step = 2 * (gates * case.hidden * (case.input_size + recurrent) + projection) * case.batch
    return per_step * case.seq_len * (3 if case.mode == "train" else 1)


def measure(case: Case, repeats: int, peak_gflops: float) -> dict:
    """Time rnnkit's route and torch.nn's on one case; the JSON record of the result."""
    torch.manual_seed(0)
    module = torch_module(case)
    x = torch.randn(case.seq_len, case.batch, case.input_size, requires_grad=case.mode == "train")
    h0 = torch.zeros(
        (1,) * (case.mode != "stream") + (case.batch, case.hidden)
    )  # torch.nn's layout
    state = (h0, h0) if case.kind == "lstm" else h0
    if case.mode == "stream":  # each step fed the state it returned, as a real-time loop runs
        step = rnnkit_route(case, module)
        ours = stepping(step, x[0], state)
        reference = stepping(module, x[0], state)
        functions = {"ours": ours, "reference": reference}
        functions["in_place"] = updating(step.update_, x[0], state)
        layer = stream_layer(case, module)  # the drop-in layer's step() and step_() too
        layer_state = tuple(h[None] for h in state) if case.kind == "lstm" else state[None]
        functions["layer"] = stepping(lambda x, state: layer.step(x, state)[1], x[0], layer_state)
        functions["layer_in_place"] = updating(layer.step_, x[0], layer_state)
    else:
        ours = workload(case, rnnkit_route(case, module), x, state)
        reference = workload(case, module, x, state)
        functions = {"ours": ours, "reference": reference}
    calls = 200 if case.mode == "stream" else 1 + 2000 // (case.seq_len * case.hidden)  # tiny: 13
    with torch.no_grad() if case.mode == "stream" else contextlib.nullcontext():
        ours(), reference()  # warm up: compile or load the kernel, fill caches
        if case.mode == "stream":  # untimed rounds first: without them a process's first
            partner_loaded()  # (and the steps' partner thread loaded, with --threads)
            median_times(functions, STREAM_WARMUP, calls)  # streaming timings split 40% apart
        seconds = median_times(functions, repeats, calls)
    return record(case, f"torch.nn.{type(module).__name__}", seconds, peak_gflops)


def variant_layer(case: Case, backend: str) -> torch.nn.Module:
    """rnnkit's layer for a variant case on `backend`, in train or eval mode as the case runs."""
    layer_class, options, _ = VARIANTS[case.kind]
    if options.get("proj_size") is True:
        options = options | {"proj_size": case.hidden // 2}
    layer = layer_class(case.input_size, case.hidden, backend=backend, **options)
    return layer.train(case.mode == "train")


def measure_variant(case: Case, repeats: int, peak_gflops: float) -> dict:
    """Time a variant layer on its "auto" route, torch.nn.LSTM of the same size and the same
    layer on the reference loop; the JSON record (ratio: ours / torch.nn.LSTM)."""
    if case.mode == "stream":
        return measure_variant_stream(case, repeats, peak_gflops)
    torch.manual_seed(0)
    ours_layer, loop_layer = variant_layer(case, "auto"), variant_layer(case, "reference")
    loop_layer.load_state_dict(ours_layer.state_dict())
    lstm = torch.nn.LSTM(case.input_size, case.hidden)
    x = torch.randn(case.seq_len, case.batch, case.input_size, requires_grad=case.mode == "train")
    functions = {
        "ours": workload(case, ours_layer, x, None),
        "reference": workload(case, lstm, x, None),
        "loop": workload(case, loop_layer, x, None),
    }
    for function in functions.values():
        function()  # warm up: compile or load the kernel, fill caches
    seconds = median_times(functions, repeats, calls=1)
    with torch.set_grad_enabled(case.mode == "train"):
        route = ours_layer._route(x)
    if route == "reference" and hasattr(ours_layer.cells[0], "sequence"):
        route = "scan"  # minGRU, minLSTM: the cell's whole-sequence linear recurrence, which
        # on the CPU is the compiled `kernels.minimal_scan`
    result = record(case, "torch.nn.LSTM", seconds, peak_gflops, route)
    result |= {"loop_ms": seconds["loop"] * 1e3, "loop_ratio": seconds["ours"] / seconds["loop"]}
    return result | {"loop_wall_ms": seconds["loop_wall"] * 1e3}


def measure_variant_stream(case: Case, repeats: int, peak_gflops: float) -> dict:
    """Time a variant layer's `step()` in eval (each call feeding back the state it returned),
    torch.nn.LSTMCell of the same size, and the same layer's `step()` on the reference loop (its
    cells' torch operators); the JSON record (ratio: ours / torch.nn.LSTMCell)."""
    torch.manual_seed(0)
    ours_layer, loop_layer = variant_layer(case, "auto"), variant_layer(case, "reference")
    loop_layer.load_state_dict(ours_layer.state_dict())
    cell = torch.nn.LSTMCell(case.input_size, case.hidden)
    x = torch.randn(case.batch, case.input_size)
    zeros = torch.zeros(case.batch, case.hidden)
    with torch.no_grad():
        _, state = ours_layer.step(x)
    functions = {
        "ours": stepping(lambda x, state: ours_layer.step(x, state)[1], x, None),
        "reference": stepping(cell, x, (zeros, zeros)),
        "loop": stepping(lambda x, state: loop_layer.step(x, state)[1], x, None),
        "in_place": updating(ours_layer.step_, x, state),
    }
    with torch.no_grad():
        functions["ours"]()
        partner_loaded()  # the steps' partner thread loaded, with --threads
        median_times(functions, STREAM_WARMUP, 200)  # untimed: compile, caches, clock
        seconds = median_times(functions, repeats, calls=200)
    route = "numba" if ours_layer.__dict__.get("_compiled") is not None else "reference"
    result = record(case, "torch.nn.LSTMCell", seconds, peak_gflops, route)
    result |= {"loop_ms": seconds["loop"] * 1e3, "loop_ratio": seconds["ours"] / seconds["loop"]}
    return result | {"loop_wall_ms": seconds["loop_wall"] * 1e3}


def partner_loaded() -> None:
    """Wait for the streaming steps' partner thread, if one started, to serve
    (`kernels._step_partner.wait_until_serving`; imported here, as it imports Numba)."""
    from rnnkit.kernels._step_partner import wait_until_serving

    wait_until_serving()


def stepping(step: Callable, x: torch.Tensor, state) -> Callable[[], None]:
    """One streaming step of `step(x, state) -> state`, fed the state it returned last; timed
    under one `torch.no_grad()` around the whole timing, as a real-time loop runs."""
    box = [state]

    def call() -> None:
        box[0] = step(x, box[0])

    return call


def updating(update: Callable, x: torch.Tensor, state) -> Callable[[], None]:
    """One streaming step of `update(x, state)` that writes the state in place (`update_` of a
    cell's step, a layer's `step_`), on a copy of `state`."""
    state = tuple(part.clone() for part in state) if isinstance(state, tuple) else state.clone()

    def call() -> None:
        update(x, state)

    return call


def record(
    case: Case, reference: str, seconds: dict[str, float], peak_gflops: float, route: str = ""
) -> dict:
    ours_s, reference_s = seconds["ours"], seconds["reference"]
    flops = case_flops(case)
    shape = {"batch": case.batch, "seq_len": case.seq_len, "input_size": case.input_size}
    result = {
        "name": case.name,
        "shape": shape | {"hidden": case.hidden},
        "kind": case.kind,
        "mode": case.mode,
        "route": route or ("numba" if uses_numba(case) else "torch"),
        "ours_ms": ours_s * 1e3,
        "reference": reference,
        "reference_ms": reference_s * 1e3,
        "ratio": ours_s / reference_s,
        "ours_wall_ms": seconds["ours_wall"] * 1e3,
        "reference_wall_ms": seconds["reference_wall"] * 1e3,
        "ours_gflops": flops / ours_s / 1e9,
        "reference_gflops": flops / reference_s / 1e9,
        "peak_gflops": peak_gflops,
        "clock": "thread",
    }
    if case.mode == "stream":
        result["ours_us_per_step"] = ours_s * 1e6
        result["reference_us_per_step"] = reference_s * 1e6
    for name in STEP_FORMS:  # in place: `update_`, `step_`; the drop-in layer's step(), step_()
        if name in seconds:
            result[f"{name}_us_per_step"] = seconds[name] * 1e6
            result[f"{name}_wall_us_per_step"] = seconds[f"{name}_wall"] * 1e6
    return result


def by_wall_clock(result: dict, case: Case) -> dict:
    """`result` with its times, ratios and rates taken from the wall-clock medians (work on
    other threads counts), and `"clock": "wall"`."""
    ours_s, reference_s = result["ours_wall_ms"] / 1e3, result["reference_wall_ms"] / 1e3
    flops = case_flops(case)
    result = result | {
        "clock": "wall",
        "ours_ms": ours_s * 1e3,
        "reference_ms": reference_s * 1e3,
        "ratio": ours_s / reference_s,
        "ours_gflops": flops / ours_s / 1e9,
        "reference_gflops": flops / reference_s / 1e9,
    }
    if case.mode == "stream":
        result |= {"ours_us_per_step": ours_s * 1e6, "reference_us_per_step": reference_s * 1e6}
    for name in STEP_FORMS:
        if f"{name}_wall_us_per_step" in result:
            result[f"{name}_us_per_step"] = result[f"{name}_wall_us_per_step"]
    if "loop_wall_ms" in result:
        loop_s = result["loop_wall_ms"] / 1e3
        result |= {"loop_ms": loop_s * 1e3, "loop_ratio": ours_s / loop_s}
    return result


_COMPILE_SCRIPT = """
import time, torch
import rnnkit
from rnnkit import kernels
start = time.perf_counter()
import rnnkit.kernels.numba_gru, rnnkit.kernels.numba_elman, rnnkit.kernels.numba_step
import rnnkit.kernels.numba_lstm, rnnkit.kernels.numba_variants, rnnkit.kernels.numba_scan
print("import_of_numba_and_the_kernel_modules", time.perf_counter() - start)
x, h = torch.randn(3, 2, 4, requires_grad=True), torch.zeros(2, 5)
gru, rnn = torch.nn.GRU(4, 5), torch.nn.RNN(4, 5)
lstm_cell, gru_cell = torch.nn.LSTMCell(4, 5), torch.nn.GRUCell(4, 5)
def params(m): return m.weight_ih_l0, m.weight_hh_l0, m.bias_ih_l0, m.bias_hh_l0
def cell(m): return m.weight_ih, m.weight_hh, m.bias_ih, m.bias_hh
calls = {
    "gru_sequence": lambda: kernels.gru_sequence(x, h, *params(gru))[0].sum().backward(),
    "elman_sequence": lambda: kernels.elman_sequence(x, h, *params(rnn))[0].sum().backward(),
    "LSTMStep": lambda: kernels.LSTMStep(*cell(lstm_cell))(x[0].detach(), (h, h)),
    "GRUStep": lambda: kernels.GRUStep(*cell(gru_cell))(x[0].detach(), h),
    "linear_scan": lambda: kernels.linear_scan(
        torch.rand(3, 2, 5, requires_grad=True), torch.randn(3, 2, 5), h).sum().backward(),
    "minimal_scan": lambda: kernels.minimal_scan(  # minGRU, minLSTM
        torch.randn(3, 2, 15, requires_grad=True), h, True).sum().backward(),
}
variants = {  # every option on: the kernels' every path
    "variant_lstm_sequence": rnnkit.LSTM(4, 5, proj_size=3, layer_norm=True, peephole=True,
                                         recurrent_dropout=0.2, zoneout=0.1, weight_drop=0.2),
    "variant_gru_sequence": rnnkit.GRU(4, 5, proj_size=3, layer_norm=True,
                                       recurrent_dropout=0.2, zoneout=0.1, weight_drop=0.2),
    "variant_elman_sequence": rnnkit.RNN(4, 5, proj_size=3, recurrent_dropout=0.2,
                                         zoneout=0.1, weight_drop=0.2),
}
for name, layer in variants.items():
    calls[name] = lambda layer=layer: kernels.variant_sequence(
        layer.cells[0], x, layer.cells[0].zero_state(2, x))[0].sum().backward()
from rnnkit.kernels import _step_partner  # the streaming steps' partner thread's loop
if _step_partner.SUPPORTED:  # (its time includes 5 ms measuring its clock)
    calls["step_partner"] = lambda: _step_partner.Partner().serving.wait()
for name, call in calls.items():
    start = time.perf_counter(); call(); print(name, time.perf_counter() - start)
"""


def compile_times() -> list[dict]:
    """First call of each kernel (float32, forward + backward) in a fresh process: with an
    empty Numba cache (compiling), then with the cache that run left on disk (loading); and
    the import of Numba that the first use of a kernel pays, in both."""
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache}
        runs = [
            subprocess.run(
                [sys.executable, "-c", _COMPILE_SCRIPT],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            for _ in range(2)
        ]
    cold, cached = ([line.split() for line in run.stdout.splitlines()] for run in runs)
    return [
        {
            "name": f"compile {name.replace('_', ' ')}",
            "shape": {},
            "kind": "compile",
            "mode": "first call",
            "ours_ms": float(cold_s) * 1e3,
            "reference": "the same first call with the kernel cached on disk",
            "reference_ms": float(cached_s) * 1e3,
            "ratio": None,
        }
        for (name, cold_s), (_, cached_s) in zip(cold, cached, strict=True)
    ]


# ---- report ------------------------------------------------------------------------------------


def format_row(record: dict) -> str:
    if record["kind"] == "compile":
        cold, cached = record["ours_ms"], record["reference_ms"]
        return f"{record['name']:<44} first call {cold:9.0f} ms   cached {cached:7.1f} ms"
    unit, scale = ("us/step", 1e3) if record["mode"] == "stream" else ("ms", 1.0)
    ours, reference, gflops = (
        record["ours_ms"] * scale,
        record["reference_ms"] * scale,
        record["ours_gflops"],
    )
    extra = ""
    if "in_place_us_per_step" in record:
        extra = f"  in place {record['in_place_us_per_step']:6.2f} us/step"
    if "layer_us_per_step" in record:
        extra += (
            f"  layer step() {record['layer_us_per_step']:6.2f} us/step"
            f" step_() {record['layer_in_place_us_per_step']:6.2f} us/step"
        )
    if "loop_ms" in record:
        loop_time = record["loop_ms"] * scale
        extra += f"  loop {loop_time:9.2f} {unit} ratio {record['loop_ratio']:5.2f}"
    return (
        f"{record['name']:<44} {record['route']:<9} ours {ours:9.2f} {unit}  "
        f"torch {reference:9.2f} {unit}  ratio {record['ratio']:5.2f}  "
        f"{gflops:6.1f} GFLOP/s ({gflops / record['peak_gflops']:4.0%} of matmul)" + extra
    )


def run_bench(
    cases: Sequence[Case] | None = None,
    repeats: int = 7,
    json_path: str | None = None,
    compile: bool = True,
    log: Callable[[str], None] = print,
    keep_memory: bool = True,
    threads: int = 1,
) -> list[dict]:
    """Run `cases` (default: `default_cases()`), print one line per case as it finishes, and
    write one JSON object per case (a JSON list) to `json_path` if given. Returns the records.
    `keep_memory`: call `keep_freed_memory()` first (a setting of the whole process, for both
    sides; it stays made after the run). `threads`: torch's threads during the run (above 1,
    wall-clock times)."""
    threads_before = torch.get_num_threads()
    torch.set_num_threads(1)
    kept = keep_memory and keep_freed_memory()
    try:
        peak = matmul_gflops()  # one thread's rate, whatever `threads`
        torch.set_num_threads(threads)
        malloc = "freed memory kept (keep_freed_memory)" if kept else "the C library's malloc"
        clock = "this thread's CPU time"
        if threads > 1:  # torch's idle OpenMP threads spin unless told not to
            clock = f"the wall clock, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}"
        log(
            f"torch {torch.__version__} on {threads} thread{'s' * (threads > 1)} "
            f"(torch.set_num_threads({threads})); medians of {repeats} alternating repeats of "
            f"{clock}; single-thread matmul {peak:.1f} GFLOP/s; {malloc}"
        )
        records = []
        for case in default_cases() if cases is None else cases:
            timer = measure_variant if case.kind in VARIANTS else measure
            result = timer(case, repeats, peak)
            records.append(result if threads == 1 else by_wall_clock(result, case))
            log(format_row(records[-1]))
        if compile:
            for record in compile_times():
                records.append(record)
                log(format_row(record))
    finally:
        torch.set_num_threads(threads_before)
    if json_path is not None:
        with open(json_path, "w") as file:
            json.dump(records, file, indent=1)
    return records


def cases_from_names(names: Sequence[str]) -> list[Case]:
    """Cases from "kind:mode:B:T:H_in:H" strings, for the command line."""
    cases = []
    for name in names:
        parts = name.split(":")
        kind, mode, sizes = parts[0], parts[1] if len(parts) > 1 else "", parts[2:]
        known = kind in GATES or kind in VARIANTS
        positive = len(sizes) == 4 and all(size.isdigit() and int(size) > 0 for size in sizes)
        if not known or mode not in MODES or not positive:
            kinds = [*GATES, *VARIANTS]
            expected = (
                f"kind:mode:B:T:H_in:H with kind in {kinds}, mode in {MODES} and B, T, H_in, H "
                "positive integers"
            )
            raise ValueError(f"a case is {expected}; got {name!r}")
        cases.append(Case(kind, mode, *map(int, sizes)))
    return cases
