"""The time loop: `Recurrent(cell)` and the drop-in layers `RNN`, `LSTM`, `GRU`.

`Recurrent` runs any cell (see the protocol in `rnnkit.cells`) over time, with lengths, two
directions, stacked layers, dropout between layers and `step()` for streaming. `RNN`, `LSTM` and
`GRU` are `Recurrent` over rnnkit's cells with torch.nn's constructor, `state_dict` keys, inputs
and outputs, so they replace torch.nn.RNN/LSTM/GRU without other changes.

Two routes through time: the reference loop over the cells (the specification) and torch's
fused kernels (`rnnkit.kernels.torch_fused`), chosen by `backend=`. Input checking and state
layout live in `rnnkit._sequence`; the math of one step in `rnnkit.cells`.
"""

from __future__ import annotations

import copy
import functools
import re
import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

from rnnkit import _sequence as seqs
from rnnkit import kernels
from rnnkit.cells import ElmanCell, GRUCell, LSTMCell, State
from rnnkit.kernels import torch_fused
from rnnkit.variants import Variant, VariantElmanCell, VariantGRUCell, VariantLSTMCell

BACKENDS = ("auto", "reference", "torch", "numba")
_NUMBA_KINDS = {"GRU": "gru", "RNN_TANH": "rnn_tanh", "RNN_RELU": "rnn_relu"}


def _first(state: State) -> Tensor:
    return state[0] if isinstance(state, tuple) else state


def _where(mask: Tensor, new: State, old: State) -> State:
    if isinstance(new, tuple):
        return tuple(torch.where(mask, n, o) for n, o in zip(new, old, strict=True))
    return torch.where(mask, new, old)


def reset_state(state: State, reset: Tensor) -> State:
    """Zero the states of the samples where `reset` (B,) is True; others are untouched.

    `state` is in torch.nn's layout: a tensor (D*L, B, H) or a tuple of them (LSTM's (h, c)).
    """
    reset = seqs._check_tensor("reset", reset)
    if reset.dtype != torch.bool:
        raise TypeError(
            f"reset must be a bool tensor, True where a sample starts afresh; got {reset.dtype}"
        )
    batch = _first(state).shape[1]
    if reset.shape != (batch,):
        raise ValueError(
            f"reset must have shape ({batch},), one flag per sample, got {tuple(reset.shape)}"
        )
    keep = ~reset.to(_first(state).device).view(1, -1, 1)
    if isinstance(state, tuple):
        return tuple(s * keep for s in state)
    return state * keep


def run_cell(
    cell: nn.Module,
    x: Tensor,
    state: State,
    lengths: Tensor | None,
    reverse: bool,
    *,
    whole: bool = True,
):
    """The reference loop: one cell over x (T, B, H_in) from `state`.

    Returns (outputs (T, B, H_out), final state). Past a sequence's length its output is zero and
    its state stops changing; in reverse each sequence starts at its own last step.

    Two optional hooks of the cell protocol: a cell with `sequence(x, state, lengths, reverse)`
    computes the whole sequence at once with these semantics (minGRU's scan) unless
    `whole=False`, which runs the step loop; a cell with `begin(batch, like)` gives the step
    function for this sequence (its per-sequence random draws fixed), called once before the loop.
    """
    if whole and hasattr(cell, "sequence"):
        return cell.sequence(x, state, lengths, reverse)
    step = cell.begin(x.shape[1], x) if hasattr(cell, "begin") else cell
    steps = x.shape[0]
    valid = None if lengths is None else (torch.arange(steps, device=x.device)[:, None] < lengths)
    outputs: list[Tensor] = [x] * steps
    for t in reversed(range(steps)) if reverse else range(steps):
        new = step(x[t], state)
        if valid is None:
            state = new
            outputs[t] = _first(new)
        else:
            mask = valid[t, :, None]  # (B, 1)
            state = _where(mask, new, state)
            outputs[t] = torch.where(mask, _first(new), 0.0)
    return torch.stack(outputs), state


