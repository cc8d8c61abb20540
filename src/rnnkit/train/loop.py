"""`fit`: the training loop, to be read from top to bottom.

fit(model, train_data, val_data, config) checks everything it can before the first step, then
runs epochs of: zero the gradients, compute the loss, backward, skip the step if the loss or the
gradient is not finite, clip, step the optimizer (and a per-step schedule). After each epoch it
evaluates, writes a row of history, steps the plateau schedule, tracks the best epoch for early
stopping, and checkpoints. Truncated BPTT differs only in where the loss comes from
(`rnnkit.train.tbptt.window_loss`) and that the recurrent state is carried between updates.

Model contract (`rnnkit.train` knows a model only through it):
    model.loss(batch) -> scalar Tensor        batch: rnnkit.data.Batch(inputs, lengths, targets)
    model.predict(batch) -> Tensor            only when metrics need predictions
and with `config.bptt_k1` set, the stream contract of `rnnkit.train.tbptt`:
    model.loss(batch, state) -> (loss, state); model.predict(batch, state) -> (preds, state)
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from rnnkit.data.batch import Batch
from rnnkit.train import checkpoint, distributed
from rnnkit.train.batches import Collate, take, train_order
from rnnkit.train.checks import check_fit, check_lengths, check_split
from rnnkit.train.config import TrainConfig
from rnnkit.train.distributed import Context
from rnnkit.train.evaluate import evaluate_on, loss_weight
from rnnkit.train.optim import Scheduler, current_lr, make_optimizer, make_scheduler
from rnnkit.train.report import finish_run
from rnnkit.train.seeding import get_rng_state, seed_everything, set_rng_state
from rnnkit.train.tbptt import (
    State,
    Stream,
    detach_state,
    map_state,
    num_rows,
    state_rows,
    window_loss,
    windows,
)

Data = Batch | Stream | Any  # a Batch, a Stream, or indexable samples with a collate function


class NonFiniteLossError(RuntimeError):
    """Raised when too many optimizer steps in a row had a NaN/Inf loss or gradient."""


@dataclass
class Progress:
    """Where training stands. All of it goes into the checkpoint (as JSON)."""

    epoch: int = 0  # epochs finished
    batch: int = 0  # batches (TBPTT: windows) finished in the current epoch
    step: int = 0  # batches finished in all epochs, skipped ones included
    loss_sum: float = 0.0  # this epoch: sum of the finite batch losses
    grad_norm_sum: float = 0.0  # this epoch: sum of the gradient norms before clipping
    updates: int = 0  # this epoch: optimizer steps taken
    skipped: int = 0  # this epoch: steps skipped for a NaN/Inf loss or gradient
    skipped_total: int = 0  # steps skipped in the whole run
    bad_in_a_row: int = 0  # consecutive skipped steps; too many stops the run
    best: float | None = None  # best value of config.monitor so far
    best_epoch: int = 0  # the (1-based) epoch that reached it
    stopped_early: bool = False  # early stopping ended the run
    history: list[dict[str, Any]] = field(default_factory=list)  # one row per epoch


@dataclass
class Training:
    """What one step, one epoch and one checkpoint touch; fit() builds it once."""

    model: nn.Module
    objective: nn.Module  # the model's loss as forward(), inside DDP under torchrun
    optimizer: torch.optim.Optimizer
    scheduler: Scheduler | None
    config: TrainConfig
    context: Context
    progress: Progress
    best_weights: dict[str, torch.Tensor] | None = None  # kept when early stopping is on
    carry: State = None  # TBPTT: the recurrent state carried between windows
    lengths: Sequence[int] | None = None  # of each training sample: batches of similar lengths


def fit(
    model: nn.Module,
    train_data: Data,
    val_data: Data | None = None,
    config: TrainConfig | None = None,
    *,
    collate: Collate | None = None,
    run_info: dict[str, Any] | None = None,
    lengths: Sequence[int] | None = None,
) -> list[dict[str, Any]]:
    """Train `model` on `train_data`; returns the history, one dict per epoch.

    train_data / val_data: a Batch (rows are sliced into mini-batches), a Stream (with
    config.bptt_k1), or indexable samples that `collate(list_of_samples) -> Batch` batches.
    lengths: the length of each training sample (not for a Stream); given, every epoch's
    batches group samples of similar length (`rnnkit.train.batches.train_order`), so they carry
    less padding, while the batches still come in a random order.
    run_info: what a task needs to rebuild the model (task name, hyper-parameters); it is
    written into config.json next to the TrainConfig. Under torchrun the same call trains with
    DistributedDataParallel; config.batch_size is then the global batch over all processes.
    """
    config = config if config is not None else TrainConfig()
    check_fit(model, train_data, val_data, config, collate)
    check_lengths(lengths, train_data)
    context = distributed.setup(config.device)
    return _fit(model, train_data, val_data, config, collate, run_info or {}, context, lengths)


def _fit(
    model: nn.Module,
    train_data: Data,
    val_data: Data | None,
    config: TrainConfig,
    collate: Collate | None,
    run_info: dict[str, Any],
    context: Context,
    lengths: Sequence[int] | None = None,
) -> list[dict[str, Any]]:
    check_split(train_data, config.batch_size, context.world)
    check_split(val_data, None, context.world)
    seed_everything(config.seed)
    model.to(context.device)
    optimizer = make_optimizer(model, config)
    total_steps = config.epochs * _batches_per_epoch(train_data, config, context, lengths)
    t = Training(
        model=model,
        objective=distributed.wrap(model, context),  # DDP broadcasts rank 0's weights
        optimizer=optimizer,
        scheduler=make_scheduler(optimizer, config, total_steps),
        config=config,
        context=context,
        progress=Progress(),
        lengths=lengths,
    )
    _start_or_resume(t, run_info)
    p = t.progress
    model.train()
    for epoch in range(p.epoch, config.epochs):
        if p.stopped_early:
            break
        if isinstance(train_data, Stream):
            _train_stream_epoch(t, train_data, epoch)
        else:
            _train_epoch(t, train_data, collate, epoch)
        row = _epoch_row(t, epoch, val_data, collate)
        p.history.append(row)
        _end_epoch(t, row)
        if config.run_dir is not None:
            _checkpoint(t)
    if config.patience is not None and t.best_weights is not None:
        model.load_state_dict(t.best_weights)  # early stopping restores the best epoch's weights
    if context.is_main and config.run_dir is not None:
        finish_run(Path(config.run_dir), model, p.history, config, p.best_epoch, p.skipped_total)
    return p.history


def _train_epoch(t: Training, data: Any, collate: Collate | None, epoch: int) -> None:
    """One pass over mini-batches in the (seed, epoch) order; a resumed run skips the done ones."""
    config, context = t.config, t.context
    order = train_order(
        len(data), config.batch_size, config.seed, epoch, context.rank, context.world, t.lengths
    )
    bar = _progress_bar(t, len(order), epoch)
    counts_terms = context.world > 1 and hasattr(t.model, "loss_weight")
    if counts_terms:  # every process's shares: the global batch of each step
        arguments = (len(data), config.batch_size, config.seed, epoch)
        everyone = [
            train_order(*arguments, r, context.world, t.lengths) for r in range(context.world)
        ]
    for step in range(t.progress.batch, len(order)):
        rows, weight = order[step]
        batch = take(data, rows, collate).to(context.device)
        if counts_terms:  # a mean over tokens or frames: weight by this process's share of them
            shares = [each[step] for each in everyone]
            batch, weight = _share_of_terms(t, data, collate, batch, weight, shares)
        t.optimizer.zero_grad(set_to_none=True)
        with _autocast(t):
            loss, _ = t.objective(batch)
        if weight != 1.0:  # this process's share of a global batch that did not divide evenly
            loss = loss * weight
        _update(t, loss)
        _after_batch(t, bar, loss, examples=len(batch) * context.world)
    bar.close()


def _share_of_terms(
    t: Training, data: Any, collate: Collate | None, batch: Batch, weight: float, shares: list
) -> tuple[Batch, float]:
    """(the batch this process computes, the weight of its mean loss) when the model's loss is
    a mean over `loss_weight(batch)` terms (tokens, frames): world * its terms / the global
    batch's (`shares`: every process's), so that DDP's average is the mean over all the batch's
    terms. A process with no term of its own (a row at weight 0, or rows with nothing scored,
    whose mean loss is 0/0) computes a row of the global batch that has some, at weight 0."""
    terms = loss_weight(t.model, batch) if weight > 0 else 0
    total = distributed.mean_over_ranks(terms, t.context) * t.context.world
    if not total:  # nothing scored anywhere: NaN on every process, the step skipped as on one
        return batch, weight
    if terms:
        return batch, t.context.world * terms / total
    for row in (row for share in shares if share.weight > 0 for row in share.rows):
        scored = take(data, [row], collate).to(t.context.device)
        if loss_weight(t.model, scored):
            return scored, 0.0
    raise AssertionError("some process holds the global batch's terms")  # total > 0


def _train_stream_epoch(t: Training, stream: Stream, epoch: int) -> None:
    """One pass along a stream in windows of k1 steps, carrying the state between windows."""
    config, context = t.config, t.context
    assert config.bptt_k1 is not None and config.k2 is not None, "checked before training"
    stream = stream.shard(context.rank, context.world).to(context.device)
    spans = windows(stream.length, config.bptt_k1)
    bar = _progress_bar(t, len(spans), epoch)
    if t.progress.batch == 0:
        t.carry = None  # every epoch starts from a zero state
    for t0, t1 in spans[t.progress.batch :]:
        t.optimizer.zero_grad(set_to_none=True)
        with _autocast(t):
            loss, t.carry = window_loss(t.objective, t.model, stream, t.carry, t0, t1, config.k2)
        if not _update(t, loss):
            t.carry = None  # a NaN/Inf state would poison every later window
        _after_batch(t, bar, loss, examples=(t1 - t0) * stream.num_streams * context.world)
    bar.close()


def _autocast(t: Training) -> torch.autocast:
    """The training forward's precision: bfloat16 autocast with precision "bf16" (the backward
    runs outside it, as autocast wants; bfloat16 keeps float32's range, so no loss scaling)."""
    device_type = t.context.device.type
    return torch.autocast(device_type, torch.bfloat16, enabled=t.config.precision == "bf16")


