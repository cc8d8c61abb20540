"""Sliding windows over a series for forecasting: past inputs, known future covariates, targets.

A window that forecasts from time t reads

    past:   rows [t - L, t)    of the values and the covariates      (L = input_len)
    future: rows [t, t + H)    of the covariates only (known ahead)  (H = horizon)
    target: rows [t, t + H)    of the target columns of the values

so no value at or after t ever reaches the inputs: only covariates that are known in advance
(calendar features) are given for the future steps. `start`/`end` keep the targets inside one
split while the past may reach back into the split before it (that is the past, not a leak).
Splitting and scaling live in `rnnkit.data.series` and `rnnkit.data.scalers`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from rnnkit.data.batch import Batch
from rnnkit.data.series import TimeSplit


def _as_2d(array: np.ndarray, name: str) -> torch.Tensor:
    with np.errstate(over="ignore"):  # a value too large for float32 becomes inf: see below
        array = np.asarray(array, dtype=np.float32)
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2:
        raise ValueError(f"{name} must be (T,) or (T, D), got shape {array.shape}")
    if np.isnan(array).any():
        raise ValueError(f"{name} contain NaN; handle them first (rnnkit.data.series.handle_nan)")
    if np.isinf(array).any():
        row = int(np.argwhere(np.isinf(array))[0, 0])
        raise ValueError(
            f"{name} contain inf (first at row {row}): an infinite value, or one too large for "
            "float32; fix it first"
        )
    return torch.from_numpy(array)


def _check_sizes(**sizes: int) -> None:
    """Raise a ValueError naming the first of `sizes` (input_len, horizon, ...) below 1."""
    for name, value in sizes.items():
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")


class SlidingWindows(Dataset):
    """Forecasting windows over values (T, D) with optional covariates (T', C), T' >= T.

    Item i is (past (L, D + C), future (H, C), target (H, D_out)) float32 tensors for the i-th
    forecast time t = first + i * stride, where first = max(start, L) and t + H <= end.
    `target_columns` picks the D_out forecast columns (all by default).
    """

    def __init__(
        self,
        values: np.ndarray,
        input_len: int,
        horizon: int,
        stride: int = 1,
        covariates: np.ndarray | None = None,
        target_columns: Sequence[int] | None = None,
        start: int = 0,
        end: int | None = None,
    ):
        _check_sizes(input_len=input_len, horizon=horizon, stride=stride)
        self.values = _as_2d(values, "values")  # (T, D)
        length = len(self.values)
        if covariates is None:
            covariates = np.zeros((length, 0), dtype=np.float32)
        self.covariates = _as_2d(covariates, "covariates")  # (T', C)
        if len(self.covariates) < length:
            raise ValueError(f"covariates cover {len(self.covariates)} steps, values {length}")
        self.input_len, self.horizon, self.stride = input_len, horizon, stride
        self.target_columns = (
            list(range(self.values.shape[1])) if target_columns is None else list(target_columns)
        )
        self.end = length if end is None else min(end, length)
        self.first = max(start, input_len)  # the first forecast time t
        self.count = max(0, (self.end - horizon - self.first) // stride + 1)

    def __len__(self) -> int:
        return self.count

    def forecast_time(self, index: int) -> int:
        """t: the first target row of window `index` (every input row is before it)."""
        if not 0 <= index < self.count:
            raise IndexError(f"window {index} out of range [0, {self.count})")
        return self.first + index * self.stride

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        t = self.forecast_time(index)
        past_rows = slice(t - self.input_len, t)
        future_rows = slice(t, t + self.horizon)
        past = torch.cat([self.values[past_rows], self.covariates[past_rows]], dim=1)  # (L, D+C)
        future = self.covariates[future_rows]  # (H, C)
        target = self.values[future_rows][:, self.target_columns]  # (H, D_out)
        return past, future, target


def collate_windows(samples: Sequence[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]) -> Batch:
    """A `Batch` of windows: inputs {"past": (B, L, D+C), "future": (B, H, C)}, lengths (B,) = L,
    targets (B, H, D_out)."""
    if len(samples) == 0:
        raise ValueError("collate_windows needs at least one window, got none")
    past = torch.stack([s[0] for s in samples])  # (B, L, D+C)
    future = torch.stack([s[1] for s in samples])  # (B, H, C)
    targets = torch.stack([s[2] for s in samples])  # (B, H, D_out)
    lengths = torch.full((len(samples),), past.shape[1], dtype=torch.int64)
    return Batch(inputs={"past": past, "future": future}, lengths=lengths, targets=targets)


def split_windows(
    values: np.ndarray,
    split: TimeSplit,
    input_len: int,
    horizon: int,
    stride: int = 1,
    covariates: np.ndarray | None = None,
    target_columns: Sequence[int] | None = None,
) -> dict[str, SlidingWindows]:
    """Windows for train, valid and test whose targets lie inside each split."""
    windows = {}
    for name in ("train", "valid", "test"):
        start, end = split.range(name)
        windows[name] = SlidingWindows(
            values, input_len, horizon, stride, covariates, target_columns, start=start, end=end
        )
    return windows


def latest_window(
    values: np.ndarray,
    input_len: int,
    horizon: int,
    covariates: np.ndarray | None = None,
) -> Batch:
    """The inputs to forecast the `horizon` steps after the end of `values` (T, D).

    `covariates` must then cover T + horizon steps (e.g. calendar features of the series' times
    and of `extend_times(times, horizon)`). Returns a `Batch` of one with no targets.
    """
    _check_sizes(input_len=input_len, horizon=horizon)
    values_t = _as_2d(values, "values")
    length = len(values_t)
    if length < input_len:
        raise ValueError(f"the series has {length} steps, fewer than input_len={input_len}")
    if covariates is None:
        covariates = np.zeros((length + horizon, 0), dtype=np.float32)
    covariates_t = _as_2d(covariates, "covariates")
    if len(covariates_t) < length + horizon:
        raise ValueError(
            f"covariates cover {len(covariates_t)} steps; forecasting {horizon} steps after "
            f"{length} needs {length + horizon} (extend the times with extend_times)"
        )
    past = torch.cat([values_t[-input_len:], covariates_t[length - input_len : length]], dim=1)
    future = covariates_t[length : length + horizon]
    lengths = torch.tensor([input_len], dtype=torch.int64)
    return Batch(inputs={"past": past[None], "future": future[None]}, lengths=lengths)
