"""rnnkit's time-loop kernels against torch.nn, as `rnnkit bench` runs them.

    python benchmarks/run.py                      # every default case, then compile times
    python benchmarks/run.py --quick              # about a minute
    python benchmarks/run.py --case gru:train:8:200:128:128 --json results.json
    python benchmarks/run.py --variants           # the variant layers only (also in the default)

Results and the command that produced them: benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse

from rnnkit.bench import cases_from_names, quick_cases, run_bench, variant_cases


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--json", help="write one JSON object per case (a JSON list) to this file")
    parser.add_argument(
        "--repeats", type=int, default=7, help="timed repeats per case; the median counts"
    )
    parser.add_argument("--quick", action="store_true", help="a small subset of the cases")
    parser.add_argument("--variants", action="store_true", help="the variant cases only")
    parser.add_argument(
        "--case", action="append", default=[], help="kind:mode:B:T:H_in:H, repeatable"
    )
    parser.add_argument(
        "--no-compile", action="store_true", help="skip the compile-time measurement"
    )
    parser.add_argument(
        "--system-malloc", action="store_true", help="leave malloc as it is (no keep_freed_memory)"
    )
    args = parser.parse_args()
    try:
        cases = cases_from_names(args.case) if args.case else quick_cases() if args.quick else None
    except ValueError as error:
        parser.error(str(error))
    cases = variant_cases() if args.variants else cases
    run_bench(
        cases,
        repeats=args.repeats,
        json_path=args.json,
        compile=not args.no_compile,
        keep_memory=not args.system_malloc,
    )


if __name__ == "__main__":
    main()
