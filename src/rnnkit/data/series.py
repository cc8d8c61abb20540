"""Time series: the `Series` container, NaN handling, splits by time and calendar features.

A `Series` holds values (T, D), optional times (T,) and, when it came from a file, the file and
the line of each row, so a problem found later (a NaN, an inf) is reported where it is in the
file. `split_by_time` cuts it into train | valid | test in time order, and
`TimeSplit.fit_scaler` fits a scaler on the training part alone. Calendar features (month, day
of week, ...) are known in advance, so they may be given to a forecaster for the future steps
too (`extend_times` makes the future times). Windows over a series live in
`rnnkit.data.windows`; reading series from CSV lives in `rnnkit.data.tabular`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from rnnkit.data.files import DataError
from rnnkit.data.scalers import Scaler, make_scaler

NAN_MODES = ("reject", "interpolate")
CALENDAR_FEATURES = ("hour", "day_of_week", "day_of_month", "day_of_year", "month")


@dataclass
class Series:
    """A (multivariate) time series.

    values:  (T, D) float64
    columns: the D column names
    times:   (T,) datetime64[s], increasing; None when the series has no time column
    source:  the file it was read from, if any
    lines:   (T,) the 1-based line of each row in `source`, if any
    """

    values: np.ndarray
    columns: list[str]
    times: np.ndarray | None = None
    source: str | None = None
    lines: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.values = np.asarray(self.values, dtype=np.float64)
        if self.values.ndim == 1:
            self.values = self.values[:, None]
        if self.values.ndim != 2 or self.values.shape[1] != len(self.columns):
            raise ValueError(f"values {self.values.shape} do not match columns {self.columns}")
        if self.times is not None and len(self.times) != len(self.values):
            raise ValueError(f"{len(self.times)} times for {len(self.values)} values")

    def __len__(self) -> int:
        return len(self.values)

    def select(self, columns: list[str]) -> Series:
        """The same series with only `columns`, in that order."""
        missing = [c for c in columns if c not in self.columns]
        if missing:
            raise ValueError(f"no columns {missing} in the series; it has {self.columns}")
        index = [self.columns.index(c) for c in columns]
        return replace(self, values=self.values[:, index], columns=list(columns))


def _place(series: Series, row: int) -> tuple[int | None, str]:
    """Where row `row` is, for a `DataError`: (its line in the file, "") when the series came
    from one, else (None, "row N: ")."""
    if series.lines is not None:
        return int(series.lines[row]), ""
    return None, f"row {row}: "


def handle_nan(series: Series, mode: str = "reject") -> Series:
    """Check a series for missing values (NaN) and infinite ones (inf, -inf).

    mode="reject": raise a `DataError` naming the file, the line and the column of the first
    NaN or inf. mode="interpolate": fill each NaN gap linearly in time (by row when there are no
    times); gaps at either end take the nearest value. An inf is never filled: it is a value
    that overflowed or a division by zero, not a gap, so it raises a `DataError` in both modes.
    """
    if mode not in NAN_MODES:
        raise ValueError(f"nan mode must be one of {NAN_MODES}, got {mode!r}")
    missing = np.isnan(series.values)
    infinite = np.isinf(series.values)
    rejected = infinite | missing if mode == "reject" else infinite
    if rejected.any():
        row, col = (int(i) for i in np.argwhere(rejected)[0])
        line, where = _place(series, row)
        column = series.columns[col]
        if missing[row, col]:
            problem = (
                f"missing value (NaN) in column {column!r}; fill it in, or pass "
                "nan='interpolate' to fill gaps linearly"
            )
        else:
            problem = (
                f"infinite value ({series.values[row, col]}) in column {column!r}; fix it in "
                "the data (nan='interpolate' fills missing values only, never an inf)"
            )
        raise DataError(series.source, line, where + problem)
    if not missing.any():
        return series
    return replace(series, values=_interpolate(series, missing))


def _interpolate(series: Series, missing: np.ndarray) -> np.ndarray:
    positions = np.arange(len(series), dtype=np.float64)
    if series.times is not None:
        positions = series.times.astype("datetime64[s]").astype(np.float64)
    values = series.values.copy()
    for col in range(values.shape[1]):
        gap = missing[:, col]
        if gap.all():
            raise DataError(
                series.source, None, f"column {series.columns[col]!r} has no values at all"
            )
        values[gap, col] = np.interp(positions[gap], positions[~gap], values[~gap, col])
    return values


@dataclass(frozen=True)
class TimeSplit:
    """Train | valid | test by time: rows [0, valid_start), [valid_start, test_start),
    [test_start, length)."""

    length: int
    valid_start: int
    test_start: int

    def range(self, name: str) -> tuple[int, int]:
        """(start, end) rows of split `name`: train, valid or test."""
        ranges = {
            "train": (0, self.valid_start),
            "valid": (self.valid_start, self.test_start),
            "test": (self.test_start, self.length),
        }
        if name not in ranges:
            raise ValueError(f"split must be train, valid or test, got {name!r}")
        return ranges[name]

    def fit_scaler(self, values: np.ndarray, kind: str = "standard") -> Scaler:
        """A scaler fitted on the training rows of `values` only; valid and test are unseen."""
        return make_scaler(kind).fit(np.asarray(values)[: self.valid_start])


def _rows(part: float | int | str | np.datetime64, length: int, times: np.ndarray | None) -> int:
    """The number of final rows that `part` asks for: a fraction, a count or a start time."""
    if isinstance(part, (str, np.datetime64)):
        if times is None:
            raise ValueError(f"a split at time {part!r} needs a series with times")
        return length - int(np.searchsorted(times, np.datetime64(part, "s")))
    if isinstance(part, float):
        if not 0.0 <= part < 1.0:
            raise ValueError(f"a split fraction must be in [0, 1), got {part}")
        return round(part * length)
    return int(part)


def split_by_time(
    series: Series | int,
    valid: float | int | str = 0.15,
    test: float | int | str = 0.15,
) -> TimeSplit:
    """Cut a series (or a length) in time order into train | valid | test.

    `valid` and `test` are each a fraction of the rows (0.15), a number of rows (24) or the
    time at which that part starts ("1959-01"). Nothing is shuffled: every training row comes
    before every validation row, which comes before every test row.
    """
    length = series if isinstance(series, int) else len(series)
    times = None if isinstance(series, int) else series.times
    test_rows = _rows(test, length, times)
    valid_rows = _rows(valid, length, times)
    if isinstance(valid, (str, np.datetime64)):
        valid_rows -= test_rows  # rows from the valid start up to the test start
    test_start = length - test_rows
    valid_start = test_start - valid_rows
    if not 0 < valid_start <= test_start <= length or valid_rows < 0:
        raise ValueError(
            f"split of {length} rows gives train [0, {valid_start}), valid [{valid_start}, "
            f"{test_start}), test [{test_start}, {length}); each part must be in order and "
            "train must not be empty"
        )
    return TimeSplit(length, valid_start, test_start)


def calendar_features(times: np.ndarray, features: tuple[str, ...] = ("month",)) -> np.ndarray:
    """Cyclic calendar features of `times` (T,): for each feature a sine and a cosine column.

    Returns (T, 2 * len(features)) float64, columns [sin f1, cos f1, sin f2, cos f2, ...].
    Features: hour, day_of_week (Monday = 0), day_of_month, day_of_year, month.
    """
    unknown = [f for f in features if f not in CALENDAR_FEATURES]
    if unknown:
        raise ValueError(f"unknown calendar features {unknown}; choose from {CALENDAR_FEATURES}")
    times = np.asarray(times).astype("datetime64[s]")
    days = times.astype("datetime64[D]")
    phase = {
        "hour": ((times - days).astype("timedelta64[h]").astype(np.int64), 24),
        "day_of_week": ((days.astype(np.int64) + 3) % 7, 7),  # 1970-01-01 was a Thursday
        "day_of_month": ((days - times.astype("datetime64[M]")).astype(np.int64), 31),
        "day_of_year": ((days - times.astype("datetime64[Y]")).astype(np.int64), 366),
        "month": (times.astype("datetime64[M]").astype(np.int64) % 12, 12),
    }
    columns = []
    for name in features:
        value, period = phase[name]
        angle = 2 * np.pi * value / period
        columns += [np.sin(angle), np.cos(angle)]
    return np.stack(columns, axis=1) if columns else np.zeros((len(times), 0))


def extend_times(times: np.ndarray, steps: int) -> np.ndarray:
    """The `steps` times after the last of `times`, at the series' regular step.

    Calendar data steps in whole months: times that all fall on one day of their month (one
    that every month has: the 1st to the 28th) or all on the last day of their month, at one
    time of day (monthly, quarterly, yearly data, stamped at the start, the middle or the end of
    the period), and keep that day. Other times step by the most common difference between
    neighbours.
    """
    times = np.asarray(times).astype("datetime64[s]")
    if len(times) < 2:
        raise ValueError("extend_times needs at least two times to find the step")
    calendar = _calendar(times)
    if calendar is not None:
        months, anchor, offset = calendar
        step = _most_common(np.diff(months.astype(np.int64)))
        future = anchor[-1] + step * np.arange(1, steps + 1)  # (steps,) months
        return future.astype("datetime64[s]") + offset
    step = _most_common(np.diff(times.astype(np.int64)))
    return times[-1] + np.timedelta64(step, "s") * np.arange(1, steps + 1)


def _calendar(times: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.timedelta64] | None:
    """For calendar data (`extend_times`' rule): (each time's month, the month its day is
    counted from, the offset from that month's start), else None."""
    months = times.astype("datetime64[M]")
    day = np.timedelta64(1, "D")
    into_month = times - months.astype("datetime64[s]")  # (T,) in [0, 31 days)
    before_next = times - (months + 1).astype("datetime64[s]")  # (T,) in [-31 days, 0)
    rules = (  # (anchor month, offset from it, whether every month has that day)
        (months, into_month, into_month[0] < 28 * day),  # the 1st to the 28th
        (months + 1, before_next, before_next[0] >= -day),  # the last day of the month
    )
    for anchor, offset, in_every_month in rules:
        if in_every_month and (offset == offset[0]).all():
            return months, anchor, offset[0]
    return None


def check_calendar_steps(series: Series) -> Series:
    """`series`, checked for a gap in calendar data (monthly, quarterly or yearly times, as
    `extend_times` tells them): a missing month would make the rows unequal steps in time,
    which windows and forecasts assume they are. A DataError names the line after the gap."""
    if series.times is None or len(series.times) < 3:
        return series
    times = np.asarray(series.times).astype("datetime64[s]")
    calendar = _calendar(times)
    if calendar is None:
        return series
    months = calendar[0].astype(np.int64)
    gaps = np.diff(months)
    step = _most_common(gaps)
    uneven = np.nonzero(gaps != step)[0]
    if uneven.size:
        row = int(uneven[0]) + 1
        line, where = _place(series, row)
        before, after = calendar[0][row - 1], calendar[0][row]
        raise DataError(
            series.source,
            line,
            f"{where}the times step {step} month(s) at a time, but go from {before} to {after}; "
            "give every step a row (an empty value there, with nan='interpolate', fills it)",
        )
    return series


def _most_common(differences: np.ndarray) -> int:
    values, counts = np.unique(differences, return_counts=True)
    step = int(values[np.argmax(counts)])
    if step <= 0:
        raise ValueError("times must increase to extend them")
    return step
