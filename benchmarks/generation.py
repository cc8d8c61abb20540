"""Streaming generation: the time per token stays flat as the text grows.

    python benchmarks/generation.py                   # a character LSTM of 256 units
    python benchmarks/generation.py --run runs/lm-... # a trained `rnnkit train lm` run
    python benchmarks/generation.py --cell gru --hidden-size 512 --json generation.json

`rnnkit generate` samples each token through the recurrent layers' `step()`, carrying the state,
so token n costs one step whatever n is. The benchmark times `rnnkit.tasks.lm.sample_text`
(prompt, sampling, incremental decoding and writing, to a buffer) for 100, 1,000 and 5,000
tokens and reports the median time per token over the repeats, on one thread: processor time
of this process (robust on a shared machine, where other processes stretch the wall-clock time)
and wall-clock time. For contrast it times the naive loop that runs the whole sequence again for
every new token (cost ~ n), at the shorter lengths. Results and the command that produced them:
benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import statistics
import time

import torch

from rnnkit.data import CharTokenizer, datasets
from rnnkit.models.language_model import LanguageModel, LanguageModelConfig
from rnnkit.models.sampling import SamplingConfig, sample_token
from rnnkit.tasks import load_run
from rnnkit.tasks.lm import GenerateOptions, sample_text

LENGTHS = (100, 1_000, 5_000)  # tokens generated
NAIVE_LENGTHS = (100, 1_000)  # the naive loop is quadratic: shorter lengths only


def build(args: argparse.Namespace) -> tuple[LanguageModel, CharTokenizer]:
    """The model and tokenizer to time: a trained run, or a fresh character model."""
    if args.run:
        run = load_run(args.run)
        return run.model, run.extras["tokenizer"]
    torch.manual_seed(0)
    tokenizer = CharTokenizer.fit([datasets.load("shakespeare")["train"]])
    config = LanguageModelConfig(
        vocab_size=tokenizer.vocab_size,
        embedding_dim=args.hidden_size,
        hidden_size=args.hidden_size,
        num_layers=args.num_layers,
        cell=args.cell,
    )
    return LanguageModel(config).eval(), tokenizer


def clock() -> tuple[float, float]:
    """(processor seconds of this process, wall-clock seconds)."""
    return time.process_time(), time.perf_counter()


def since(start: tuple[float, float]) -> tuple[float, float]:
    now = clock()
    return now[0] - start[0], now[1] - start[1]


def time_streaming(model: LanguageModel, tokenizer: CharTokenizer, length: int):
    """(processor, wall) seconds to sample `length` tokens after a prompt, as `generate` does."""
    options = GenerateOptions(prompt="ROMEO.\n", length=length, temperature=1.0, seed=0)
    start = clock()
    sample_text(model, tokenizer, options, out=io.StringIO())
    return since(start)


@torch.no_grad()
def time_naive(model: LanguageModel, length: int):
    """(processor, wall) seconds to sample `length` tokens, rerunning the whole sequence."""
    generator = torch.Generator().manual_seed(0)
    sequence = [5]
    start = clock()
    for _ in range(length):
        logits, _ = model(torch.tensor([sequence]))  # (1, n, V): all n steps again
        sequence.append(int(sample_token(logits[:, -1], SamplingConfig(), generator)))
    return since(start)


def per_token(measure, lengths: tuple[int, ...], repeats: int) -> dict[int, tuple[float, float]]:
    """Median (processor, wall) ms per token for each length, after a warm-up. The repeats go
    round the lengths in turn, so a change in the machine's load touches every length alike."""
    measure(50)
    timings: dict[int, list[tuple[float, float]]] = {n: [] for n in lengths}
    for _ in range(repeats):
        for n in lengths:
            timings[n].append(measure(n))
    return {
        n: (
            1000 * statistics.median(t[0] for t in ts) / n,
            1000 * statistics.median(t[1] for t in ts) / n,
        )
        for n, ts in timings.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--run", help="time this run's model (default: a fresh char LSTM)")
    parser.add_argument("--cell", default="lstm", choices=("lstm", "gru", "rnn"))
    parser.add_argument("--hidden-size", type=int, default=256)
    parser.add_argument("--num-layers", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5, help="timings per length (median)")
    parser.add_argument("--no-naive", action="store_true", help="skip the naive baseline")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args()
    torch.set_num_threads(1)
    model, tokenizer = build(args)
    streaming = per_token(lambda n: time_streaming(model, tokenizer, n), LENGTHS, args.repeats)
    naive = {}
    if not args.no_naive:
        naive = per_token(lambda n: time_naive(model, n), NAIVE_LENGTHS, max(1, args.repeats // 2))
    rows = []
    for length in LENGTHS:
        row = {"tokens": length}
        cpu, wall = streaming[length]
        row.update(streaming_cpu_ms_per_token=cpu, streaming_wall_ms_per_token=wall)
        if length in naive:
            cpu, wall = naive[length]
            row.update(naive_cpu_ms_per_token=cpu, naive_wall_ms_per_token=wall)
        rows.append(row)
    report(rows, model, args)


def report(rows: list[dict], model: LanguageModel, args: argparse.Namespace) -> None:
    c = model.config
    print(
        f"{c.cell} {c.num_layers}x{c.hidden_size}, vocabulary {c.vocab_size}, 1 thread, "
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}; "
        f"median of {args.repeats}"
    )
    print("ms per token: processor time (wall-clock time)")
    print("| tokens | streaming, step() | rerun the whole sequence per token |")
    print("|---:|---:|---:|")
    for row in rows:
        streaming = _cell(row, "streaming")
        print(f"| {row['tokens']:,} | {streaming} | {_cell(row, 'naive')} |")
    first, last = (row["streaming_cpu_ms_per_token"] for row in (rows[0], rows[-1]))
    print(f"streaming: a token of {LENGTHS[-1]:,} costs {last / first:.2f}x one of {LENGTHS[0]}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as file:
            json.dump({"model": c.__dict__, "rows": rows}, file, indent=2)


def _cell(row: dict, kind: str) -> str:
    if f"{kind}_cpu_ms_per_token" not in row:
        return "-"
    return f"{row[f'{kind}_cpu_ms_per_token']:.3f} ({row[f'{kind}_wall_ms_per_token']:.3f})"


if __name__ == "__main__":
    main()
