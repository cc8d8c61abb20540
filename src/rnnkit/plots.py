"""matplotlib figures: training curves, metric curves, the gradient norm through time,
forecasts against actuals and attention maps.

Every function builds a `matplotlib.figure.Figure` directly (no pyplot, so the caller's backend
and global state are untouched; rendering uses Agg) and returns it; `save_png` writes one.
Nothing here trains or reads run directories: `rnnkit.train.report` and the tasks call these
at the end of a run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

_WIDTH, _HEIGHT = 6.0, 3.6  # inches; 100 dpi keeps a PNG around 30-60 kB


def _figure(ncols: int = 1) -> tuple[Figure, Any]:
    fig = Figure(figsize=(_WIDTH * ncols, _HEIGHT), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(1, ncols, squeeze=False)[0]


def plot_losses(history: Sequence[Mapping[str, Any]]) -> Figure:
    """Training and validation loss per epoch (log scale when the values span over 10x)."""
    fig, (ax,) = _figure()
    epochs = [row["epoch"] for row in history]
    for column, label in (("train_loss", "train"), ("val_loss", "validation")):
        values = [float(row[column]) for row in history if column in row]
        if values:
            ax.plot(epochs[: len(values)], values, marker="o", markersize=3, label=label)
    values = [float(row[c]) for row in history for c in ("train_loss", "val_loss") if c in row]
    if values and min(values) > 0 and max(values) > 10 * min(values):
        ax.set_yscale("log")
    ax.set(xlabel="epoch", ylabel="loss", title="Loss")
    _epoch_ticks(ax, epochs)
    ax.grid(alpha=0.3)
    ax.legend()
    return fig


def plot_metrics(history: Sequence[Mapping[str, Any]], names: Sequence[str]) -> Figure:
    """One panel per metric: its validation value (column "val_<name>") per epoch."""
    if not names:
        raise ValueError("plot_metrics needs at least one metric name")
    fig, axes = _figure(len(names))
    epochs = [row["epoch"] for row in history]
    for ax, name in zip(axes, names, strict=True):
        ax.plot(epochs, [float(row[f"val_{name}"]) for row in history], marker="o", markersize=3)
        ax.set(xlabel="epoch", ylabel=name, title=f"validation {name}")
        _epoch_ticks(ax, epochs)
        ax.grid(alpha=0.3)
    return fig


def _epoch_ticks(ax: Any, epochs: Sequence[int]) -> None:
    """Whole epochs on the x axis (one run of a single epoch: that epoch alone, not 0.95..1.05)."""
    if len(epochs) < 2:
        ax.set_xticks(list(epochs))
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def plot_gradient_flow(norms: Mapping[str, Sequence[float]], title: str = "") -> Figure:
    """The norm of dL/dh_t against time step t, one line per model, on a log scale.

    norms: label -> T values, as `rnnkit.train.diagnostics.hidden_gradient_norms` returns.
    A line that falls steeply to the left is a vanishing gradient: the loss at the end of the
    sequence barely reaches the early steps.
    """
    fig, (ax,) = _figure()
    for label, values in norms.items():
        values = [max(float(v), 1e-45) for v in values]  # log scale: show exact zeros at the floor
        ax.semilogy(range(len(values)), values, label=label)
    ax.set(xlabel="time step t", ylabel=r"$\|\partial L / \partial h_t\|$", title=title)
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    return fig


def plot_forecast(
    times: Any,
    actual: Any,
    columns: Sequence[str],
    test_start: int,
    forecasts: Sequence[tuple[str, Any, Any]],
    point: int = 0,
    band: str | None = None,
) -> Figure:
    """One panel per column: the actual series (T, C) in black against `times` (T,), the test
    period (from index `test_start`) shaded, and each forecast (label, its times (n,), values
    (n, C, Q)) as a line at quantile index `point`; with `band` (its legend text) the first
    and last quantiles as a shaded band."""
    actual = np.asarray(actual)
    fig = Figure(figsize=(8.0, 3.2 * len(columns)), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(columns), 1, squeeze=False)[:, 0]
    for k, (ax, name) in enumerate(zip(axes, columns, strict=True)):
        ax.plot(times, actual[:, k], color="black", linewidth=1, label="actual")
        ax.axvspan(times[test_start], times[-1], color="grey", alpha=0.12, label="test period")
        for n, (label, xs, values) in enumerate(forecasts):
            color = f"C{n}"
            ax.plot(xs, values[:, k, point], color=color, linewidth=1.5, label=label)
            if band is not None:
                ax.fill_between(
                    xs, values[:, k, 0], values[:, k, -1], color=color, alpha=0.2,
                    label=band if n == 0 else None,
                )  # fmt: skip
        ax.set(title=name, ylabel=name)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper left")
    axes[-1].set_xlabel("time" if np.issubdtype(np.asarray(times).dtype, np.datetime64) else "step")
    return fig


def plot_attention(
    weights: Any, source_tokens: Sequence[str], output_tokens: Sequence[str], title: str = ""
) -> Figure:
    """Heat-map of attention weights (L, S): output tokens (rows) against source tokens
    (columns), each row a distribution over the source, on a fixed 0-1 colour scale. A
    translation that follows the word order of its source shows a diagonal."""
    weights = np.asarray(weights, dtype=np.float64)
    if weights.shape != (len(output_tokens), len(source_tokens)):
        raise ValueError(
            f"weights have shape {weights.shape}, expected (output tokens, source tokens) = "
            f"({len(output_tokens)}, {len(source_tokens)})"
        )
    rows, columns = weights.shape
    fig = Figure(figsize=(min(12.0, 2.0 + 0.35 * columns), min(12.0, 1.5 + 0.3 * rows)))
    fig.set_layout_engine("constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    image = ax.imshow(weights, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
    ax.set_xticks(range(columns), source_tokens, rotation=90)
    ax.set_yticks(range(rows), output_tokens)
    ax.set(xlabel="source", ylabel="output", title=title or "Attention")
    fig.colorbar(image, ax=ax)
    return fig


def save_png(fig: Figure, path: str | Path, dpi: int = 100) -> None:
    """Render `fig` to a PNG file at `path` (the caller makes the write atomic if it needs to)."""
    fig.savefig(path, format="png", dpi=dpi)
