"""Per-step latency of a streaming LSTM step, alone (one thread) and with its partner thread
(two), returning a new state (`step(x, state)`) and writing it in place (`step.update_`), in
the same process: median, 99th and 99.9th percentile and maximum of the wall-clock time of
each step over a stream, in alternating rounds. `--busy` runs a busy loop in another process
meanwhile, as another job holding a core of a shared machine.

python benchmarks/stream_tail.py [--input-size 256] [--hidden 256] [--steps 20000] [--busy]
"""

from __future__ import annotations

import argparse
import multiprocessing
import time

import numpy as np
import torch

from rnnkit.kernels import LSTMStep
from rnnkit.kernels._step_partner import partner_control, wait_until_serving


def busy_loop(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def stream(advance, x: torch.Tensor, state, steps: int) -> tuple[np.ndarray, tuple]:
    """Per-step microseconds of `state = advance(x, state)` over `steps` steps."""
    times = np.empty(steps)
    for i in range(steps):
        start = time.perf_counter()
        state = advance(x, state)
        times[i] = time.perf_counter() - start
    return times * 1e6, state


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input-size", type=int, default=256)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--steps", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--busy", action="store_true", help="a busy loop in another process")
    args = parser.parse_args()
    cell = torch.nn.LSTMCell(args.input_size, args.hidden)
    step = LSTMStep(cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh)
    x = torch.randn(1, args.input_size)
    state = (torch.zeros(1, args.hidden), torch.zeros(1, args.hidden))
    forms = {"new state": step, "in place": step.update_}  # update_ returns the state it wrote
    torch.set_num_threads(2)
    partner_control(10**9)  # the partner started and loaded before any timing
    wait_until_serving()
    busy = None
    if args.busy:
        busy = multiprocessing.Process(target=busy_loop, args=(3600.0,), daemon=True)
        busy.start()
        time.sleep(0.5)
    try:
        with torch.no_grad():
            for _ in range(args.rounds):
                for threads in (1, 2):
                    torch.set_num_threads(threads)
                    for form, advance in forms.items():
                        _, state = stream(advance, x, state, 2000)  # warm-up
                        times, state = stream(advance, x, state, args.steps)
                        p50, p99, p999 = np.percentile(times, [50, 99, 99.9])
                        print(
                            f"{threads} thread{'s' * (threads > 1)}{' busy' * args.busy}, "
                            f"{form}: median {p50:.1f} us, p99 {p99:.1f}, p99.9 {p999:.1f}, "
                            f"max {times.max():.0f}, total {times.sum() / 1e3:.0f} ms"
                        )
    finally:
        if busy is not None:
            busy.terminate()


if __name__ == "__main__":
    main()
