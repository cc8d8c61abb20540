"""Truncated backpropagation through time over long streams, and the contract it needs.

A `Stream` holds S parallel sequences of length L (language-model text cut into S rows, a long
series). Training reads it in windows of k1 steps and carries the recurrent state from one window
to the next; each update backpropagates through the last k2 <= k1 steps of its window only
(Williams and Peng's BPTT(k1, k2); k1 = k2 is the common case):

    window [t0, t1), t1 - t0 = k1:   t0 ...... t1-k2 ............ t1
                                     |no grad |  loss + backward  |
                                     state only advances

The state is detached at every window start, so no gradient reaches an earlier window. Where
`starts[s, t]` is True a new document begins in row s: its state is reset to zeros before step t.

Stream model contract (an extension of `loss(batch)` used only when `TrainConfig.bptt_k1` is set):

    model.loss(batch, state) -> (loss, new_state)      # loss: scalar mean over the window
    model.predict(batch, state) -> (preds, new_state)  # only for metrics that need predictions

`batch` is a `Batch` of one window (inputs (S, T_w, ...), lengths None, targets (S, T_w, ...)),
`state` is None (start from zeros) or what the previous call returned: a tensor or a tuple/list
of tensors, each with the batch on dimension -2, as torch.nn's (num_layers * D, S, H) hidden and
cell states are. The training loop only detaches the state and zeroes rows of it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

import torch

from rnnkit.data.batch import Batch

State = Any  # None, a tensor, or a tuple/list of states; batch on dimension -2


@dataclass
class Stream:
    """S parallel long sequences, read along time in windows.

    inputs:  (S, L, ...) tensor, or a dict of such tensors
    targets: (S, L, ...) tensor, or a dict of such tensors, aligned with inputs step by step
    starts:  (S, L) bool or None; True where a new document begins (its state starts at zeros)
    """

    inputs: Any
    targets: Any
    starts: torch.Tensor | None = None

    def __post_init__(self) -> None:
        shapes = [t.shape[:2] for t in _tensors(self.inputs) + _tensors(self.targets)]
        if not shapes or any(len(s) < 2 for s in shapes):
            raise ValueError("Stream inputs and targets must be tensors shaped (S, L, ...)")
        if len(set(shapes)) != 1:
            raise ValueError(
                f"Stream inputs and targets must share (S, L), got {sorted(set(shapes))}"
            )
        if self.starts is not None and (
            self.starts.dtype != torch.bool or self.starts.shape != shapes[0]
        ):
            raise ValueError(f"Stream.starts must be a bool tensor shaped {tuple(shapes[0])}")

    @property
    def num_streams(self) -> int:
        """S, the rows processed side by side (the batch of every window)."""
        return int(_tensors(self.inputs)[0].shape[0])

    @property
    def length(self) -> int:
        """L, the time steps of each row."""
        return int(_tensors(self.inputs)[0].shape[1])

    def window(self, t0: int, t1: int) -> Stream:
        """Time steps [t0, t1) of every row."""
        return Stream(**{f.name: _slice(getattr(self, f.name), 1, t0, t1) for f in fields(self)})

    def rows(self, r0: int, r1: int) -> Stream:
        """Rows [r0, r1) (the share of one process under torchrun)."""
        return Stream(**{f.name: _slice(getattr(self, f.name), 0, r0, r1) for f in fields(self)})

    def shard(self, rank: int, world: int) -> Stream:
        """The rows process `rank` of `world` trains on: an equal, contiguous share."""
        assert self.num_streams % world == 0, "fit() checks that the rows split evenly"
        share = self.num_streams // world
        return self.rows(rank * share, (rank + 1) * share)

    def to(self, device: torch.device | str) -> Stream:
        """A copy with every tensor on `device`."""
        return Stream(**{f.name: _to(getattr(self, f.name), device) for f in fields(self)})

    def as_batch(self) -> Batch:
        """The whole piece as the Batch a model sees (lengths None: every row is full)."""
        return Batch(inputs=self.inputs, lengths=None, targets=self.targets)


def _tensors(value: Any) -> list[torch.Tensor]:
    return list(value.values()) if isinstance(value, dict) else [value]


def _to(value: Any, device: torch.device | str) -> Any:
    if isinstance(value, dict):
        return {key: v.to(device) for key, v in value.items()}
    return None if value is None else value.to(device)


def _slice(value: Any, dim: int, start: int, stop: int) -> Any:
    if isinstance(value, dict):
        return {key: v.narrow(dim, start, stop - start) for key, v in value.items()}
    return None if value is None else value.narrow(dim, start, stop - start)


def windows(length: int, k1: int) -> list[tuple[int, int]]:
    """The [t0, t1) windows of k1 steps covering `length` steps (the last may be shorter)."""
    return [(t0, min(t0 + k1, length)) for t0 in range(0, length, k1)]


def map_state(fn: Callable[[torch.Tensor], torch.Tensor], state: State) -> State:
    """Apply `fn` to every tensor of a state, keeping its structure (None stays None)."""
    if isinstance(state, torch.Tensor):
        return fn(state)
    if isinstance(state, (tuple, list)):
        return type(state)(map_state(fn, s) for s in state)
    return state


def detach_state(state: State) -> State:
    """The same state cut from the graph: gradients stop here."""
    return map_state(torch.Tensor.detach, state)


def num_rows(state: State) -> int:
    """S, the rows of a (non-None) state: its size on dimension -2."""
    while isinstance(state, (tuple, list)):
        state = state[0]
    return int(state.shape[-2])


def state_rows(state: State, start: int, stop: int) -> State:
    """Rows [start, stop) of a state (batch on dimension -2)."""
    return map_state(lambda t: t.narrow(-2, start, stop - start), state)


def reset_rows(state: State, mask: torch.Tensor) -> State:
    """Zero the state of rows where `mask` (S,) is True; the other rows keep theirs."""

    def reset(tensor: torch.Tensor) -> torch.Tensor:
        if tensor.dim() < 2 or tensor.shape[-2] != mask.shape[0]:
            raise ValueError(
                f"a state tensor of shape {tuple(tensor.shape)} does not have the batch "
                f"({mask.shape[0]}) on dimension -2, as torch.nn's (num_layers, B, H) states do"
            )
        return tensor.masked_fill(mask.to(tensor.device)[:, None], 0.0)

    return map_state(reset, state)  # None: every row starts from zeros already


def run_segments(
    step: Callable[[Batch, State], tuple[Any, State]], piece: Stream, state: State
) -> tuple[list[tuple[int, Any]], State]:
    """Call `step(batch, state) -> (output, state)` along `piece`, split where documents start.

    Returns [(steps, output), ...] per segment and the final state.
    """
    bounds = [0, piece.length]
    if piece.starts is not None:
        columns = torch.nonzero(piece.starts.any(dim=0)).flatten().tolist()
        bounds = sorted(set(bounds + columns))
    outputs = []
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        if piece.starts is not None:
            state = reset_rows(state, piece.starts[:, a])  # a new document starts from zeros
        output, state = step(piece.window(a, b).as_batch(), state)
        outputs.append((b - a, output))
    return outputs, state


def stream_loss(model: Any, piece: Stream, state: State) -> tuple[torch.Tensor, State]:
    """The model's loss over `piece` (mean over its steps) and the state after it."""
    outputs, state = run_segments(model.loss, piece, state)
    loss = sum(steps * loss for steps, loss in outputs) / piece.length
    return loss, state


def window_loss(
    objective: Callable[[Stream, State], tuple[torch.Tensor, State]],
    model: Any,
    stream: Stream,
    state: State,
    t0: int,
    t1: int,
    k2: int,
) -> tuple[torch.Tensor, State]:
    """The loss of one TBPTT update over window [t0, t1), with gradient through its last k2 steps.

    `objective(piece, state)` computes the loss with gradient (`stream_loss`, or the same under
    DistributedDataParallel); the steps before t1 - k2 only advance the state.
    """
    state = detach_state(state)  # truncation: no gradient flows into earlier windows
    split = max(t0, t1 - k2)
    if split > t0:
        with torch.no_grad():  # the first k1 - k2 steps run forward only
            _, state = stream_loss(model, stream.window(t0, split), state)
    return objective(stream.window(split, t1), state)  # backpropagates through k2 steps
