"""Optimizers and learning-rate schedules named in `TrainConfig`.

optimizer "adamw": torch.optim.AdamW (decoupled weight decay), "sgd": SGD with momentum.
schedule "cosine": linear warm-up over `warmup_steps` optimizer steps (step s of them at
lr * (s + 1) / warmup_steps), then a half cosine from lr that reaches `min_lr` when training
ends (the last step runs just above it); stepped after every optimizer step.
schedule "plateau": ReduceLROnPlateau on `monitor`, stepped once per epoch: lr is multiplied by
`plateau_factor` after `plateau_patience` epochs in a row without an improvement of more than
`min_delta` (as early stopping counts them).
Both are torch schedulers, so their `state_dict()` (plain numbers) goes into the checkpoint.
"""

from __future__ import annotations

import functools
import math

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, ReduceLROnPlateau

from rnnkit.train.config import TrainConfig

Scheduler = LRScheduler | ReduceLROnPlateau


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """The optimizer over the model's trainable parameters."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters")
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
        )
    assert config.optimizer == "adamw", "TrainConfig checks the optimizer name"
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)


def make_scheduler(
    optimizer: torch.optim.Optimizer, config: TrainConfig, total_steps: int
) -> Scheduler | None:
    """The schedule of `config.schedule` (None for a constant learning rate)."""
    if config.schedule == "cosine":
        factor = functools.partial(
            cosine_factor,
            warmup_steps=config.warmup_steps,
            total_steps=total_steps,
            min_ratio=config.min_lr / config.lr,
        )
        return LambdaLR(optimizer, factor)
    if config.schedule == "plateau":
        return ReduceLROnPlateau(  # torch reduces after patience + 1 bad epochs
            optimizer,
            mode=config.monitor_mode,
            factor=config.plateau_factor,
            patience=config.plateau_patience - 1,
            threshold=config.min_delta,  # an improvement as early stopping counts one
            threshold_mode="abs",
            min_lr=config.min_lr,
        )
    return None


def cosine_factor(step: int, warmup_steps: int, total_steps: int, min_ratio: float) -> float:
    """lr / peak lr at optimizer step `step` (0-based): linear warm-up, then a half cosine."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def current_lr(optimizer: torch.optim.Optimizer) -> float:
    """The learning rate of the first parameter group."""
    return float(optimizer.param_groups[0]["lr"])