def _update(t: Training, loss: torch.Tensor) -> bool:
    """Backward, the non-finite guard, clipping and the optimizer step. False when skipped."""
    config, p = t.config, t.progress
    loss.backward()  # under DDP this also averages the gradients over processes
    params = [q for q in t.model.parameters() if q.grad is not None]
    grad_norm = float(nn.utils.get_total_norm([q.grad for q in params]))
    finite = math.isfinite(loss.item()) and math.isfinite(grad_norm)
    if distributed.any_over_ranks(not finite, t.context):
        _skip_step(t)
        return False
    p.bad_in_a_row = 0
    if config.clip_value is not None:
        nn.utils.clip_grad_value_(params, config.clip_value)
    if config.clip_norm is not None:
        nn.utils.clip_grad_norm_(params, config.clip_norm)
    t.optimizer.step()
    if config.schedule == "cosine":
        t.scheduler.step()  # the cosine schedule counts optimizer steps
    p.loss_sum += loss.item()
    p.grad_norm_sum += grad_norm
    p.updates += 1
    return True


def _skip_step(t: Training) -> None:
    """Drop a step whose loss or gradient is NaN/Inf; stop after too many in a row."""
    config, p = t.config, t.progress
    t.optimizer.zero_grad(set_to_none=True)
    p.skipped += 1
    p.skipped_total += 1
    p.bad_in_a_row += 1
    if p.bad_in_a_row >= config.max_nonfinite_steps:
        raise NonFiniteLossError(
            f"the loss or the gradients were NaN/Inf in {p.bad_in_a_row} steps in a row "
            f"(epoch {p.epoch + 1}, batch {p.batch + 1}), so training stopped. Try: a lower "
            f"learning rate (lr={config.lr}); gradient clipping (clip_norm={config.clip_norm}); "
            "checking inputs and targets for NaN/Inf; a loss that never takes log(0) or divides "
            "by zero; or float32 instead of float16."
        )


