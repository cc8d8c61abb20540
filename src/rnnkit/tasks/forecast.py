"""The `forecast` task: multi-step forecasts of a time series with `rnnkit.models.Forecaster`.

    rnnkit train forecast                               # air passengers, 12 months ahead
    rnnkit train forecast sales.csv --time-column date --quantiles 0.1 0.5 0.9
    rnnkit forecast RUN --horizon 6                     # print the next 6 steps, plot them

DATA is a built-in forecasting dataset or a CSV/TSV file with ISO 8601 times in one column
(`--time-column`; found by itself when the first column is named like a time or holds dates).
The series is cut in time order into train | valid | test (the last `test_size` rows are the
test period), optionally log-transformed, and scaled by a scaler fitted on the training rows
only; calendar features of the times (sine and cosine of the month, ...) are the covariates,
known for the future steps too. Test metrics (MAE, RMSE, MAPE in %, on the original scale, over
every window whose targets lie in the test period) are reported beside the seasonal-naive
forecast, which repeats the last observed season. The run keeps `scaler.json`.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from rnnkit.data import (
    Batch,
    Series,
    SlidingWindows,
    TimeSplit,
    calendar_features,
    collate_windows,
    datasets,
    extend_times,
    latest_window,
    load_scaler,
    read_series_csv,
    split_by_time,
    split_windows,
)
from rnnkit.data.files import read_text_file
from rnnkit.data.scalers import Scaler
from rnnkit.data.series import check_calendar_steps
from rnnkit.models.forecaster import Forecaster, ForecasterConfig, point_index
from rnnkit.tasks.base import (
    Run,
    Task,
    TaskError,
    is_main_process,
    record_metrics,
    resolve_data,
    run_info,
)
from rnnkit.train import TrainConfig, fit, seed_everything
from rnnkit.train.checkpoint import atomic_write

SCALERS = ("standard", "minmax", "robust")
if TYPE_CHECKING:
    from matplotlib.figure import Figure

TIME_NAMES = ("date", "time", "datetime", "timestamp", "ds", "year", "quarter", "month", "week")


@dataclass(frozen=True)
class ForecastOptions:
    """Model and data options of `rnnkit train forecast`."""

    cell: str = field(
        default="lstm", metadata={"help": "recurrent cell", "choices": ("lstm", "gru", "rnn")}
    )
    hidden_size: int = field(default=64, metadata={"help": "RNN units"})
    num_layers: int = field(default=1, metadata={"help": "stacked RNN layers"})
    dropout: float = field(default=0.0, metadata={"help": "dropout between stacked layers"})
    mode: str = field(
        default="direct",
        metadata={
            "help": "direct (a head emits all steps) or autoregressive (fed its own forecasts)",
            "choices": ("direct", "autoregressive"),
        },
    )
    input_len: int = field(default=24, metadata={"help": "past steps the model reads"})
    horizon: int = field(default=12, metadata={"help": "steps forecast"})
    quantiles: tuple[float, ...] = field(
        default=(), metadata={"help": "forecast these quantiles, e.g. 0.1 0.5 0.9 (pinball loss)"}
    )
    residual: bool = field(
        default=True, metadata={"help": "forecast the change from the last known value"}
    )
    scaler: str = field(
        default="standard",
        metadata={"help": "scaling fitted on the training rows", "choices": SCALERS},
    )
    log_transform: bool = field(
        default=False, metadata={"help": "model log(values) (values must be > 0)"}
    )
    calendar: str = field(
        default="auto",
        metadata={"help": "calendar covariates: auto, none or names (month,day_of_week,...)"},
    )
    season: int = field(default=12, metadata={"help": "season length of the seasonal-naive"})
    valid_size: int = field(default=12, metadata={"help": "rows of the validation period"})
    test_size: int = field(default=12, metadata={"help": "rows of the test period (the last)"})
    time_column: str = field(default="", metadata={"help": "CSV column of times ('': guess)"})
    columns: tuple[str, ...] = field(
        default=(), metadata={"help": "value columns to read (none given: all but the time)"}
    )
    targets: tuple[str, ...] = field(
        default=(), metadata={"help": "columns to forecast (none given: every value column)"}
    )
    nan: str = field(
        default="reject",
        metadata={"help": "missing values in a CSV", "choices": ("reject", "interpolate")},
    )


@dataclass
class Prepared:
    """A series made ready for the model: split, transformed, scaled, with covariates."""

    series: Series  # the values as read, (T, D)
    split: TimeSplit  # train | valid | test rows
    scaled: np.ndarray  # (T, D) log-transformed if asked, then scaled
    covariates: np.ndarray | None  # (T + extra steps, C) calendar features, None when C = 0
    targets: list[int]  # the forecast columns (indices into the D values)
    future_times: np.ndarray | None  # times of the extra steps after the end


# --- reading and preparing the series ---------------------------------------------------------


def _guess_time_column(path: Path) -> str | None:
    """The first column when it is named like a time or its first value is a date."""
    dialect = "excel-tab" if path.suffix in (".tsv", ".tab") else "excel"
    rows = list(csv.reader(io.StringIO(read_text_file(path)), dialect))
    if len(rows) < 2 or not rows[0] or not rows[1]:
        return None
    name, value = rows[0][0].strip(), rows[1][0].strip()
    if name.lower() in TIME_NAMES:
        return name
    try:
        np.datetime64(value, "s")
    except ValueError:
        return None
    return name if any(mark in value for mark in "-:T") else None


def read_series(source: str | Path, options: ForecastOptions) -> Series:
    """The series of a built-in dataset name or a CSV/TSV path, with the chosen columns."""
    if isinstance(source, str):
        series = datasets.load(source)
        return series.select(list(options.columns)) if options.columns else series
    time_column = options.time_column or _guess_time_column(source)
    columns = list(options.columns) or None
    series = read_series_csv(
        source, time_column=time_column, value_columns=columns, nan=options.nan
    )
    return check_calendar_steps(series)  # a missing month: rows that are not equal steps


def calendar_names(times: np.ndarray | None, option: str) -> tuple[str, ...]:
    """The calendar features to use: by name, none, or "auto" from the series' step."""
    if times is None or option == "none":
        return ()
    if option != "auto":
        return tuple(name.strip() for name in option.split(",") if name.strip())
    days = float(np.median(np.diff(times.astype("datetime64[s]").astype(np.int64)))) / 86400
    if days < 1:
        return ("hour", "day_of_week")
    if days < 7:
        return ("day_of_week", "day_of_year")
    if days < 28:
        return ("day_of_year",)
    return ("month",) if days <= 92 else ()


