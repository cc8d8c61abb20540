"""The Markdown tables of benchmarks/RESULTS.md from a `--json` file of `benchmarks/run.py`.

python benchmarks/table.py results.json
"""

from __future__ import annotations

import json
import sys


def in_place_note(record: dict) -> str:
    """A streaming step's time with its state written in place (`update_`, `step_`), and the
    drop-in layer's `step()` and `step_()` where they were timed."""
    if "in_place_us_per_step" not in record:
        return ""
    layer = ""
    if "layer_us_per_step" in record:
        layer = (
            f"; layer step() {record['layer_us_per_step']:.2f}, "
            f"step_() {record['layer_in_place_us_per_step']:.2f}"
        )
    return f" (in place {record['in_place_us_per_step']:.2f}{layer})"


def speed_row(record: dict) -> str:
    shape = record["shape"]
    stream = record["mode"] == "stream"
    unit, scale = ("us/step", 1e3) if stream else ("ms", 1.0)
    reference = record["reference"].removeprefix("torch.nn.")
    in_place = in_place_note(record)
    return (
        f"| {record['kind']} {record['mode']} | {shape['batch']} | {shape['seq_len']} "
        f"| {shape['input_size']} | {shape['hidden']} | {record['route']} "
        f"| {record['ours_ms'] * scale:.2f} {unit}{in_place} "
        f"| {record['reference_ms'] * scale:.2f} {unit} ({reference}) | **{record['ratio']:.2f}** "
        f"| {record['ours_gflops']:.1f} ({record['ours_gflops'] / record['peak_gflops']:.0%}) |"
    )


def variant_row(record: dict) -> str:
    shape = record["shape"]
    unit, scale = ("us/step", 1e3) if record["mode"] == "stream" else ("ms", 1.0)
    return (
        f"| {record['kind']} {record['mode']} | {shape['batch']} | {shape['seq_len']} "
        f"| {shape['input_size']} | {shape['hidden']} | {record['route']} "
        f"| {record['ours_ms'] * scale:.2f} {unit}{in_place_note(record)} "
        f"| {record['reference_ms'] * scale:.2f} {unit} | **{record['ratio']:.2f}** "
        f"| {record['loop_ms'] * scale:.2f} {unit} | {record['loop_ratio']:.2f} |"
    )


def main(path: str) -> None:
    with open(path) as file:
        records = json.load(file)
    plain = [r for r in records if r["kind"] != "compile" and "loop_ms" not in r]
    variants = [r for r in records if "loop_ms" in r]
    if plain:
        print(
            "| case | B | T | H_in | H | route | ours | torch.nn | ratio "
            "| ours GFLOP/s (of matmul) |"
        )
        print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for record in plain:
            print(speed_row(record))
    if variants:
        print(
            "\n| variant | B | T | H_in | H | route | ours | torch.nn.LSTM | ratio "
            "| reference loop | ours / loop |"
        )
        print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for record in variants:
            print(variant_row(record))
    compiles = [r for r in records if r["kind"] == "compile"]
    if compiles:
        print("\n| first call of | empty Numba cache | cached on disk |")
        print("| --- | --- | --- |")
    for record in compiles:
        name = record["name"].removeprefix("compile ")
        print(f"| {name} | {record['ours_ms'] / 1e3:.1f} s | {record['reference_ms']:.0f} ms |")


if __name__ == "__main__":
    main(sys.argv[1])
