"""Evaluation metrics by name, computed with torchmetrics and reduced across processes.

`MetricSet(names, num_classes, ignore_index)` owns one torchmetrics object per name plus the
weighted mean loss. Prediction metrics are fed `model.predict(batch)` and `batch.targets`;
"perplexity" is exp(mean loss), for models whose loss is the mean token cross-entropy. Under
torch.distributed, `compute()` sums the metric states of all processes (torchmetrics syncs on
compute, and the loss sums are all-reduced here), so every rank gets the metric of the whole data
set. torchmetrics is imported only when a metric needs it: it takes seconds to import.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist

_CLASSIFICATION = ("accuracy", "f1", "precision", "recall")
_REGRESSION = ("mae", "mse", "rmse", "mape", "smape", "r2")
_FROM_LOSS = ("perplexity",)
METRIC_NAMES: tuple[str, ...] = _CLASSIFICATION + _REGRESSION + _FROM_LOSS
_HIGHER_IS_BETTER = {"accuracy", "f1", "precision", "recall", "r2"}


def check_metric(name: str, num_classes: int | None) -> None:
    """Raise for an unknown metric name, or a classification metric without num_classes."""
    if name not in METRIC_NAMES:
        raise ValueError(f"unknown metric {name!r}; known metrics: {', '.join(METRIC_NAMES)}")
    if name in _CLASSIFICATION and num_classes is None:
        raise ValueError(f"metric {name!r} needs num_classes")


def higher_is_better(name: str) -> bool:
    """Whether a larger value of metric `name` is better (accuracy: yes; mae, perplexity: no)."""
    assert name in METRIC_NAMES, "TrainConfig checks metric names"
    return name in _HIGHER_IS_BETTER


def make_metric(name: str, num_classes: int | None, ignore_index: int | None) -> Any:
    """The torchmetrics object for `name` (not for "perplexity", which comes from the loss)."""
    import torchmetrics as tm

    check_metric(name, num_classes)
    if name in _CLASSIFICATION:
        kind = {
            "accuracy": (tm.Accuracy, "micro"),
            "f1": (tm.F1Score, "macro"),
            "precision": (tm.Precision, "macro"),
            "recall": (tm.Recall, "macro"),
        }
        cls, average = kind[name]
        return cls(
            task="multiclass", num_classes=num_classes, average=average, ignore_index=ignore_index
        )
    factories: dict[str, Callable[[], Any]] = {
        "mae": tm.MeanAbsoluteError,
        "mse": tm.MeanSquaredError,
        "rmse": lambda: tm.MeanSquaredError(squared=False),
        "mape": tm.MeanAbsolutePercentageError,
        "smape": tm.SymmetricMeanAbsolutePercentageError,
        "r2": tm.R2Score,
    }
    assert name in factories, f"{name} is computed from the loss, not by torchmetrics"
    return factories[name]()


class MetricSet:
    """The mean loss and the named metrics of one evaluation pass.

    update_loss(loss, weight): loss is a scalar mean over `weight` examples (or time steps)
    update(preds, targets): preds are labels shaped like targets, or scores (N, C) for labels (N,);
    regression metrics see both flattened to 1-D.
    """

    def __init__(
        self,
        names: tuple[str, ...],
        num_classes: int | None,
        ignore_index: int | None,
        device: torch.device,
    ) -> None:
        self.names = names
        self.loss_sum = torch.zeros((), dtype=torch.float64, device=device)  # sum of weight * loss
        self.loss_weight = torch.zeros((), dtype=torch.float64, device=device)
        self.metrics = {
            name: make_metric(name, num_classes, ignore_index).to(device)
            for name in names
            if name not in _FROM_LOSS
        }

    @property
    def needs_predictions(self) -> bool:
        """Whether any metric needs `model.predict` (perplexity and loss do not)."""
        return bool(self.metrics)

    def update_loss(self, loss: torch.Tensor, weight: int) -> None:
        if weight == 0:  # nothing scored (every target padding): its loss is NaN, 0/0
            return
        self.loss_sum += loss.detach().double() * weight
        self.loss_weight += weight

    def update(self, preds: torch.Tensor, targets: torch.Tensor) -> None:
        for name, metric in self.metrics.items():
            if name in _REGRESSION:
                metric.update(preds.reshape(-1).float(), targets.reshape(-1).float())
            else:
                metric.update(preds, targets)

    def compute(self) -> dict[str, float]:
        """{"loss": mean loss, name: value, ...}, reduced over all processes."""
        totals = torch.stack([self.loss_sum, self.loss_weight])
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(totals)
        if totals[1] == 0:
            raise ValueError(
                "nothing to score: every target of the evaluation data is padding (or ignored); "
                "check the data's targets, or evaluate on data with at least one target"
            )
        loss = float(totals[0] / totals[1])
        result = {"loss": loss}
        for name in self.names:
            if name == "perplexity":
                result[name] = math.exp(min(loss, 700.0))  # exp(709) overflows a float
            else:
                result[name] = float(self.metrics[name].compute())  # syncs across processes
        return result