def prepare(
    series: Series, options: ForecastOptions, scaler: Scaler | None, extra_steps: int = 0
) -> tuple[Prepared, Scaler]:
    """Split, transform and scale `series` (fitting a scaler on the training rows when None is
    given), with calendar covariates for its times and `extra_steps` more."""
    values = series.values
    if options.log_transform:
        if (values <= 0).any():
            raise TaskError("log_transform needs values > 0; the series has values <= 0")
        values = np.log(values)
    try:
        split = split_by_time(len(series), valid=options.valid_size, test=options.test_size)
        scaler = scaler if scaler is not None else split.fit_scaler(values, options.scaler)
    except ValueError as error:
        raise TaskError(f"{len(series)} rows: {error}") from None
    missing = [name for name in options.targets if name not in series.columns]
    if missing:
        raise TaskError(f"no target columns {missing}; the series has {series.columns}")
    targets = [series.columns.index(name) for name in options.targets] or list(
        range(len(series.columns))
    )
    names = calendar_names(series.times, options.calendar)
    covariates, future_times = None, None
    if series.times is not None and extra_steps:
        future_times = extend_times(series.times, extra_steps)
    if names:
        times = (
            series.times if future_times is None else np.concatenate([series.times, future_times])
        )
        covariates = calendar_features(times, names)
    prepared = Prepared(series, split, scaler.transform(values), covariates, targets, future_times)
    return prepared, scaler


def unscale(
    scaled: np.ndarray, p: Prepared, scaler: Scaler, options: ForecastOptions
) -> np.ndarray:
    """Forecasts (..., D_out, Q) in scaled units -> the series' own units."""
    center = scaler.center[p.targets][:, None]  # (D_out, 1)
    scale = scaler.scale[p.targets][:, None]
    values = np.asarray(scaled, dtype=np.float64) * scale + center
    return np.exp(values) if options.log_transform else values


