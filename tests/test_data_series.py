"""Scalers (exact round trips, train-only fitting), windows (no future in the inputs), splits by
time, NaN handling and calendar features."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from rnnkit.data import (
    DataError,
    MinMaxScaler,
    RobustScaler,
    Series,
    SlidingWindows,
    StandardScaler,
    calendar_features,
    collate_windows,
    extend_times,
    handle_nan,
    latest_window,
    load_scaler,
    split_by_time,
    split_windows,
)

torch.set_num_threads(1)
SCALERS = [StandardScaler, MinMaxScaler, RobustScaler]
finite = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)
series_values = hnp.arrays(
    np.float64, hnp.array_shapes(min_dims=2, max_dims=2, min_side=1), elements=finite
)


@pytest.mark.parametrize("scaler_class", SCALERS)
@settings(max_examples=100, deadline=None)
@given(train=series_values)
def test_scaler_round_trip_is_exact(scaler_class, train):
    scaler = scaler_class().fit(train)
    assert (scaler.scale > 0).all()
    values = np.concatenate([train, -2.0 * train[::-1]])  # values it was not fitted on
    restored = scaler.inverse_transform(scaler.transform(values))
    tolerance = 1e-9 * (np.abs(values).max() + scaler.scale.max() + 1.0)
    np.testing.assert_allclose(restored, values, rtol=0, atol=tolerance)


@pytest.mark.parametrize("scaler_class", SCALERS)
@given(train=series_values)
def test_scaler_save_load_is_bit_exact(tmp_path_factory, scaler_class, train):
    path = tmp_path_factory.mktemp("scaler") / "scaler.json"
    scaler = scaler_class().fit(train)
    scaler.save(path)
    loaded = load_scaler(path)
    assert type(loaded) is scaler_class
    np.testing.assert_array_equal(loaded.center, scaler.center)
    np.testing.assert_array_equal(loaded.scale, scaler.scale)
    np.testing.assert_array_equal(loaded.transform(train), scaler.transform(train))


def test_scalers_match_reference_statistics():
    values = np.array([[1.0, 10.0], [2.0, 10.0], [3.0, 10.0], [10.0, 10.0]])
    standard = StandardScaler().fit(values)
    np.testing.assert_allclose(standard.center, [4.0, 10.0])
    np.testing.assert_allclose(standard.scale, [np.std([1, 2, 3, 10]), 1.0])  # constant: 1
    np.testing.assert_allclose(MinMaxScaler().fit_transform(values)[:, 0], [0, 1 / 9, 2 / 9, 1])
    robust = RobustScaler().fit(values)
    np.testing.assert_allclose(robust.center, [2.5, 10.0])
    np.testing.assert_allclose(robust.scale[0], 4.75 - 1.75)
    np.testing.assert_allclose(StandardScaler().fit(values[:, 0]).transform(values[:, 0]).std(), 1)


def test_scaler_errors():
    with pytest.raises(RuntimeError, match="not fitted"):
        StandardScaler().transform(np.ones(3))
    with pytest.raises(ValueError, match="NaN"):
        StandardScaler().fit(np.array([1.0, np.nan]))
    with pytest.raises(ValueError, match="3 columns, the scaler was fitted on 2"):
        StandardScaler().fit(np.ones((4, 2))).transform(np.ones((4, 3)))


def test_scaler_never_sees_valid_or_test_rows():
    values = np.concatenate([np.arange(70.0), 1e6 + np.arange(30.0)])[:, None]
    split = split_by_time(len(values), valid=0.15, test=0.15)
    assert split.range("train") == (0, 70)
    scaler = split.fit_scaler(values, "standard")
    reference = StandardScaler().fit(values[:70])
    np.testing.assert_array_equal(scaler.center, reference.center)
    np.testing.assert_array_equal(scaler.scale, reference.scale)
    changed = values.copy()
    changed[70:] = -5e9  # whatever valid and test hold, the scaler is the same
    np.testing.assert_array_equal(split.fit_scaler(changed, "standard").center, scaler.center)


@settings(max_examples=50, deadline=None)
@given(
    length=st.integers(2, 80),
    input_len=st.integers(1, 10),
    horizon=st.integers(1, 6),
    stride=st.integers(1, 4),
    start=st.integers(0, 40),
)
def test_windows_never_put_future_values_in_inputs(length, input_len, horizon, stride, start):
    values = np.arange(length, dtype=np.float64)[:, None] * [1.0, -1.0]  # value = time index
    covariates = 1000 + np.arange(length + horizon, dtype=np.float64)[:, None]  # known ahead
    windows = SlidingWindows(values, input_len, horizon, stride, covariates, [0], start=start)
    for i in range(len(windows)):
        past, future, target = windows[i]
        t = windows.forecast_time(i)
        assert t >= start and t + horizon <= length
        torch.testing.assert_close(past[:, 0], torch.arange(t - input_len, t).float())
        assert past[:, 0].max() < target.min()  # every input value is before every target
        torch.testing.assert_close(target[:, 0], torch.arange(t, t + horizon).float())
        torch.testing.assert_close(future[:, 0], 1000 + torch.arange(t, t + horizon).float())
        torch.testing.assert_close(past[:, 2], 1000 + torch.arange(t - input_len, t).float())


def test_window_inputs_do_not_change_when_the_future_does():
    rng = np.random.default_rng(0)
    values = rng.normal(size=(50, 2))
    windows = SlidingWindows(values, input_len=6, horizon=3)
    t = windows.forecast_time(10)
    changed = values.copy()
    changed[t:] = 1e9
    torch.testing.assert_close(SlidingWindows(changed, 6, 3)[10][0], windows[10][0])


def test_split_windows_keep_targets_inside_their_split():
    values = np.arange(100.0)
    split = split_by_time(100, valid=20, test=10)
    parts = split_windows(values, split, input_len=5, horizon=3)
    for name, windows in parts.items():
        start, end = split.range(name)
        targets = torch.cat([windows[i][2] for i in range(len(windows))])
        assert targets.min() >= start and targets.max() < end
    assert len(parts["valid"]) == 20 - 3 + 1  # the past may reach back into train
    batch = collate_windows([parts["test"][i] for i in range(len(parts["test"]))])
    assert batch.inputs["past"].shape == (8, 5, 1) and batch.inputs["future"].shape == (8, 3, 0)
    assert batch.targets.shape == (8, 3, 1)


def test_split_by_time_counts_fractions_and_dates():
    times = np.arange("2000-01", "2010-01", dtype="datetime64[M]").astype("datetime64[s]")
    series = Series(np.arange(120.0), ["y"], times)
    by_date = split_by_time(series, valid="2008-01", test="2009-01")
    assert (by_date.valid_start, by_date.test_start) == (96, 108)
    assert split_by_time(series, valid=0.1, test=0.1).range("valid") == (96, 108)
    with pytest.raises(ValueError, match="train must not be empty"):
        split_by_time(10, valid=5, test=5)


def test_nan_reject_names_file_line_and_column():
    series = Series(np.array([[1.0], [np.nan]]), ["y"], source="data.csv", lines=np.array([2, 3]))
    with pytest.raises(DataError, match=r"data\.csv:3: missing value \(NaN\) in column 'y'"):
        handle_nan(series, "reject")


def test_nan_interpolate_is_linear_in_time():
    times = np.array(
        ["2000-01-01", "2000-01-02", "2000-01-04", "2000-01-05"], dtype="datetime64[s]"
    )
    series = Series(np.array([[np.nan], [1.0], [np.nan], [4.0]]), ["y"], times)
    filled = handle_nan(series, "interpolate").values[:, 0]
    np.testing.assert_allclose(filled, [1.0, 1.0, 3.0, 4.0])  # day 4 is 2/3 of the way


def test_calendar_features_and_future_times():
    times = np.array(["2024-01-01T06", "2024-07-04T18"], dtype="datetime64[s]")
    features = calendar_features(times, ("month", "day_of_week", "hour"))
    assert features.shape == (2, 6)
    np.testing.assert_allclose(features[0], [0, 1, 0, 1, 1, 0], atol=1e-12)  # Jan, Monday, 6h
    np.testing.assert_allclose(features[1, 0], np.sin(2 * np.pi * 6 / 12))  # July
    np.testing.assert_allclose(features[1, 2], np.sin(2 * np.pi * 3 / 7))  # Thursday
    monthly = np.array(["1960-10", "1960-11", "1960-12"], dtype="datetime64[M]")
    expected = np.array(["1961-01", "1961-02"], dtype="datetime64[M]").astype("datetime64[s]")
    np.testing.assert_array_equal(extend_times(monthly, 2), expected)
    daily = np.array(["2000-01-01", "2000-01-02"], dtype="datetime64[D]")
    assert extend_times(daily, 1)[0] == np.datetime64("2000-01-03T00:00:00")


@pytest.mark.parametrize(
    ("first", "freq", "count"),
    [
        ("2019-01-31", "ME", 15),  # month ends drift to the 14th by a 31-day step otherwise
        ("2019-11-30", "ME", 2),  # into a leap February: 2020-02-29
        ("2019-01-01", "MS", 15),
        ("2019-03-31", "QE", 8),
        ("2019-01-01", "QS", 8),
        ("2000-12-31", "YE", 4),
        ("2000-01-01", "YS", 4),
        ("2019-01-31 12:00", "ME", 5),  # one time of day on the last day
    ],
)
def test_extend_times_keeps_calendar_anchors_like_pandas(first, freq, count):
    pd = pytest.importorskip("pandas")
    stamps = pd.date_range(first, periods=count + 24, freq=freq).to_numpy("datetime64[s]")
    np.testing.assert_array_equal(extend_times(stamps[:count], 24), stamps[count:])


def test_extend_times_keeps_the_day_of_month():
    pd = pytest.importorskip("pandas")
    stamps = pd.date_range("2019-01-15", periods=30, freq=pd.DateOffset(months=1))
    stamps = stamps.to_numpy("datetime64[s]")
    np.testing.assert_array_equal(extend_times(stamps[:6], 24), stamps[6:])
    weekly = np.arange("2019-01-07", "2019-03-04", 7, dtype="datetime64[D]")  # not monthly
    assert extend_times(weekly, 1)[0] == np.datetime64("2019-03-04T00:00:00")


@pytest.mark.parametrize("mode", ["reject", "interpolate"])
def test_inf_is_rejected_in_both_modes(mode):
    """An inf is not a gap: interpolating would hide an overflow or a division by zero."""
    values = np.array([[1.0, 2.0], [2.0, 3.0], [2.0, -np.inf]])
    series = Series(values, ["a", "b"], source="data.csv", lines=np.array([2, 3, 4]))
    with pytest.raises(DataError, match=r"data\.csv:4: infinite value \(-inf\) in column 'b'"):
        handle_nan(series, mode)
    series.values[1, 0] = np.nan  # the NaN comes first: it is the first problem, or a gap
    first = "3: missing value" if mode == "reject" else r"4: infinite value \(-inf\)"
    with pytest.raises(DataError, match=rf"data\.csv:{first}"):
        handle_nan(series, mode)
    with pytest.raises(DataError, match=r"<data>: row 0: infinite value \(inf\) in column 'x'"):
        handle_nan(Series(np.array([np.inf, 1.0]), ["x"]), mode)


@pytest.mark.parametrize("bad", [np.inf, -np.inf, 1e39])  # 1e39 overflows float32
def test_windows_reject_inf(bad):
    values = np.arange(10.0)
    values[3] = bad
    with pytest.raises(ValueError, match=r"values contain inf \(first at row 3\)"):
        SlidingWindows(values, input_len=2, horizon=1)
    covariates = np.zeros((12, 1))
    covariates[11] = bad
    with pytest.raises(ValueError, match=r"covariates contain inf \(first at row 11\)"):
        latest_window(np.arange(10.0), 2, 2, covariates)


def test_latest_window_checks_its_sizes_as_sliding_windows_do():
    for input_len, horizon, name in ((0, 1, "input_len"), (1, 0, "horizon"), (-1, 1, "input_len")):
        with pytest.raises(ValueError, match=f"{name} must be >= 1, got {min(input_len, horizon)}"):
            latest_window(np.arange(10.0), input_len, horizon)
        with pytest.raises(ValueError, match=f"{name} must be >= 1"):
            SlidingWindows(np.arange(10.0), input_len, horizon)


def test_latest_window_with_known_future_covariates():
    values = np.arange(24.0)
    covariates = np.arange(30.0)[:, None]  # 24 steps + a 6-step horizon
    batch = latest_window(values, input_len=4, horizon=6, covariates=covariates)
    torch.testing.assert_close(batch.inputs["past"][0, :, 0], torch.arange(20.0, 24.0))
    torch.testing.assert_close(batch.inputs["future"][0, :, 0], torch.arange(24.0, 30.0))
    with pytest.raises(ValueError, match="extend the times"):
        latest_window(values, 4, 6, covariates[:25])
