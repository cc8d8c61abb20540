"""The `forecast` task: the seasonal-naive baseline and the error metrics by hand, reading and
preparing series, and end-to-end runs from the command line (train, reload, evaluate, forecast)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import rnnkit.tasks
from rnnkit import cli
from rnnkit.data import datasets
from rnnkit.models.forecaster import Forecaster
from rnnkit.tasks.forecast import (
    ForecastOptions,
    _decimals,
    _time_labels,
    calendar_names,
    errors,
    prepare,
    read_series,
    seasonal_naive,
)

torch.set_num_threads(1)

SMALL = ["--hidden-size", "16", "--epochs", "15", "--no-progress"]


def test_seasonal_naive_repeats_the_last_season():
    values = np.arange(20.0)[:, None]  # y_t = t
    # from t = 10 with season 3: the last season is rows 7, 8, 9, repeated
    expected = [7, 8, 9, 7, 8, 9, 7]
    assert seasonal_naive(values, 10, 7, 3)[:, 0].tolist() == expected


def test_seasonal_naive_is_exact_on_a_periodic_series():
    season = np.stack([10 + np.sin(2 * np.pi * np.arange(12) / 12), np.arange(12) ** 2], axis=1)
    values = np.tile(season, (10, 1))  # (120, 2), period 12 exactly
    forecast = seasonal_naive(values, 96, 24, 12)
    np.testing.assert_array_equal(forecast, values[96:120])
    assert errors(values[96:120], forecast) == {"mae": 0.0, "rmse": 0.0, "mape": 0.0}


def test_errors_by_hand():
    actual, forecast = np.array([100.0, 200.0]), np.array([110.0, 180.0])
    scores = errors(actual, forecast)
    assert scores["mae"] == pytest.approx(15.0)  # (10 + 20) / 2
    assert scores["rmse"] == pytest.approx(math.sqrt((100 + 400) / 2))
    assert scores["mape"] == pytest.approx(10.0)  # (10 % + 10 %) / 2


def test_calendar_features_follow_the_step_of_the_series():
    months = np.arange("2000-01", "2002-01", dtype="datetime64[M]").astype("datetime64[s]")
    days = np.arange("2000-01-01", "2000-03-01", dtype="datetime64[D]").astype("datetime64[s]")
    years = np.arange("1900", "1950", dtype="datetime64[Y]").astype("datetime64[s]")
    assert calendar_names(months, "auto") == ("month",)
    assert calendar_names(days, "auto") == ("day_of_week", "day_of_year")
    assert calendar_names(years, "auto") == ()
    assert calendar_names(months, "none") == ()
    assert calendar_names(months, "hour, month") == ("hour", "month")
    assert calendar_names(None, "month") == ()


def test_prepare_scales_with_training_rows_only_and_log():
    series = datasets.load("air_passengers")
    options = ForecastOptions(log_transform=True, scaler="minmax")
    p, scaler = prepare(series, options, None, extra_steps=5)
    train = np.log(series.values[:120])
    np.testing.assert_allclose(scaler.center, train.min(axis=0))
    assert p.scaled[:120].min() == 0.0 and p.scaled[:120].max() == pytest.approx(1.0)
    assert p.scaled[120:].max() > 1.0  # the test years lie above the training range
    assert p.covariates.shape == (144 + 5, 2)  # sin and cos of the month, 5 steps ahead too
    assert str(p.future_times[0]) == "1961-01-01T00:00:00"


def write_csv(path, rows: int = 96, with_nan: bool = False) -> None:
    """A monthly CSV with a date column, a seasonal 'sales' and a trending 'price'."""
    months = np.arange("2010-01", "2030-01", dtype="datetime64[M]")[:rows]
    t = np.arange(rows)
    sales = 100 + 20 * np.sin(2 * np.pi * t / 12) + t
    lines = ["date,price,sales"] + [
        f"{m},{50 + 0.5 * i:.2f},{s:.3f}"
        for i, (m, s) in enumerate(zip(months, sales, strict=True))
    ]
    if with_nan:
        lines[5] = f"{months[4]},51.0,"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_read_series_guesses_the_time_column_and_picks_columns(tmp_path):
    write_csv(tmp_path / "shop.csv")
    series = read_series(tmp_path / "shop.csv", ForecastOptions(columns=("sales",)))
    assert series.columns == ["sales"] and str(series.times[0]) == "2010-01-01T00:00:00"


# --- end to end from the command line ---------------------------------------------------------


def test_the_forecast_table_prints_times_at_their_step_and_one_number_format():
    """Yearly times as years (they printed as 2009-01), months as months; every number with
    the decimals that give the largest 4 significant digits (1.348e+04 beside 428.5 before)."""
    years = np.array(["2009-01-01", "2010-01-01"], dtype="datetime64[D]")
    months = np.array(["2009-01-01", "2009-02-01"], dtype="datetime64[D]")
    days = np.array(["2009-01-01", "2009-01-02T12:00"], dtype="datetime64[m]")
    assert _time_labels(years) == ["2009", "2010"]
    assert _time_labels(months) == ["2009-01", "2009-02"]
    assert _time_labels(days) == ["2009-01-01T00:00:00", "2009-01-02T12:00:00"]
    assert [_decimals(np.array(v)) for v in ([13480.3, 493.1], [428.55], [5.5], [0.0123])] == [
        0, 1, 3, 5,
    ]  # fmt: skip
    assert _decimals(np.array([0.0])) == 2


@pytest.fixture(scope="module")
def direct_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("forecast") / "run"
    args = ["train", "forecast", "--quantiles", "0.1", "0.5", "0.9", "--run-dir", str(run_dir)]
    assert cli.main([*args, *SMALL]) == 0
    return run_dir


@pytest.mark.slow
def test_direct_run_reloads_and_evaluates_to_the_same_metrics(direct_run):
    recorded = json.loads((direct_run / "metrics.json").read_text())["test"]
    run = rnnkit.tasks.load_run(direct_run)
    assert isinstance(rnnkit.tasks.load(direct_run), Forecaster)
    assert run.task.evaluate(run, None) == recorded  # exactly the same numbers
    assert recorded["naive_mape"] == pytest.approx(9.9875, abs=1e-4)  # 1960 against 1959
    assert 0.0 <= recorded["interval_coverage"] <= 1.0
    assert (direct_run / "scaler.json").is_file()
    assert (direct_run / "plots" / "loss.png").stat().st_size > 1000


@pytest.mark.slow
def test_forecast_prints_values_with_intervals_and_writes_the_plot(direct_run, capsys):
    plot = direct_run / "plots" / "forecast.png"
    plot.unlink()
    capsys.readouterr()
    assert cli.main(["forecast", str(direct_run), "--horizon", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["time", "passengers", "q0.1", "q0.5", "q0.9"]
    assert [line.split()[0] for line in lines[1:4]] == ["1961-01", "1961-02", "1961-03"]
    point, low, median, high = (float(v) for v in lines[1].split()[1:])
    assert point == median and 100 < point < 1000
    assert lines[4] == f"plot: {plot}" and plot.stat().st_size > 10_000


@pytest.mark.slow
def test_evaluating_on_a_series_unlike_the_training_one_is_a_one_line_error(
    direct_run, tmp_path, capsys
):
    """Other value columns, or a time step that gives other calendar features, would feed
    the model's inputs the wrong numbers: each is named (before, another column was evaluated
    silently, and another step failed on the inputs' widths)."""
    months = [f"{1950 + i // 12}-{i % 12 + 1:02d}" for i in range(144)]
    years = [str(1800 + i) for i in range(144)]
    for name, times, column, message in [
        ("sales.csv", months, "sales", "value columns ['sales'], but the run was trained on"),
        ("yearly.csv", years, "passengers", "calendar features [], but the run was trained"),
    ]:
        rows = [f"{t},{100 + i}" for i, t in enumerate(times)]
        (tmp_path / name).write_text("\n".join([f"time,{column}", *rows]) + "\n")
        capsys.readouterr()
        assert cli.main(["evaluate", str(direct_run), str(tmp_path / name)]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err


@pytest.mark.slow
def test_horizon_longer_than_a_direct_model_is_a_one_line_error(direct_run, capsys):
    capsys.readouterr()
    assert cli.main(["forecast", str(direct_run), "--horizon", "13"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rnnkit: error: horizon 13 is longer than the 12 steps")
    assert err.count("\n") == 1


@pytest.mark.slow
def test_autoregressive_run_on_a_csv_forecasts_any_horizon(tmp_path, capsys):
    data, run_dir = tmp_path / "shop.csv", tmp_path / "run"
    write_csv(data)
    args = ["train", "forecast", str(data), "--targets", "sales", "--mode", "autoregressive"]
    args += ["--horizon", "6", "--input-len", "12", "--run-dir", str(run_dir), "--season", "12"]
    assert cli.main([*args, *SMALL]) == 0
    recorded = json.loads((run_dir / "metrics.json").read_text())["test"]
    run = rnnkit.tasks.load_run(run_dir)
    assert run.model.config.target_columns == (1,) and run.model.config.num_values == 2
    assert run.task.evaluate(run, None) == recorded
    capsys.readouterr()
    assert cli.main(["forecast", str(run_dir), "--horizon", "20"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["time", "sales"] and len(lines) == 1 + 20 + 1
    assert lines[20].split()[0] == "2019-08"  # 96 months from 2010-01, then 20 more


@pytest.mark.slow
def test_data_errors_are_one_line(tmp_path, capsys):
    write_csv(tmp_path / "gaps.csv", with_nan=True)
    assert cli.main(["train", "forecast", str(tmp_path / "gaps.csv"), "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert "gaps.csv:6" in err and "interpolate" in err and err.count("\n") == 1
    assert cli.main(["train", "forecast", "--input-len", "200", "--epochs", "1"]) == 2
    assert "no training windows" in capsys.readouterr().err
    months = [f"{1950 + i // 12}-{i % 12 + 1:02d}" for i in range(60)]
    del months[30]  # 1952-07 missing: line 32 (after the header) goes from 1952-06 to 1952-08
    rows = [f"{month},{i}" for i, month in enumerate(months)]
    (tmp_path / "skips.csv").write_text("\n".join(["month,sales", *rows]) + "\n")
    assert cli.main(["train", "forecast", str(tmp_path / "skips.csv"), "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert (
        "skips.csv:32: the times step 1 month(s) at a time, but go from 1952-06 to 1952-08" in err
    )
    ends = [f"{1950 + i // 4}-{3 * (i % 4) + 3:02d}-{(31, 30, 30, 31)[i % 4]}" for i in range(40)]
    rows = [f"{end},{i}" for i, end in enumerate(ends)]
    (tmp_path / "quarters.csv").write_text("\n".join(["quarter,gdp", *rows]) + "\n")
    series = read_series(tmp_path / "quarters.csv", ForecastOptions())  # quarter ends: regular
    assert len(series.times) == 40