def _windows(p: Prepared, options: ForecastOptions) -> dict[str, SlidingWindows]:
    """Train, valid and test windows; none of them empty, except valid when valid_size is 0."""
    windows = split_windows(
        p.scaled, p.split, options.input_len, options.horizon, 1, p.covariates, p.targets
    )
    L, H = options.input_len, options.horizon
    if len(windows["train"]) == 0:
        raise TaskError(
            f"no training windows: each needs input_len + horizon = {L + H} rows, and the "
            f"training period has {p.split.valid_start}; shorten --input-len or --horizon"
        )
    for name, size in (("valid", options.valid_size), ("test", options.test_size)):
        if len(windows[name]) == 0 and (size > 0 or name == "test"):
            raise TaskError(
                f"the {name} period ({size} rows) is shorter than the horizon ({H}); "
                f"set --{name}-size to at least {H}"
            )
    return windows


# --- metrics ----------------------------------------------------------------------------------


def seasonal_naive(values: np.ndarray, t: int, horizon: int, season: int) -> np.ndarray:
    """The seasonal-naive forecast from time t: y[t + h] = y[t - season + h % season].

    values (T, D) -> (horizon, D): the last observed season, repeated.
    """
    if not 1 <= season <= t:
        raise TaskError(f"season {season} must be >= 1 and at most the {t} rows before the test")
    return values[t - season + np.arange(horizon) % season]


def errors(actual: np.ndarray, forecast: np.ndarray) -> dict[str, float]:
    """MAE, RMSE and MAPE (in %, |error| / max(|actual|, 1e-8)) over all the values."""
    error = forecast - actual
    return {
        "mae": float(np.mean(np.abs(error))),
        "rmse": float(np.sqrt(np.mean(error**2))),
        "mape": float(100 * np.mean(np.abs(error) / np.maximum(np.abs(actual), 1e-8))),
    }


@torch.no_grad()
def run_model(model: Forecaster, batch: Batch) -> np.ndarray:
    """The model's forecasts (N, H, D_out, Q) for a Batch of windows, on CPU in eval mode."""
    model.cpu().eval()
    return model(batch.inputs["past"], batch.inputs["future"]).double().numpy()


def score(
    model: Forecaster, p: Prepared, scaler: Scaler, options: ForecastOptions
) -> dict[str, float]:
    """Test metrics on the original scale over every test window, and the seasonal-naive's."""
    windows = _windows(p, options)["test"]
    times = [windows.forecast_time(i) for i in range(len(windows))]
    batch = collate_windows([windows[i] for i in range(len(windows))])
    forecasts = unscale(run_model(model, batch), p, scaler, options)  # (N, H, D_out, Q)
    raw = p.series.values[:, p.targets]  # (T, D_out)
    actual = np.stack([raw[t : t + options.horizon] for t in times])  # (N, H, D_out)
    naive = np.stack([seasonal_naive(raw, t, options.horizon, options.season) for t in times])
    scores = errors(actual, forecasts[..., model.config.point_index])
    scores.update({f"naive_{name}": value for name, value in errors(actual, naive).items()})
    if options.quantiles:
        inside = (forecasts[..., 0] <= actual) & (actual <= forecasts[..., -1])
        scores["interval_coverage"] = float(inside.mean())
    return scores


# --- forecasting beyond the end, and its plot -------------------------------------------------


def forecast_ahead(
    model: Forecaster, p: Prepared, scaler: Scaler, options: ForecastOptions, steps: int
) -> np.ndarray:
    """The `steps` values after the end of the series, (steps, D_out, Q)."""
    model_steps = options.horizon if options.mode == "direct" else steps
    batch = latest_window(p.scaled, options.input_len, model_steps, p.covariates)
    return unscale(run_model(model, batch)[0, :steps], p, scaler, options)


def _backtest(
    model: Forecaster, p: Prepared, scaler: Scaler, options: ForecastOptions
) -> tuple[int, np.ndarray]:
    """(t, forecast (H, D_out, Q)) of the first test window."""
    windows = _windows(p, options)["test"]
    forecast = run_model(model, collate_windows([windows[0]]))[0]
    return windows.forecast_time(0), unscale(forecast, p, scaler, options)