class Recurrent(nn.Module):
    """Run a cell over time, in one or two directions, over one or more stacked layers.

    Args:
        cell: a cell module (see `rnnkit.cells`) or a factory `input_size -> cell`. A module
            serves the first layer; the other layers and the reverse direction get fresh deep
            copies of it (so they must share its input size), or pass a factory for deep stacks.
        input_size: the features of the input, needed with a factory; else the cell's.
        num_layers: stacked layers; each one's input is the output of the one below.
        bidirectional: also run each layer backwards in time and concatenate (D = 2).
        dropout: dropout on the outputs of every layer but the last, in training.
        batch_first: input and output are (B, T, H) rather than (T, B, H).
        backend: "auto" (the fastest route proven equal to the reference, by measurement:
            `rnnkit.kernels.numba_is_faster`), "reference" (the loop over the cells),
            "torch" (torch's fused kernels) or "numba" (compiled CPU kernels, GRU and RNN);
            the last two serve the torch.nn configurations of `RNN`, `LSTM`, `GRU` only.

    Inputs: input (T, B, H_in) | (B, T, H_in) | (T, H_in) | PackedSequence, hx (the cells' states
    stacked as (D*num_layers, B, H) like torch.nn), lengths (B,) of ints, on any device.
    Outputs: (output (T, B, D*H_out) in the input's layout, final state like hx).
    """

    fused_mode: str | None = None  # the torch kernel that serves this configuration, if any

    def __init__(
        self,
        cell: nn.Module | Callable[[int], nn.Module],
        num_layers: int = 1,
        bidirectional: bool = False,
        dropout: float = 0.0,
        batch_first: bool = False,
        *,
        input_size: int | None = None,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        if not isinstance(num_layers, int) or num_layers < 1:
            raise ValueError(f"num_layers must be an int >= 1, got {num_layers!r}")
        if (
            not isinstance(dropout, (int, float))
            or not 0 <= dropout <= 1
            or isinstance(dropout, bool)
        ):
            raise ValueError(f"dropout must be a number in [0, 1], got {dropout!r}")
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        if backend == "torch" and self.fused_mode is None:
            raise ValueError(
                "backend='torch' serves the torch.nn configurations of RNN, LSTM and GRU only"
            )
        if backend == "numba" and self.fused_mode not in (None, *_NUMBA_KINDS):
            raise ValueError(
                "backend='numba' serves GRU and RNN and the variant layers only; "
                "use 'auto' or 'torch' for the plain LSTM"
            )
        if dropout > 0 and num_layers == 1:
            warnings.warn(
                f"dropout={dropout} acts between stacked layers; with num_layers=1 it does nothing",
                stacklevel=2,
            )
        self.num_layers = num_layers
        self.bidirectional = bool(bidirectional)
        self.dropout = float(dropout)
        self.batch_first = bool(batch_first)
        self.backend = backend
        self.cells = nn.ModuleList(self._build_cells(cell, input_size))
        self.input_size = self.cells[0].input_size
        self.hidden_size = self.cells[0].hidden_size
        self._stream: tuple[int, list[Callable]] | None = None  # step(): (batch, step functions)

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    def _build_cells(self, cell, input_size: int | None) -> list[nn.Module]:
        if isinstance(cell, nn.Module):
            template, make = cell, None
        else:
            if input_size is None:
                raise ValueError("Recurrent(factory) needs input_size=")
            template, make = cell(input_size), cell
        cells = []
        for layer in range(self.num_layers):
            wanted = (
                template.input_size if layer == 0 else template.output_size * self.num_directions
            )
            for direction in range(self.num_directions):
                if layer == 0 and direction == 0:
                    cells.append(template)
                elif make is not None:
                    cells.append(make(wanted))
                elif wanted == template.input_size:
                    cells.append(_fresh_copy(template))
                else:
                    raise ValueError(
                        f"layer {layer} needs a cell with input_size={wanted}, but a cell module "
                        f"serves one input size; pass a factory: "
                        f"Recurrent(lambda n: MyCell(n, ...), input_size=..., num_layers=...)"
                    )
        return cells

    def reset_parameters(self) -> None:
        """Initialise every cell's parameters afresh, as the constructor did (torch.nn's
        `reset_parameters`: after `to_empty()` from the meta device, or to start over)."""
        for cell in self._modules["cells"]:
            reset = getattr(cell, "reset_parameters", None)
            if reset is None:
                raise TypeError(
                    f"the cell {type(cell).__name__} has no reset_parameters(); give it one, "
                    "or initialise its parameters yourself"
                )
            reset()

    def _zero_states(self, batch: int, like: Tensor) -> list[State]:
        """Each cell's initial state; a cell without `zero_state` starts from zeros (B, H)."""
        return [
            c.zero_state(batch, like)
            if hasattr(c, "zero_state")
            else like.new_zeros(batch, c.hidden_size)
            for c in self.cells
        ]

    def _route(self, x: Tensor) -> str:
        """ "reference", "torch" or "numba": which route runs this input (T, B, H_in)."""
        if self.fused_mode is None:
            return self._variant_route(x)
        if self.backend == "reference":
            return "reference"
        if self.backend != "auto":
            if self.backend == "numba":
                _check_numba_input(x)
            return self.backend
        kind = _NUMBA_KINDS.get(self.fused_mode)
        if kind is None or not seqs.numba_can_read(x):
            return "torch"
        training = torch.is_grad_enabled() and (
            x.requires_grad or any(p.requires_grad for p in self.parameters())
        )
        steps, batch = x.shape[:2]
        fast = kernels.numba_is_faster(kind, batch, self.hidden_size, steps, training)
        return "numba" if fast else "torch"

    def _variant_route(self, x: Tensor) -> str:
        """ "reference", "numba" or "plain" for a layer without a torch kernel: the compiled
        variant kernel (`kernels.variant_sequence`) where its cells have one and it is measured
        faster than the loop (`kernels.variant_numba_is_faster`), or where backend="numba" asks.
        "plain": in eval, a layer whose only options are recurrent dropout and weight drop (off
        in eval) computes torch.nn's layer, so torch's fused kernel serves it where it is the
        fastest route of that torch.nn layer (`_plain_fused`)."""
        kinds = {kernels.variant_kind(cell) for cell in self.cells}
        if self.backend == "reference" or None in kinds:
            if self.backend == "numba":
                raise ValueError(
                    "backend='numba' runs the variant cells of RNN, LSTM and GRU (Elman with "
                    "tanh or relu); these cells have no compiled kernel"
                )
            return "reference"
        if self.backend == "numba":
            _check_numba_input(x)
            return "numba"
        training = torch.is_grad_enabled() and (
            x.requires_grad or any(p.requires_grad for p in self.parameters())
        )
        steps, batch = x.shape[:2]
        kind, hidden = kinds.pop(), self.hidden_size
        cpu = seqs.numba_can_read(x)
        if self._plain_in_eval() and not (  # unless torch.nn's GRU or RNN would go to Numba
            cpu and kind != "lstm" and kernels.numba_is_faster(kind, batch, hidden, steps, training)
        ):
            return "plain"
        if not cpu:
            return "reference"
        fast = kernels.variant_numba_is_faster(kind, batch, hidden, steps, training)
        return "numba" if fast else "reference"

    def _plain_in_eval(self) -> bool:
        """Whether this variant layer, in its current mode, computes torch.nn's layer `self.mode`:
        in eval with no option on but recurrent dropout, weight drop (and LSTM's projection)."""
        return not self.training and self._plain_variant()

    def _plain_variant(self) -> bool:
        """Whether this variant layer computes torch.nn's layer `self.mode` in eval."""
        variant = getattr(self, "variant", None)
        if variant is None or getattr(self, "mode", None) is None:
            return False
        on = {name.split("=")[0] for name in variant.on()}
        plain_proj = self.mode == "LSTM" or not getattr(self, "proj_size", 0)
        return on <= {"recurrent_dropout", "weight_drop"} and plain_proj

    def _plain_fused(self, seq: seqs.SequenceInput, states: list[State]) -> tuple[Tensor, State]:
        """torch's fused kernel for `self.mode` on the variant cells' parameters (torch.nn's
        names and layout), for a layer that `_plain_in_eval` says computes torch.nn's."""
        return torch_fused.fused_forward(
            self.mode,
            seq.x,
            seqs.stack_state(states, batched=True),
            torch_fused.flat_weights(self._modules["cells"]),
            bias=self.bias,
            num_layers=self.num_layers,
            dropout=self.dropout,
            training=self.training,
            bidirectional=self.bidirectional,
            lengths=seq.lengths,
        )

    def forward(
        self,
        input: Tensor | PackedSequence,
        hx: State | None = None,
        lengths: Tensor | None = None,
    ) -> tuple[Tensor | PackedSequence, State]:
        cells = self._modules["cells"]  # not `self.cells`: `_TorchLayout.__getattr__` costs 1 us
        first = cells._modules["0"]  # not `cells[0]`: ModuleList's index lookup costs 0.8 us
        like = first._parameters.get("weight_ih") if self.fused_mode else None
        if like is None:  # a variant cell, or a parametrized weight_ih
            like = first.weight_ih if self.fused_mode else next(self.parameters())
        seq = seqs.prepare_input(
            input, lengths, input_size=self.input_size, batch_first=self.batch_first, like=like
        )
        batch = seq.x.shape[1]
        states = None
        if self.fused_mode and seq.batched:  # torch.nn's cells: hx checked in one pass
            lstm, hidden = self.fused_mode == "LSTM", self.hidden_size
            shape = (len(cells), batch, (lstm and self.proj_size) or hidden)
            states = torch_fused.cell_states(hx, lstm, shape, hidden, like)
        if states is None:
            states = seqs.split_state(hx, self._zero_states(batch, seq.x), batched=seq.batched)
        route = self._route(seq.x) if batch else "reference"  # no sequence: torch.nn's shapes
        if route == "torch":
            output, final = self._fused(seq, states)
        elif route == "plain":
            output, final = self._plain_fused(seq, states)
        elif route == "numba" and seqs.autocast_enabled(seq.x.device):
            with seqs.without_autocast(seq.x.device):  # the kernels compute in float32/64
                output, finals = self._layers(self._numba_direction, seq.x, states, seq.lengths)
            final = seqs.stack_state(finals, batched=True)
        else:
            run_one = self._numba_direction if route == "numba" else self._reference_direction
            output, finals = self._layers(run_one, seq.x, states, seq.lengths)
            final = seqs.stack_state(finals, batched=True)
        if not seq.batched:
            final = (
                tuple(s.squeeze(1) for s in final) if isinstance(final, tuple) else final.squeeze(1)
            )
        return seqs.finish_output(output, seq, self.batch_first), final

    def _fused(
        self, seq: seqs.SequenceInput, states: torch_fused.CellStates | list[State]
    ) -> tuple[Tensor, State]:
        if isinstance(states, torch_fused.CellStates):
            hx = states.stacked  # as the caller gave it, no split and stack
        else:
            hx = seqs.stack_state(states, batched=True)
        return torch_fused.fused_forward(
            self.fused_mode,
            seq.x,
            hx,
            torch_fused.flat_weights(self._modules["cells"]),
            bias=self.bias,
            num_layers=self.num_layers,
            dropout=self.dropout,
            training=self.training,
            bidirectional=self.bidirectional,
            lengths=seq.lengths,
        )

    def _reference_direction(self, cell, x, state, lengths, reverse):
        return run_cell(cell, x, state, lengths, reverse, whole=self.backend != "reference")

    def _numba_direction(self, cell, x, state, lengths, reverse):
        if self.fused_mode is None:
            return kernels.variant_sequence(cell, x, state, lengths, reverse)
        weights = (cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh)
        if self.fused_mode == "GRU":
            return kernels.gru_sequence(x, state, *weights, lengths, reverse)
        nonlinearity = "tanh" if self.fused_mode == "RNN_TANH" else "relu"
        return kernels.elman_sequence(x, state, *weights, lengths, reverse, nonlinearity)

    def _layers(self, run_one: Callable, x: Tensor, states: list[State], lengths: Tensor | None):
        """The stack, one layer and direction at a time: `run_one(cell, x, state, lengths,
        reverse) -> (outputs (T, B, H_out), final state)` runs one of them."""
        finals: list[State] = []
        for layer in range(self.num_layers):
            outputs = []
            for direction in range(self.num_directions):
                k = layer * self.num_directions + direction
                out, final = run_one(self.cells[k], x, states[k], lengths, direction == 1)
                outputs.append(out)
                finals.append(final)
            x = torch.cat(outputs, dim=-1) if len(outputs) > 1 else outputs[0]  # (T, B, D*H_out)
            if self.dropout and self.training and layer < self.num_layers - 1:
                x = F.dropout(x, self.dropout, training=True)
        return x, finals

    def step(
        self, x: Tensor, state: State | None = None, reset: Tensor | None = None
    ) -> tuple[Tensor, State]:
        """Advance one time step, for streaming: x (B, H_in) or (H_in,) -> (output (B, H_out),
        new state in torch.nn's layout). `reset` (B,) bool zeroes the chosen samples' states
        first, so they start a new sequence. Driving `step` over a sequence reproduces `forward`.
        """
        if self.bidirectional:
            raise ValueError(
                "step() advances forward in time; a bidirectional layer needs the whole sequence"
            )
        compiled = self._compiled_steps(x)
        if compiled is not None and reset is None:
            result = compiled(x, state)  # None unless x and state have the usual form
            if result is not None:
                return result
        seq = seqs.prepare_input(
            self._step_input(x).unsqueeze(0),
            None,
            input_size=self.input_size,
            batch_first=False,
            like=next(self.parameters()),
        )  # x as a one-step sequence: (1, B, H_in)
        x_t = seq.x[0]
        batch = x_t.shape[0]
        zero = self._zero_states(batch, x_t) if state is None else self._state_shapes(batch, x_t)
        states = seqs.split_state(state, zero, batched=seq.batched, name="state")
        if reset is not None:
            states = [_first_dim_reset(s, reset) for s in states]
        new_states = []
        steps = (
            compiled.steps
            if compiled is not None
            else self._stream_steps(batch, x_t, new=state is None)
        )
        for layer, step_ in enumerate(steps):
            new = step_(x_t, states[layer])
            new_states.append(new)
            x_t = _first(new)
            if self.dropout and self.training and layer < self.num_layers - 1:
                x_t = F.dropout(x_t, self.dropout, training=True)
        out = x_t if seq.batched else x_t.squeeze(0)
        return out, seqs.stack_state(new_states, batched=seq.batched)

    def _step_input(self, x: object) -> Tensor:
        """x for one step, checked in the step's own terms: (B, H_in) or (H_in,)."""
        x = seqs._check_tensor("x", x)
        if x.dim() not in (1, 2):
            raise ValueError(
                "step() takes one time step, x of shape (batch, input_size) or (input_size,); "
                f"got shape {tuple(x.shape)} (a whole sequence goes through the layer's call)"
            )
        if x.shape[-1] != self.input_size:
            raise ValueError(
                f"x has {x.shape[-1]} features (shape {tuple(x.shape)}); the layer expects "
                f"input_size={self.input_size}"
            )
        if x.dim() == 2 and x.shape[0] == 0:
            raise ValueError("x has batch size 0; pass at least one sample")
        return x

    def step_(self, x: Tensor, state: State, reset: Tensor | None = None) -> Tensor:
        """`step()` with the new state written into `state`'s own tensors (torch.nn's layout),
        for real-time inference: `out, state = layer.step(x0)`, then `out = layer.step_(x,
        state)` per frame. Returns the output; on the compiled route (`step()`'s) it is a view
        of the state, the top layer's new h, so the next `step_` overwrites it too, and nothing
        is allocated. The state's version counters are bumped, as torch's in-place operators
        do. Backpropagation through time needs the states this overwrites: with a gradient
        wanted it raises (train with `step()`)."""
        if torch.is_grad_enabled() and (
            getattr(x, "requires_grad", False) or any(p.requires_grad for p in self.parameters())
        ):
            raise RuntimeError(
                "step_ writes the state in place, which backpropagation through time cannot "
                "go through; call it under torch.no_grad() (or torch.inference_mode()), or "
                "use step(), which returns a new state"
            )
        if state is None:
            raise ValueError(
                "step_ needs a state to write into: start a stream with "
                "`out, state = layer.step(x)` and continue with `layer.step_(x, state)`"
            )
        compiled = self._compiled_steps(x)
        if compiled is not None and reset is None:
            out = compiled.update_(x, state)  # None unless x and state have the usual form
            if out is not None:
                return out
        out, new = self.step(x, state, reset)  # checks x and state, says what is wrong
        parts = tuple(state) if isinstance(state, tuple | list) else (state,)
        if len(parts) == 2 and seqs.memory_overlaps(parts[0], parts[1]):
            raise ValueError(
                "state[0] and state[1] share memory: step_ writes both in place, so each "
                "must have its own (clone one)"
            )
        for part, value in zip(parts, new if isinstance(new, tuple) else (new,), strict=True):
            part.copy_(value)
        return out

    def _state_shapes(self, batch: int, like: Tensor) -> list[State]:
        """Zero states that `split_state` checks a given state against (shapes, dtype, device)
        and never returns: kept between steps, so that a step with a state allocates and fills
        none (on a GPU, a kernel launch each)."""
        key = (batch, like.dtype, like.device)
        cached = self.__dict__.get("_state_check")
        if cached is None or cached[0] != key:
            cached = (key, self._zero_states(batch, like))
            self.__dict__["_state_check"] = cached
        return cached[1]

    def _compiled_steps(self, x: object):
        """The compiled streaming steps (`rnnkit.kernels.numba_step.StackStep`) when they serve:
        inference (no gradient wanted) of a plain LSTM or GRU, of variant LSTM, GRU or Elman
        cells (in eval, any options) or of minGRU / minLSTM, on the CPU in float32/float64.
        They hold views of the parameters, rebuilt when a parameter's memory is replaced. Run
        before every step: the usual case (the steps built, x a plain tensor) costs about a
        microsecond; x's dtype, device and shape are the steps' own check (`StackStep`)."""
        if self.training or self.backend == "reference" or x.__class__ is not Tensor:
            return None
        if seqs.transformed():  # torch.func's grad or vmap, forward-mode AD, jit.trace
            return None
        if torch.is_grad_enabled() and (
            x.requires_grad or any(p.requires_grad for p in self.parameters())
        ):
            return None
        kind = self._compiled_step_kind()
        if kind is None:
            return None
        cells = self._modules["cells"]  # not `self.cells`: `_TorchLayout.__getattr__` costs 1 us
        cached = self.__dict__.get("_compiled")
        if cached is not None and cached.kind == kind and cached.uses(cells):
            return cached
        if not seqs.numba_can_read(x):
            return None
        from rnnkit.kernels.numba_step import StackStep  # imports Numba: not at import time

        cached = StackStep(cells, kind)
        self.__dict__["_compiled"] = cached
        return cached

    def _compiled_step_kind(self) -> str | None:
        """The kind of `StackStep` ("lstm", "gru", "variant_lstm|gru|elman", "minimal") or None."""
        if self.fused_mode == "LSTM" and not self.proj_size:
            return "lstm"
        if self.fused_mode == "GRU":
            return "gru"
        cells = self._modules["cells"]._modules.values()
        if all(type(c) is VariantLSTMCell for c in cells):
            return "variant_lstm"
        if all(type(c) is VariantGRUCell for c in cells):
            return "variant_gru"
        if all(type(c) is VariantElmanCell and c.nonlinearity in ("tanh", "relu") for c in cells):
            return "variant_elman"
        from rnnkit.minimal import MinGRUCell, MinLSTMCell  # builds on this module

        if all(type(c) in (MinGRUCell, MinLSTMCell) for c in cells):
            return "minimal"
        return None

    def _stream_steps(self, batch: int, like: Tensor, new: bool) -> list[Callable]:
        """Each cell's step function for `step()`. In training, cells with per-sequence draws
        (`cell.begin`: recurrent dropout, weight drop) draw them when a stream starts (state=None)
        or the batch size changes, and keep them until then; in eval nothing is drawn.
        A torch.nn configuration (not on backend "reference") steps through torch.nn.LSTMCell's
        (GRUCell's, RNNCell's) kernel, one fused kernel on CUDA (`torch_fused.cell_step`)."""
        if self.fused_mode is not None and self.backend != "reference":
            mode, cells = self.fused_mode, self._modules["cells"]._modules.values()
            if mode != "LSTM" or not self.proj_size:  # torch's LSTM cell has no projection
                return [functools.partial(torch_fused.cell_step, mode, c) for c in cells]
        if not self.training:
            return list(self.cells)
        if new or self._stream is None or self._stream[0] != batch:
            steps = [c.begin(batch, like) if hasattr(c, "begin") else c for c in self.cells]
            self._stream = (batch, steps)
        return self._stream[1]

    def reset_state(self, state: State, reset: Tensor) -> State:
        """`rnnkit.layers.reset_state`: zero the chosen samples' states (torch.nn layout)."""
        return reset_state(state, reset)

    def extra_repr(self) -> str:
        return (
            f"num_layers={self.num_layers}, bidirectional={self.bidirectional}, "
            f"dropout={self.dropout}, batch_first={self.batch_first}, backend={self.backend!r}"
        )


def _check_numba_input(x: Tensor) -> None:
    if x.device.type != "cpu" or x.dtype not in seqs.NUMBA_DTYPES:
        raise ValueError(
            f"backend='numba' runs float32/float64 on the CPU, got {x.dtype} on {x.device}; "
            f"use backend='auto'"
        )
    if not seqs.numba_can_read(x):
        raise ValueError(
            f"backend='numba' reads a plain tensor's memory, got a {type(x).__name__} under "
            f"tracing (torch.export, torch.jit.trace), forward-mode AD or a torch.func "
            f"transform (grad, vmap, jvp); use backend='auto', which takes torch's operators then"
        )


def _first_dim_reset(state: State, reset: Tensor) -> State:
    stacked = (
        tuple(s.unsqueeze(0) for s in state) if isinstance(state, tuple) else state.unsqueeze(0)
    )
    out = reset_state(stacked, reset)
    return tuple(s[0] for s in out) if isinstance(out, tuple) else out[0]


def _fresh_copy(cell: nn.Module) -> nn.Module:
    clone = copy.deepcopy(cell)
    if hasattr(clone, "reset_parameters"):
        clone.reset_parameters()
    return clone


def _fused_mode_or_none(mode: str, variants: list[str], backend: str) -> str | None:
    """The torch kernel of a drop-in layer: `mode`, or None when variant options are on (the
    reference loop runs them)."""
    if not variants:
        return mode
    if backend == "torch":
        raise ValueError(
            f"backend='torch' runs torch.nn's own configurations; {', '.join(variants)} "
            f"run with backend='auto' or 'reference'"
        )
    return None


_TORCH_KEY = re.compile(r"^(?P<name>\w+?)_l(?P<layer>\d+)(?P<reverse>_reverse)?$")


class _TorchLayout(Recurrent):
    """`Recurrent` whose state_dict and attributes use torch.nn's flat names
    (`weight_ih_l0`, `bias_hh_l1_reverse`, ...), so state_dicts move both ways unchanged."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.register_state_dict_post_hook(_to_torch_keys)
        self.register_load_state_dict_pre_hook(_from_torch_keys)
        self.register_load_state_dict_post_hook(_report_torch_keys)

    def _flat_name(self, k: int, name: str) -> str:
        layer, direction = divmod(k, self.num_directions)
        return f"{name}_l{layer}{'_reverse' if direction else ''}"

    def _cell_index(self, layer: int, reverse: bool) -> int:
        return layer * self.num_directions + int(reverse)

    def __getattr__(self, name: str):
        match = _TORCH_KEY.match(name)
        if match and "cells" in self.__dict__.get("_modules", {}):
            k = self._cell_index(int(match["layer"]), bool(match["reverse"]))
            if k < len(self._modules["cells"]):
                return getattr(self._modules["cells"][k], match["name"])
        return super().__getattr__(name)

    @property
    def all_weights(self) -> list[list[nn.Parameter]]:
        """Parameters per layer and direction, in torch.nn's order."""
        return [torch_fused.flat_weights([cell]) for cell in self.cells]

    @property
    def _flat_weights(self) -> list[Tensor]:
        return torch_fused.flat_weights(list(self.cells))

    @property
    def _flat_weights_names(self) -> list[str]:
        """torch.nn's names of `_flat_weights`, in the same order (`weight_ih_l0`, ...)."""
        return [
            self._flat_name(k, name)
            for k, cell in enumerate(self._modules["cells"])
            for name in torch_fused.FLAT_NAMES
            if getattr(cell, name, None) is not None
        ]

    def flatten_parameters(self) -> None:
        """As torch.nn's: on CUDA with cuDNN, make the gate weights views of one contiguous
        buffer, the layout cuDNN reads (without it cuDNN copies them on every call, and warns).
        Called after construction and after every move (`.to()`, `.cuda()`). Nothing to do on
        the CPU, for a layer that never reaches cuDNN, or when a weight is not a parameter of
        its own (weight drop, shared or tied weights)."""
        if self.fused_mode is None and not self._plain_variant():
            return  # never reaches torch's fused kernel
        weights = self._flat_weights
        cells = self._modules["cells"]._modules.values()
        names = [
            n for c in cells for n in torch_fused.FLAT_NAMES if c._parameters.get(n) is not None
        ]
        first = weights[0]
        if len(names) != len(weights) or not all(isinstance(w, nn.Parameter) for w in weights):
            return
        if any(
            w.dtype != first.dtype or not w.is_cuda or not torch.backends.cudnn.is_acceptable(w)
            for w in weights
        ):
            return
        if len({w.data_ptr() for w in weights}) != len(weights):
            return
        from torch.backends.cudnn import rnn as cudnn_rnn

        proj_size = getattr(self, "proj_size", 0)
        with torch.cuda.device_of(first), torch.no_grad():
            if torch._use_cudnn_rnn_flatten_weight():
                torch._cudnn_rnn_flatten_weight(
                    weights,
                    (4 if self.bias else 2) + (proj_size > 0),
                    self.input_size,
                    cudnn_rnn.get_cudnn_mode(self.mode),
                    self.hidden_size,
                    proj_size,
                    self.num_layers,
                    self.batch_first,
                    self.bidirectional,
                )

    def _apply(self, fn, recurse=True):
        result = super()._apply(fn, recurse)
        self.flatten_parameters()
        return result


def _to_torch_keys(module: _TorchLayout, state_dict, prefix: str, local_metadata) -> None:
    head = prefix + "cells."
    for key in list(state_dict):
        value = state_dict.pop(key)
        if key.startswith(head):
            index, _, name = key[len(head) :].partition(".")
            if "." not in name:
                key = prefix + module._flat_name(int(index), name)
        state_dict[key] = value


def _from_torch_keys(module: _TorchLayout, state_dict, prefix: str, *args) -> None:
    module._load_prefix = prefix  # for _report_torch_keys
    module._load_errors = args[-1]  # load_state_dict's error messages, the same list
    for key in list(state_dict):
        if not key.startswith(prefix):
            continue
        match = _TORCH_KEY.match(key[len(prefix) :])
        if match:
            k = module._cell_index(int(match["layer"]), bool(match["reverse"]))
            state_dict[f"{prefix}cells.{k}.{match['name']}"] = state_dict.pop(key)


def _report_torch_keys(module: _TorchLayout, incompatible_keys) -> None:
    """Name the missing and unexpected keys of the cells, and the keys in load_state_dict's
    error messages (a size mismatch), as `state_dict()` does (torch.nn's flat names:
    `ln_ih_weight_l0`), in place, so `load_state_dict`'s report and error use them."""
    prefix = getattr(module, "_load_prefix", "")
    head = prefix + "cells."
    for keys in (incompatible_keys.missing_keys, incompatible_keys.unexpected_keys):
        for i, key in enumerate(keys):
            index, _, name = key[len(head) :].partition(".")
            if key.startswith(head) and index.isdigit() and name and "." not in name:
                keys[i] = prefix + module._flat_name(int(index), name)
    errors = module.__dict__.pop("_load_errors", [])
    cell_key = re.compile(re.escape(head) + r"(\d+)\.(\w+)\b")  # e.g. "size mismatch for ..."
    for i, message in enumerate(errors):
        errors[i] = cell_key.sub(lambda m: prefix + module._flat_name(int(m[1]), m[2]), message)


class RNN(_TorchLayout):
    r"""Elman RNN layer, a drop-in superset of torch.nn.RNN.

    Each layer computes :math:`h_t = \tanh(W_{ih} x_t + b_{ih} + W_{hh} h_{t-1} + b_{hh})`
    (or ReLU), see `rnnkit.cells.ElmanCell`. Arguments, state_dict keys, inputs and outputs are
    torch.nn.RNN's; added: `lengths=` in forward, `step()`, `init=` ("torch" or "orthogonal")
    and `backend=`. Shapes: input (T, B, H_in) or (B, T, H_in) with batch_first, h_0 and h_n
    (D*num_layers, B, H), output (T, B, D*H).

    Variants (`rnnkit.variants.VariantElmanCell`, docs/variants.md), each off by default:
    `proj_size` (h_0, h_n and output then have P = proj_size features), `recurrent_dropout`,
    `zoneout`, `weight_drop`. With any of them on the reference loop runs the layer.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        nonlinearity: str = "tanh",
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        device=None,
        dtype=None,
        *,
        init: str = "torch",
        backend: str = "auto",
        proj_size: int = 0,
        recurrent_dropout: float = 0.0,
        zoneout: float = 0.0,
        weight_drop: float = 0.0,
    ) -> None:
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        self.mode = "RNN_TANH" if nonlinearity == "tanh" else "RNN_RELU"
        self.nonlinearity = nonlinearity
        self.variant = Variant(
            recurrent_dropout=recurrent_dropout, zoneout=zoneout, weight_drop=weight_drop
        )
        variants = self.variant.on() + (["proj_size"] if proj_size else [])
        self.fused_mode = _fused_mode_or_none(self.mode, variants, backend)

        def make(n: int) -> ElmanCell | VariantElmanCell:
            if not variants:
                return ElmanCell(
                    n, hidden_size, bias, nonlinearity, init, device=device, dtype=dtype
                )
            return VariantElmanCell(
                n, hidden_size, bias, nonlinearity, proj_size, self.variant, init, device, dtype
            )

        super().__init__(
            make,
            num_layers,
            bidirectional,
            dropout,
            batch_first,
            input_size=input_size,
            backend=backend,
        )
        self.bias = bias
        self.proj_size = proj_size
        self.flatten_parameters()


class LSTM(_TorchLayout):
    r"""LSTM layer, a drop-in superset of torch.nn.LSTM (see `rnnkit.cells.LSTMCell`).

    Arguments, state_dict keys, inputs and outputs are torch.nn.LSTM's (proj_size included);
    added: `lengths=` in forward, `step()`, `init=` ("torch" or "orthogonal"), `forget_bias=`
    and `backend=`. Shapes: input (T, B, H_in) or (B, T, H_in) with batch_first;
    (h_0, c_0) and (h_n, c_n): (D*num_layers, B, P) and (D*num_layers, B, H) with P = proj_size
    or H; output (T, B, D*P).

    Variants (`rnnkit.variants.VariantLSTMCell`, docs/variants.md), each off by default:
    `layer_norm`, `peephole`, `recurrent_dropout`, `zoneout` (on h), `zoneout_cell` (on c;
    None: zoneout's rate), `weight_drop`. With any of them on the reference loop runs the layer.
    """

    fused_mode = "LSTM"
    mode = "LSTM"

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: int = 0,
        device=None,
        dtype=None,
        *,
        init: str = "torch",
        forget_bias: float | None = None,
        backend: str = "auto",
        layer_norm: bool = False,
        peephole: bool = False,
        recurrent_dropout: float = 0.0,
        zoneout: float = 0.0,
        zoneout_cell: float | None = None,
        weight_drop: float = 0.0,
    ) -> None:
        self.variant = Variant(
            layer_norm=layer_norm,
            peephole=peephole,
            recurrent_dropout=recurrent_dropout,
            zoneout=zoneout,
            zoneout_cell=zoneout_cell,
            weight_drop=weight_drop,
        )
        variants = self.variant.on()
        self.fused_mode = _fused_mode_or_none("LSTM", variants, backend)

        def make(n: int) -> LSTMCell | VariantLSTMCell:
            if not variants:
                return LSTMCell(
                    n, hidden_size, bias, proj_size, init, forget_bias, device=device, dtype=dtype
                )
            return VariantLSTMCell(
                n, hidden_size, bias, proj_size, self.variant, init, forget_bias, device, dtype
            )

        super().__init__(
            make,
            num_layers,
            bidirectional,
            dropout,
            batch_first,
            input_size=input_size,
            backend=backend,
        )
        self.bias = bias
        self.proj_size = proj_size
        self.flatten_parameters()


class GRU(_TorchLayout):
    r"""GRU layer, a drop-in superset of torch.nn.GRU (see `rnnkit.cells.GRUCell`).

    Arguments, state_dict keys, inputs and outputs are torch.nn.GRU's; added: `lengths=` in
    forward, `step()`, `init=` ("torch" or "orthogonal") and `backend=`. Shapes: input (T, B, H_in)
    or (B, T, H_in) with batch_first, h_0 and h_n (D*num_layers, B, H), output (T, B, D*H).

    Variants (`rnnkit.variants.VariantGRUCell`, docs/variants.md), each off by default:
    `layer_norm`, `recurrent_dropout`, `zoneout`, `weight_drop`, `proj_size` (the state is then
    a pair (h, h_full) like LSTM's (h, c): (D*num_layers, B, P) and (D*num_layers, B, H); the
    output has P features). With any of them on the reference loop runs the layer.
    """

    fused_mode = "GRU"
    mode = "GRU"

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        device=None,
        dtype=None,
        *,
        init: str = "torch",
        backend: str = "auto",
        layer_norm: bool = False,
        recurrent_dropout: float = 0.0,
        zoneout: float = 0.0,
        weight_drop: float = 0.0,
        proj_size: int = 0,
    ) -> None:
        self.variant = Variant(
            layer_norm=layer_norm,
            recurrent_dropout=recurrent_dropout,
            zoneout=zoneout,
            weight_drop=weight_drop,
        )
        variants = self.variant.on() + (["proj_size"] if proj_size else [])
        self.fused_mode = _fused_mode_or_none("GRU", variants, backend)

        def make(n: int) -> GRUCell | VariantGRUCell:
            if not variants:
                return GRUCell(n, hidden_size, bias, init, device=device, dtype=dtype)
            return VariantGRUCell(
                n, hidden_size, bias, proj_size, self.variant, init, device, dtype
            )

        super().__init__(
            make,
            num_layers,
            bidirectional,
            dropout,
            batch_first,
            input_size=input_size,
            backend=backend,
        )
        self.bias = bias
        self.proj_size = proj_size
        self.flatten_parameters()
