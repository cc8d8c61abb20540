"""Errors a training run can find before its first step: the model and data against the config.

`TrainConfig` checks its own fields when it is made; here are the checks that also need the
model (does it have `loss` and, for metrics, `predict`?), the data (a Stream needs bptt_k1, early
stopping needs validation data) or the number of processes (does the data split over them?).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rnnkit.train.batches import Collate, check_data
from rnnkit.train.config import TrainConfig
from rnnkit.train.tbptt import Stream


def check_fit(
    model: Any, train_data: Any, val_data: Any, config: TrainConfig, collate: Collate | None
) -> None:
    """Raise the first problem with a `fit` call that can be seen before training starts."""
    if not callable(getattr(model, "loss", None)):
        raise TypeError(f"{type(model).__name__} has no loss(batch) method; see rnnkit.train")
    needs_predict = any(name != "perplexity" for name in config.metrics)
    if needs_predict and not callable(getattr(model, "predict", None)):
        raise TypeError(f"metrics {config.metrics} need {type(model).__name__}.predict(batch)")
    for name, data in (("train_data", train_data), ("val_data", val_data)):
        if isinstance(data, Stream) and config.bptt_k1 is None:
            raise ValueError(f"{name} is a Stream: set bptt_k1 for truncated BPTT")
        if data is not None and not isinstance(data, Stream):
            if config.bptt_k1 is not None:
                raise ValueError(f"bptt_k1 is set, so {name} must be a Stream")
            check_data(data, collate, name)
    if val_data is None:
        if config.patience is not None and config.monitor.startswith("val_"):
            raise ValueError(f"early stopping (patience) monitors {config.monitor}: pass val_data")
        if config.schedule == "plateau" and config.monitor.startswith("val_"):
            raise ValueError(f"schedule 'plateau' monitors {config.monitor}: pass val_data")
        if config.metrics:
            raise ValueError(f"metrics {config.metrics} are computed on val_data: pass val_data")
    if config.resume and config.run_dir is None:
        raise ValueError("resume=True needs run_dir, the run to continue")
    if config.checkpoint_every is not None and config.run_dir is None:
        raise ValueError("checkpoint_every needs run_dir, where checkpoints are written")


def check_lengths(lengths: Sequence[int] | None, train_data: Any) -> None:
    """`fit`'s lengths: one positive int per training sample, and not for a Stream."""
    if lengths is None:
        return
    if isinstance(train_data, Stream):
        raise ValueError("lengths groups samples into batches; a Stream has no samples to group")
    if len(lengths) != len(train_data):
        raise ValueError(
            f"lengths has {len(lengths)} entries for {len(train_data)} training samples; give "
            "one length per sample"
        )


def check_split(data: Any, batch_size: int | None, world: int) -> None:
    """Raise unless `data` and batch_size (the global batch) split evenly over `world` processes."""
    if isinstance(data, Stream) and data.num_streams % world:
        raise ValueError(
            f"a stream's {data.num_streams} rows do not split evenly over {world} processes"
        )
    if batch_size is not None and not isinstance(data, Stream) and batch_size % world:
        raise ValueError(f"batch_size {batch_size} (the global batch) must divide by {world}")
