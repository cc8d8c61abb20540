"""`evaluate`: the mean loss and named metrics of a model on a data set, in eval mode.

`fit` calls `evaluate_on` after every epoch; users call `evaluate`. The loss is the mean over
what each batch's loss averages: its sequences, or what the model's optional
`loss_weight(batch)` counts (tokens, frames); over a stream, its time steps. Batches and
streams are read in the same order as in training (`rnnkit.train.batches`,
`rnnkit.train.tbptt`); under torch.distributed each process evaluates its share and `MetricSet`
reduces the results, so every process returns the numbers of the whole data set.
"""

from __future__ import annotations

import torch
from torch import nn

from rnnkit.data.batch import Batch
from rnnkit.train import distributed
from rnnkit.train.batches import Collate, check_data, eval_order, take
from rnnkit.train.checks import check_split
from rnnkit.train.config import TrainConfig
from rnnkit.train.distributed import Context
from rnnkit.train.metrics import MetricSet, check_metric
from rnnkit.train.tbptt import State, Stream, run_segments, stream_loss, windows


def evaluate(
    model: nn.Module,
    data: object,
    metrics: tuple[str, ...] | list[str] = (),
    config: TrainConfig | None = None,
    *,
    collate: Collate | None = None,
) -> dict[str, float]:
    """{"loss": mean loss, metric: value, ...} of `model` on `data`, in eval mode, no gradients.

    data: a Batch, a Stream or indexable samples with `collate`, as for `fit`. config supplies
    eval_batch_size (or batch_size), num_classes, ignore_index and, for a Stream, bptt_k1 (the
    window length; None reads each row in one piece).
    """
    config = config if config is not None else TrainConfig()
    for name in metrics:
        check_metric(name, config.num_classes)
    if not isinstance(data, Stream):
        check_data(data, collate, "data")
    context = distributed.setup(config.device)
    check_split(data, None, context.world)
    return evaluate_on(model, data, tuple(metrics), config, collate, context)


@torch.no_grad()
def evaluate_on(
    model: nn.Module,
    data: object,
    metrics: tuple[str, ...],
    config: TrainConfig,
    collate: Collate | None,
    context: Context,
) -> dict[str, float]:
    """`evaluate` for a process in `context`, with the inputs already checked."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    scores = MetricSet(metrics, config.num_classes, config.ignore_index, device)
    if isinstance(data, Stream):
        _evaluate_stream(model, data.shard(context.rank, context.world).to(device), scores, config)
    else:
        batch_size = config.eval_batch_size or config.batch_size
        for indices in eval_order(len(data), batch_size, context.rank, context.world):
            batch = take(data, indices, collate).to(device)
            scores.update_loss(model.loss(batch), weight=loss_weight(model, batch))
            if scores.needs_predictions:
                scores.update(model.predict(batch), batch.targets)
    model.train(was_training)
    return scores.compute()


def loss_weight(model: nn.Module, batch: Batch) -> int:
    """How many terms `model.loss(batch)` is the mean of: `model.loss_weight(batch)` when the
    model defines it (tokens, frames), else the batch's sequences."""
    count = getattr(model, "loss_weight", None)
    return int(count(batch)) if count is not None else len(batch)


def _evaluate_stream(
    model: nn.Module, stream: Stream, scores: MetricSet, config: TrainConfig
) -> None:
    """Evaluate along a stream in windows of k1 steps, carrying the state like training does."""
    loss_state: State = None
    predict_state: State = None
    for t0, t1 in windows(stream.length, config.bptt_k1 or stream.length):
        piece = stream.window(t0, t1)
        loss, loss_state = stream_loss(model, piece, loss_state)
        scores.update_loss(loss, weight=piece.length * piece.num_streams)
        if scores.needs_predictions:
            outputs, predict_state = run_segments(model.predict, piece, predict_state)
            scores.update(torch.cat([preds for _, preds in outputs], dim=1), piece.targets)
