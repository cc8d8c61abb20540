"""Air passengers, 1960: the rnnkit forecaster against seasonal-naive and the airline ARIMA.

    python benchmarks/forecast_air_passengers.py                     # 5 seeds, default model
    python benchmarks/forecast_air_passengers.py --log-transform --mode autoregressive --seeds 3

The split is the task's default: train 1949-1958 (120 months), validation 1959, test 1960. The
rnnkit model is `rnnkit train forecast` (12 months ahead, direct by default, the task's training
defaults: up to 200 epochs, early stopping after 20 without a better validation loss) trained
once per seed; its test metrics are those of the run's metrics.json. The baselines forecast the
same 12 test months from the end of 1959:

- seasonal-naive: 1960 = 1959, month by month;
- ARIMA: SARIMAX (1,1,1)(0,1,1,12) on log values, the "airline model" of Box & Jenkins, fitted by
  statsmodels on 1949-1959 (train and validation: all the history before the test year).

MAE, RMSE and MAPE (in %) are computed by the same function (`rnnkit.tasks.forecast.errors`).
statsmodels is a test extra (`pip install -e ".[test]"`). Results: docs/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from rnnkit.data import datasets
from rnnkit.tasks.forecast import TASK, ForecastOptions, errors, seasonal_naive

TEST_MONTHS = 12


def airline_arima(values: np.ndarray) -> np.ndarray:
    """SARIMAX (1,1,1)(0,1,1,12) on log(values[:-12]), forecast of the last 12, back in units."""
    from statsmodels.tsa.statespace.sarimax import SARIMAX

    history = np.log(values[:-TEST_MONTHS])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence chatter on a 132-point series
        fitted = SARIMAX(history, order=(1, 1, 1), seasonal_order=(0, 1, 1, 12)).fit(disp=False)
    return np.exp(fitted.forecast(TEST_MONTHS))


def train_rnnkit(args: argparse.Namespace, seed: int, root: Path) -> dict[str, float]:
    """Train `rnnkit train forecast` with this seed; its test metrics."""
    options = ForecastOptions(
        cell=args.cell,
        hidden_size=args.hidden_size,
        mode=args.mode,
        input_len=args.input_len,
        log_transform=args.log_transform,
        quantiles=tuple(args.quantiles),
    )
    changed = {"epochs": args.epochs} if args.epochs is not None else {}
    if args.patience is not None:  # 0: no early stopping
        changed["patience"] = args.patience or None
    config = TASK.train_config(
        seed=seed, run_dir=str(root / f"seed{seed}"), progress=False, **changed
    )
    return TASK.train(None, options, config)


def row(name: str, scores: dict[str, float], seconds: float) -> str:
    return (
        f"| {name} | {scores['mae']:.1f} | {scores['rmse']:.1f} | {scores['mape']:.2f} "
        f"| {seconds:.1f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=5, help="rnnkit runs, seeds 0..N-1")
    parser.add_argument("--epochs", type=int, default=None, help="(default: the task's)")
    parser.add_argument(
        "--patience", type=int, default=None, help="early stopping (default: the task's; 0: off)"
    )
    parser.add_argument("--cell", default="lstm")
    parser.add_argument("--hidden-size", type=int, default=64)
    parser.add_argument("--mode", default="direct", choices=("direct", "autoregressive"))
    parser.add_argument("--input-len", type=int, default=24)
    parser.add_argument("--log-transform", action="store_true")
    parser.add_argument("--quantiles", type=float, nargs="*", default=[])
    parser.add_argument("--runs", default=None, help="where the runs go (default: a temp dir)")
    parser.add_argument("--json", default=None, help="also write the results as JSON")
    args = parser.parse_args()
    torch.set_num_threads(1)
    values = datasets.load("air_passengers").values[:, 0]  # (144,)
    actual, t = values[-TEST_MONTHS:], len(values) - TEST_MONTHS

    start = time.perf_counter()
    arima = errors(actual, airline_arima(values))
    arima_seconds = time.perf_counter() - start
    naive = errors(actual, seasonal_naive(values[:, None], t, TEST_MONTHS, 12)[:, 0])

    root = Path(args.runs or tempfile.mkdtemp(prefix="air-passengers-"))
    runs, seconds = [], []
    for seed in range(args.seeds):
        start = time.perf_counter()
        runs.append(train_rnnkit(args, seed, root))
        seconds.append(time.perf_counter() - start)
    mean = {k: statistics.mean(r[k] for r in runs) for k in ("mae", "rmse", "mape")}

    print("| model | MAE | RMSE | MAPE % | seconds |")
    print("|---|---|---|---|---|")
    for seed, (scores, took) in enumerate(zip(runs, seconds, strict=True)):
        print(row(f"rnnkit {args.mode} {args.cell}, seed {seed}", scores, took))
    if len(runs) > 1:
        spread = statistics.stdev(r["mape"] for r in runs)
        print(row(f"rnnkit, mean of {len(runs)} seeds", mean, statistics.mean(seconds)))
        print(f"|  (MAPE standard deviation over seeds: {spread:.2f}) | | | | |")
    if args.quantiles:
        coverage = statistics.mean(r["interval_coverage"] for r in runs)
        print(f"|  (interval coverage, mean over seeds: {coverage:.2f}) | | | | |")
    print(row("seasonal naive (1960 = 1959)", naive, 0.0))
    print(row("ARIMA (1,1,1)(0,1,1,12) on log", arima, arima_seconds))
    print(f"runs: {root}")
    if args.json:
        results = {"args": vars(args), "rnnkit": runs, "naive": naive, "arima": arima}
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