def _time_labels(times: np.ndarray) -> list[str]:
    """Times as text at the coarsest unit that loses nothing (year, month, day or second)."""
    times = times.astype("datetime64[s]")
    for unit in ("Y", "M", "D"):
        if (times.astype(f"datetime64[{unit}]").astype("datetime64[s]") == times).all():
            return [str(t) for t in times.astype(f"datetime64[{unit}]")]
    return [str(t) for t in times]


def forecast_figure(
    p: Prepared, backtest: tuple[int, np.ndarray], future: np.ndarray, options: ForecastOptions
) -> Figure:
    """The series, its test period shaded, the forecast after the end and the model's forecast
    of the test period (values (steps, D_out, Q)), one panel per forecast column; the outer
    quantiles as a band when there are quantiles (`rnnkit.plots.plot_forecast`)."""
    from rnnkit import plots  # imports matplotlib: only to plot

    series, T = p.series, len(p.series)
    x = series.times if series.times is not None else np.arange(T)
    x_future = p.future_times if p.future_times is not None else T + np.arange(len(future))
    t, tested = backtest
    q = options.quantiles
    return plots.plot_forecast(
        x,
        series.values[:, list(p.targets)],
        [series.columns[c] for c in p.targets],
        p.split.test_start,
        [
            ("forecast", x_future[: len(future)], future),
            ("forecast of the test period", x[t : t + len(tested)], tested),
        ],
        point=point_index(q),
        band=f"{q[0]:g}-{q[-1]:g} quantiles" if len(q) > 1 else None,
    )


def table(p: Prepared, future: np.ndarray, options: ForecastOptions) -> list[str]:
    """Lines of the forecast (steps, D_out, Q): a time, then each column's point forecast and,
    with quantiles, every quantile."""
    steps = len(future)
    if p.future_times is not None:
        labels = _time_labels(p.future_times[:steps])
    else:
        labels = [str(t) for t in range(len(p.series), len(p.series) + steps)]
    point = point_index(options.quantiles)
    quantiles = options.quantiles if len(options.quantiles) > 1 else ()
    header = ["time"]
    for c in p.targets:
        header += [p.series.columns[c], *(f"q{q:g}" for q in quantiles)]
    lines = ["  ".join(f"{h:>10}" for h in header)]
    decimals = _decimals(future)
    for label, values in zip(labels, future, strict=True):  # values (D_out, Q)
        cells = [label]
        for column in values:
            shown = [column[point], *column[: len(quantiles)]]
            cells += [f"{v:.{decimals}f}" for v in shown]
        lines.append("  ".join(f"{c:>10}" for c in cells))
    return lines


def _decimals(values: np.ndarray) -> int:
    """Decimals that give the largest value of the table 4 significant digits (at least 0, at
    most 6): one fixed-point format for every number, 13480 and 493.0 alike."""
    largest = float(np.max(np.abs(values))) if np.size(values) else 0.0
    if not np.isfinite(largest) or largest == 0:
        return 2
    return int(min(6, max(0, 3 - np.floor(np.log10(largest)))))


def report(
    model: Forecaster,
    p: Prepared,
    scaler: Scaler,
    options: ForecastOptions,
    steps: int,
    run_dir: Path,
) -> list[str]:
    """Forecast `steps` after the end, write plots/forecast.png; the lines to print."""
    future = forecast_ahead(model, p, scaler, options, steps)  # (steps, D_out, Q)
    fig = forecast_figure(p, _backtest(model, p, scaler, options), future, options)
    path = Path(run_dir) / "plots" / "forecast.png"
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    return [*table(p, future, options), f"plot: {path}"]


# --- the task ---------------------------------------------------------------------------------


def _source(data: str | None) -> str | Path:
    return resolve_data(data, TASK.default_data, ("forecast",))


def build_model(p: Prepared, options: ForecastOptions) -> Forecaster:
    """A fresh Forecaster for the prepared series and the options."""
    config = ForecasterConfig(
        num_values=p.scaled.shape[1],
        horizon=options.horizon,
        num_covariates=0 if p.covariates is None else p.covariates.shape[1],
        target_columns=tuple(p.targets),
        mode=options.mode,
        cell=options.cell,
        hidden_size=options.hidden_size,
        num_layers=options.num_layers,
        dropout=options.dropout,
        quantiles=options.quantiles,
        residual=options.residual,
    )
    return Forecaster(config)


