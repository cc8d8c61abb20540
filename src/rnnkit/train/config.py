"""`TrainConfig`: every knob of `fit` and `evaluate` in one flat, frozen dataclass.

A config checks itself when it is made (`__post_init__`), so a bad value such as a negative
learning rate or `bptt_k2 > bptt_k1` fails before any data is touched. Checks that need the data
(early stopping without validation data, a stream without `bptt_k1`) live in `rnnkit.train.loop`.
The config is plain JSON (`dataclasses.asdict`) and is written to the run's `config.json`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch

from rnnkit.train.metrics import check_metric, higher_is_better

OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("plateau", "cosine")
PRECISIONS = ("32", "bf16")


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of a training run. Each field maps one-to-one onto a command-line flag."""

    # --- data and length of training
    epochs: int = 10  # passes over the training data
    batch_size: int = 32  # sequences per optimizer step, summed over all processes under torchrun
    eval_batch_size: int | None = None  # sequences per evaluation batch (None: batch_size)
    # --- optimizer
    optimizer: str = "adamw"  # "adamw" (decoupled weight decay) or "sgd" (with momentum)
    lr: float = 1e-3  # peak learning rate
    weight_decay: float = 0.0  # AdamW's decoupled decay; SGD's L2 penalty
    momentum: float = 0.9  # SGD only
    # --- learning-rate schedule
    schedule: str | None = None  # None (constant), "plateau" or "cosine"
    warmup_steps: int = 0  # cosine: optimizer steps of linear warm-up up to lr (lr / W first)
    min_lr: float = 0.0  # cosine: the lr it decays to; plateau: the lowest lr it reduces to
    plateau_factor: float = 0.5  # plateau: lr is multiplied by this when `monitor` stalls
    plateau_patience: int = 2  # plateau: epochs in a row without improvement, then a reduction
    # --- gradient clipping
    clip_norm: float | None = 1.0  # rescale gradients to total L2 norm <= this (None: off)
    clip_value: float | None = None  # clamp each gradient element to [-v, v] (None: off)
    # --- truncated backpropagation through time (streams only, see rnnkit.train.tbptt)
    bptt_k1: int | None = None  # time steps run forward between updates (None: no TBPTT)
    bptt_k2: int | None = None  # time steps backpropagated per update, <= k1 (None: k1)
    # --- metrics and early stopping
    metrics: tuple[str, ...] = ()  # torchmetrics by name, computed on val data every epoch
    num_classes: int | None = None  # classes, for accuracy / f1 / precision / recall
    ignore_index: int | None = None  # target value classification metrics skip (padding)
    monitor: str = "val_loss"  # history column watched by early stopping and "plateau"
    patience: int | None = None  # early stopping: epochs without improvement (None: off)
    min_delta: float = 0.0  # early stopping: the smallest change that counts as improvement
    # --- reproducibility, devices, files
    seed: int = 0  # seeds torch, numpy and random, and the data order of every epoch
    device: str | None = None  # None: "cuda" when available (cuda:LOCAL_RANK under torchrun)
    precision: str = "32"  # "32", or "bf16": training steps' forward under bfloat16 autocast
    run_dir: str | None = None  # the run directory to write; None writes nothing
    checkpoint_every: int | None = None  # checkpoint also every N steps (always each epoch)
    resume: bool = False  # continue from run_dir's last checkpoint when there is one
    max_nonfinite_steps: int = 10  # NaN/Inf steps in a row that stop the run
    progress: bool = True  # tqdm bar on a terminal (never when stderr is not a TTY)

    def __post_init__(self) -> None:
        object.__setattr__(self, "metrics", tuple(self.metrics))  # lists from JSON or the CLI
        _check_positive(self, "epochs", "batch_size", "max_nonfinite_steps", "plateau_patience")
        _check_positive(self, "eval_batch_size", "bptt_k1", "bptt_k2", "checkpoint_every")
        _check_positive(self, "num_classes", "patience", "clip_norm", "clip_value")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a finite number > 0, got {self.lr}")
        for name in ("weight_decay", "min_lr", "min_delta", "warmup_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")
        if not 0 < self.plateau_factor < 1:
            raise ValueError(f"plateau_factor must be in (0, 1), got {self.plateau_factor}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.schedule is not None and self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be None or one of {SCHEDULES}, got {self.schedule!r}")
        if self.device is not None:
            try:
                kind = torch.device(self.device).type
            except (RuntimeError, TypeError):
                kind = "meta"  # not a device at all: the same message
            if kind == "meta":  # meta tensors hold no numbers to train
                raise ValueError(
                    f"device must name a torch device such as 'cpu', 'cuda' or 'cuda:1', "
                    f"got {self.device!r}"
                )
        if self.min_lr >= self.lr and self.schedule is not None:
            raise ValueError(f"min_lr ({self.min_lr}) must be below lr ({self.lr})")
        self._check_bptt()
        self._check_metrics()

    def _check_bptt(self) -> None:
        if self.bptt_k2 is not None and self.bptt_k1 is None:
            raise ValueError("bptt_k2 is set but bptt_k1 is not; set bptt_k1 to use truncated BPTT")
        if self.bptt_k1 is not None and self.bptt_k2 is not None and self.bptt_k2 > self.bptt_k1:
            raise ValueError(
                f"bptt_k2 ({self.bptt_k2}) must be <= bptt_k1 ({self.bptt_k1}): each update "
                "backpropagates through at most the k1 steps run since the previous one"
            )

    def _check_metrics(self) -> None:
        for name in self.metrics:
            check_metric(name, self.num_classes)
        if len(set(self.metrics)) != len(self.metrics):
            raise ValueError(f"metrics are listed twice: {self.metrics}")
        columns = ("train_loss", "val_loss", *(f"val_{name}" for name in self.metrics))
        if self.monitor not in columns:
            raise ValueError(
                f"monitor must be one of {columns}, got {self.monitor!r} "
                "(a metric must be listed in `metrics` to be monitored)"
            )

    @property
    def k2(self) -> int | None:
        """Steps backpropagated per TBPTT update (bptt_k2, or bptt_k1 when unset)."""
        return self.bptt_k2 if self.bptt_k2 is not None else self.bptt_k1

    @property
    def monitor_mode(self) -> str:
        """Return "max" when a larger `monitor` value is better (accuracy, f1, r2), else "min"."""
        metric = self.monitor.removeprefix("val_").removeprefix("train_")
        return "max" if metric != "loss" and higher_is_better(metric) else "min"

    def to_json(self) -> dict[str, Any]:
        """The config as a JSON-ready dict (what `config.json` stores under "train")."""
        return asdict(self)

    @classmethod
    def from_json(cls, values: dict[str, Any]) -> TrainConfig:
        """Rebuild a config written by `to_json`; unknown keys are an error."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown TrainConfig fields: {unknown}")
        return cls(**values)


def _check_positive(config: TrainConfig, *names: str) -> None:
    for name in names:
        value = getattr(config, name)
        if value is not None and not value > 0:
            raise ValueError(f"{name} must be > 0 (or None where allowed), got {value}")