def _after_batch(t: Training, bar: Any, loss: torch.Tensor, examples: int) -> None:
    """Count the batch, update the bar, and checkpoint every config.checkpoint_every steps."""
    p, config = t.progress, t.config
    p.batch += 1
    p.step += 1
    bar.update(1)
    if not bar.disable:
        seen = bar.n - bar.initial
        bar.set_postfix(
            loss=f"{loss.item():.4g}", ex_per_s=f"{seen * examples / _elapsed(bar):.0f}"
        )
    every = config.checkpoint_every
    if config.run_dir is not None and every is not None and p.step % every == 0:
        _checkpoint(t)


def _epoch_row(t: Training, epoch: int, val_data: Data | None, collate: Collate | None) -> dict:
    """The history row of an epoch: training averages (over processes) and validation metrics."""
    p, context = t.progress, t.context
    updates = p.updates if p.updates else math.nan  # every step skipped: the means are NaN
    row: dict[str, Any] = {
        "epoch": epoch + 1,
        "step": p.step,
        "lr": current_lr(t.optimizer),
        "train_loss": distributed.mean_over_ranks(p.loss_sum / updates, context),
        "grad_norm": distributed.mean_over_ranks(p.grad_norm_sum / updates, context),
        "skipped_steps": p.skipped,
    }
    if val_data is not None:
        scores = evaluate_on(t.model, val_data, t.config.metrics, t.config, collate, context)
        row.update({f"val_{name}": value for name, value in scores.items()})
        t.model.train()
    return row


