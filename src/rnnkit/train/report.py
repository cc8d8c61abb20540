"""The end of a run: final weights, `metrics.json` and the PNG plots, written by rank 0.

`history.csv` is written after every epoch and the checkpoint by `rnnkit.train.loop`; this module
writes what only exists once training is over. All writes are atomic.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from rnnkit.train.checkpoint import atomic_write, save_tensors, write_csv, write_json
from rnnkit.train.config import TrainConfig


def finish_run(
    run_dir: Path,
    model: nn.Module,
    history: list[dict[str, Any]],
    config: TrainConfig,
    best_epoch: int,
    nonfinite_steps: int,
) -> None:
    """Write model.safetensors, history.csv, metrics.json and plots/*.png into run_dir."""
    save_tensors(run_dir / "model.safetensors", model.state_dict())
    write_csv(run_dir / "history.csv", history)
    summary: dict[str, Any] = {
        "epochs": len(history),
        "monitor": config.monitor,
        "best_epoch": best_epoch or None,
        "best": history[best_epoch - 1] if best_epoch else None,
        "last": history[-1] if history else None,
        "nonfinite_steps": nonfinite_steps,
    }
    write_json(run_dir / "metrics.json", summary)
    if history:
        _write_plots(run_dir / "plots", history, config.metrics)


def _write_plots(folder: Path, history: list[dict[str, Any]], metrics: tuple[str, ...]) -> None:
    from rnnkit import plots  # matplotlib is imported only when a run ends

    figures = {"loss.png": plots.plot_losses(history)}
    names = [name for name in metrics if f"val_{name}" in history[0]]
    if names:
        figures["metrics.png"] = plots.plot_metrics(history, names)
    for name, fig in figures.items():
        atomic_write(folder / name, lambda tmp, fig=fig: plots.save_png(fig, tmp))
