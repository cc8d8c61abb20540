"""Scalers for series: standard, min-max and robust, fitted on the training part only.

A scaler learns a per-column `center` and `scale` from training values (T, D) and maps
x -> (x - center) / scale; `inverse_transform` maps back. Fit it on the training split alone
(`rnnkit.data.series.TimeSplit.fit_scaler` does exactly that) and save it with the run: its JSON
holds the kind and the numbers, nothing else, and `load_scaler` reads it back bit for bit.

    StandardScaler  center = mean,            scale = standard deviation
    MinMaxScaler    center = min,             scale = max - min          (maps to [0, 1])
    RobustScaler    center = median,          scale = 75th - 25th percentile

A column whose scale is 0 (constant in training, up to rounding) gets scale 1, so nothing
divides by zero.
"""

from __future__ import annotations

import os

import numpy as np

from rnnkit.data.files import DataError, read_json, write_json


class Scaler:
    """Shared base: per-column x -> (x - center) / scale. Subclasses define `_fit_stats`."""

    kind = ""

    def __init__(self) -> None:
        self.center: np.ndarray | None = None  # (D,) float64, set by fit
        self.scale: np.ndarray | None = None  # (D,) float64, > 0

    def _fit_stats(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def fit(self, values: np.ndarray) -> Scaler:
        """Learn center and scale from training values (T,) or (T, D); returns self."""
        values = _as_2d(values)
        if values.shape[0] == 0:
            raise ValueError("cannot fit a scaler on 0 values; the training split is empty")
        if not np.isfinite(values).all():
            raise ValueError("cannot fit a scaler on NaN or infinite values; fill them first")
        center, scale = self._fit_stats(values)
        # constant columns (up to rounding) get scale 1: nothing divides by ~0
        constant = scale <= 10 * np.finfo(np.float64).eps * np.abs(values).max(axis=0)
        self.center = center.astype(np.float64)
        self.scale = np.where(constant | (scale <= 0), 1.0, scale).astype(np.float64)
        return self

    def _check(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """values as float64 and the center and scale that broadcast against them."""
        if self.center is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted; call fit(train_values) first")
        array = np.asarray(values, dtype=np.float64)
        width = array.shape[-1] if array.ndim > 1 else 1
        if width != len(self.center):
            fitted = len(self.center)
            raise ValueError(f"values have {width} columns, the scaler was fitted on {fitted}")
        if array.ndim < 2:
            return array, self.center[0], self.scale[0]
        return array, self.center, self.scale

    def transform(self, values: np.ndarray) -> np.ndarray:
        """(values - center) / scale, same shape as `values` ((T,) or (..., D))."""
        array, center, scale = self._check(values)
        return (array - center) / scale

    def inverse_transform(self, values: np.ndarray) -> np.ndarray:
        """values * scale + center: undoes `transform`."""
        array, center, scale = self._check(values)
        return array * scale + center

    def fit_transform(self, values: np.ndarray) -> np.ndarray:
        """`fit(values)` then `transform(values)`: use on training values only."""
        return self.fit(values).transform(values)

    def to_dict(self) -> dict:
        if self.center is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted; nothing to save")
        return {"kind": self.kind, "center": self.center.tolist(), "scale": self.scale.tolist()}

    def save(self, path: str | os.PathLike) -> None:
        """Write the scaler as JSON (atomically); `load_scaler(path)` reads it back exactly."""
        write_json(path, self.to_dict())

    def __repr__(self) -> str:
        fitted = "unfitted" if self.center is None else f"{len(self.center)} columns"
        return f"{type(self).__name__}({fitted})"


class StandardScaler(Scaler):
    """Zero mean and unit standard deviation on the training values."""

    kind = "standard"

    def _fit_stats(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return values.mean(axis=0), values.std(axis=0)


class MinMaxScaler(Scaler):
    """The training range mapped onto [0, 1]."""

    kind = "minmax"

    def _fit_stats(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        low = values.min(axis=0)
        return low, values.max(axis=0) - low


class RobustScaler(Scaler):
    """Median 0 and inter-quartile range 1: outliers barely move it."""

    kind = "robust"

    def _fit_stats(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        q25, median, q75 = np.percentile(values, [25, 50, 75], axis=0)
        return median, q75 - q25


SCALERS = {cls.kind: cls for cls in (StandardScaler, MinMaxScaler, RobustScaler)}


def make_scaler(kind: str) -> Scaler:
    """An unfitted scaler by name: standard, minmax or robust."""
    if kind not in SCALERS:
        raise ValueError(f"unknown scaler {kind!r}; choose one of {sorted(SCALERS)}")
    return SCALERS[kind]()


def scaler_from_dict(obj: dict) -> Scaler:
    """The inverse of `Scaler.to_dict`."""
    scaler = make_scaler(obj["kind"])
    scaler.center = np.asarray(obj["center"], dtype=np.float64)
    scaler.scale = np.asarray(obj["scale"], dtype=np.float64)
    return scaler


def load_scaler(path: str | os.PathLike) -> Scaler:
    """Read a scaler written by `Scaler.save`."""
    obj = read_json(path, "scaler")
    if obj.get("kind") not in SCALERS or "center" not in obj or "scale" not in obj:
        raise DataError(path, 1, f"not a scaler file (kind {obj.get('kind')!r})")
    return scaler_from_dict(obj)


def _as_2d(values: np.ndarray) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim == 1:
        return array[:, None]
    if array.ndim != 2:
        raise ValueError(f"scalers take values of shape (T,) or (T, D), got {array.shape}")
    return array