def train(data: str | None, options: ForecastOptions, config: TrainConfig) -> dict[str, float]:
    """Read and scale the series, fit a Forecaster, score the test period, plot a forecast."""
    seed_everything(config.seed)  # the model's initial weights depend on the seed too
    source = _source(data)
    p, scaler = prepare(read_series(source, options), options, None, options.horizon)
    windows = _windows(p, options)
    valid = windows["valid"] if len(windows["valid"]) else None
    if valid is None and (config.patience is not None or config.schedule == "plateau"):
        raise TaskError(
            "--valid-size 0 leaves no validation data to watch; add --patience none "
            "(and no --schedule plateau)"
        )
    model = build_model(p, options)
    if config.run_dir is not None and is_main_process():
        scaler.save(Path(config.run_dir) / "scaler.json")
    data_id = str(source.resolve()) if isinstance(source, Path) else source
    calendar = list(calendar_names(p.series.times, options.calendar))
    info = run_info(TASK, options, model, data=data_id, columns=p.series.columns, calendar=calendar)
    fit(model, windows["train"], valid, config, collate=collate_windows, run_info=info)
    scores = score(model, p, scaler, options)
    record_metrics(config.run_dir, "test", scores)
    if config.run_dir is not None and is_main_process():
        report(model, p, scaler, options, options.horizon, Path(config.run_dir))
    return scores


def load_extras(run_dir: Path) -> dict[str, Any]:
    """The scaler that `train` fitted on the training rows."""
    return {"scaler": load_scaler(Path(run_dir) / "scaler.json")}


def evaluate(run: Run, data: str | None) -> dict[str, float]:
    """Test-period metrics on DATA (default: the series the run was trained on), with the
    run's scaler (never refitted)."""
    source = _source(data if data is not None else run.info["data"])
    series = read_series(source, run.options)
    _check_like_training(series, run, source)
    p, scaler = prepare(series, run.options, run.extras["scaler"])
    return score(run.model, p, scaler, run.options)


def _check_like_training(series: Series, run: Run, source: str | Path) -> None:
    """The value columns and calendar features of `series` must be those the run was trained
    on (as its config.json records them), or its numbers would go to the wrong inputs."""
    columns, calendar = run.info.get("columns"), run.info.get("calendar")
    if columns is not None and list(series.columns) != list(columns):
        raise TaskError(
            f"{source}: value columns {list(series.columns)}, but the run was trained on "
            f"{list(columns)}; give a series with those columns (a CSV's header names them)"
        )
    names = list(calendar_names(series.times, run.options.calendar))
    if calendar is not None and names != list(calendar):
        raise TaskError(
            f"{source}: its time step gives the calendar features {names}, but the run was "
            f"trained with {list(calendar)}; give a series with the run's time step"
        )


def forecast(run: Run, horizon: int | None) -> list[str]:
    """The next `horizon` values after the end of the training series, and a plot."""
    options: ForecastOptions = run.options
    steps = options.horizon if horizon is None else horizon
    if steps < 1:
        raise TaskError(f"horizon must be >= 1, got {steps}")
    if options.mode == "direct" and steps > options.horizon:
        raise TaskError(
            f"horizon {steps} is longer than the {options.horizon} steps this direct model "
            f"forecasts; ask for at most {options.horizon}, or train with --horizon {steps} "
            "or --mode autoregressive"
        )
    series = read_series(_source(run.info["data"]), options)
    p, scaler = prepare(series, options, run.extras["scaler"], max(steps, options.horizon))
    return report(run.model, p, scaler, options, steps, run.run_dir)


TASK = Task(
    name="forecast",
    summary="forecast a time series H steps ahead: RNN encoder, direct or autoregressive",
    options=ForecastOptions,
    default_data="air_passengers",
    train=train,
    load_extras=load_extras,
    evaluate=evaluate,
    forecast=forecast,
    train_defaults={"epochs": 200, "batch_size": 16, "lr": 3e-3, "patience": 20},
)