def _end_epoch(t: Training, row: dict[str, Any]) -> None:
    """Plateau schedule, best epoch, early stopping; then reset the epoch's counters."""
    config, p = t.config, t.progress
    value = row.get(config.monitor)
    if config.schedule == "plateau":
        t.scheduler.step(value)
    if value is not None and _improved(value, p.best, config.monitor_mode, config.min_delta):
        p.best, p.best_epoch = value, row["epoch"]
        if config.patience is not None:
            t.best_weights = {k: v.detach().clone() for k, v in t.model.state_dict().items()}
    if config.patience is not None and row["epoch"] - p.best_epoch >= config.patience:
        p.stopped_early = True
    p.epoch, p.batch = row["epoch"], 0
    p.loss_sum, p.grad_norm_sum, p.updates, p.skipped = 0.0, 0.0, 0, 0
    if t.context.is_main and config.run_dir is not None:
        checkpoint.write_csv(Path(config.run_dir) / "history.csv", p.history)
    if _progress_bar_enabled(t):
        tqdm.write(
            " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items())
        )


def _improved(value: float, best: float | None, mode: str, min_delta: float) -> bool:
    if best is None:
        return not math.isnan(value)
    return value < best - min_delta if mode == "min" else value > best + min_delta


# --- checkpoints ------------------------------------------------------------------------------


def _checkpoint(t: Training) -> None:
    """Write everything `resume` needs. Every process calls it; rank 0 writes.

    Weights, optimizer and RNG states are equal on all processes; what differs per process (the
    epoch's partial loss sum, the carried state of its stream rows) is reduced or gathered first.
    """
    progress = asdict(t.progress)
    progress["loss_sum"] = distributed.mean_over_ranks(t.progress.loss_sum, t.context)
    carry = distributed.gather_rows(detach_state(t.carry), t.context)  # all rows of the stream
    if not t.context.is_main:
        return
    parts = {
        "progress": progress,
        "model": t.model.state_dict(),
        "optimizer": t.optimizer.state_dict(),
        "scheduler": t.scheduler.state_dict() if t.scheduler is not None else None,
        "best_weights": t.best_weights,
        "carry": carry,
        "rng": get_rng_state(),
    }
    checkpoint.save_checkpoint(t.config.run_dir, parts)


def _start_or_resume(t: Training, run_info: dict[str, Any]) -> None:
    """Load the last checkpoint when resuming, else clear run_dir and write a new config.json."""
    config = t.config
    if config.run_dir is None:
        return
    run_dir = Path(config.run_dir)
    model_class = f"{type(t.model).__module__}.{type(t.model).__qualname__}"
    saved = checkpoint.load_checkpoint(run_dir) if config.resume else None
    if saved is None:
        if t.context.is_main:
            checkpoint.remove_run(run_dir)  # a new run replaces what run_dir held
            checkpoint.write_run_config(run_dir, config.to_json(), model_class, run_info)
        return
    checkpoint.check_resumable(run_dir, config.to_json(), model_class, run_info)
    t.model.load_state_dict(saved["model"])
    t.optimizer.load_state_dict(saved["optimizer"])
    if t.scheduler is not None:
        t.scheduler.load_state_dict(saved["scheduler"])
    t.progress = Progress(**saved["progress"])
    t.best_weights = saved["best_weights"]
    t.carry = _own_carry(saved["carry"], t.context)
    set_rng_state(saved["rng"])
    if t.context.is_main:  # config.json records the run as resumed: its epochs, device, place
        checkpoint.write_run_config(run_dir, config.to_json(), model_class, run_info)


def _own_carry(carry: State, context: Context) -> State:
    """This process's rows of a saved TBPTT state (the rows `Stream.shard` gives it)."""
    if carry is not None and context.world > 1:
        share = num_rows(carry) // context.world
        carry = state_rows(carry, context.rank * share, (context.rank + 1) * share)
    return map_state(lambda tensor: tensor.to(context.device), carry)


# --- checks and small helpers -----------------------------------------------------------------


def _batches_per_epoch(
    train_data: Data, config: TrainConfig, context: Context, lengths: Sequence[int] | None
) -> int:
    if isinstance(train_data, Stream):
        return len(windows(train_data.length, config.bptt_k1))
    n, world = len(train_data), context.world
    return len(train_order(n, config.batch_size, config.seed, 0, 0, world, lengths))


def _progress_bar_enabled(t: Training) -> bool:
    return t.config.progress and t.context.is_main and sys.stderr.isatty()


def _progress_bar(t: Training, total: int, epoch: int) -> Any:
    return tqdm(
        total=total,
        initial=t.progress.batch,
        desc=f"epoch {epoch + 1}/{t.config.epochs}",
        unit="batch",
        leave=False,
        disable=not _progress_bar_enabled(t),
    )


def _elapsed(bar: Any) -> float:
    return max(bar.format_dict["elapsed"], 1e-9)
