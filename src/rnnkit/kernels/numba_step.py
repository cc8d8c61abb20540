"""Streaming single steps of the LSTM and GRU cells for inference (Numba, CPU).

One call computes one time step for a few sequences (real-time use: a frame arrives, a state
comes out) with the least Python overhead we can reach: the weights are held as NumPy views of
the parameters (no copy, and in-place updates of the parameters show through), one compiled
call does the two products and the gates, and the new state is returned as tensors that share
the kernel's output memory (new memory every step; a state passed back is read through the
arrays it came from, without a conversion). `StackStep` runs a whole stack of layers for
`rnnkit.layers.Recurrent.step()`, states in torch.nn's layout. Inference only: nothing here
records gradients. Where the time of a step goes, and why there is no copy of the weights:
docs/kernels.md, "The streaming steps".

Equations as torch.nn.LSTMCell (gates i|f|g|o) and torch.nn.GRUCell (gates r|z|n):

    LSTM: (i, f, g, o) = x @ W_ih.T + b_ih + h @ W_hh.T + b_hh
          c' = sigmoid(f) * c + sigmoid(i) * tanh(g);  h' = sigmoid(o) * tanh(c')
    GRU:  the equations of `numba_gru`, one step (its `gru_gates`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor
from torch.autograd.graph import increment_version

from rnnkit._sequence import memory_overlaps
from rnnkit.kernels._numba_common import (
    add_matvecs,
    bias_or_zeros,
    copy_,
    copy_rows,
    jit,
    jit_inline,
    numpy_view,
    rows_at,
    sigmoid_,
    tanh_,
)
from rnnkit.kernels._step_partner import after_step, pair_products, partner_control
from rnnkit.kernels.numba_gru import gru_gates


@jit_inline
def add_products(weight_ih, x, weight_hh, h, out_x, out_h, backward):
    """out_x[b] += weight_ih @ x[b] and out_h[b] += weight_hh @ h[b] for every sequence b
    (two arrays: the order of the products is free), each through `add_matvecs`; with
    `backward` weight_hh first and each matrix's last rows first."""
    if backward:
        add_matvecs(weight_hh, h, out_h, True)
        add_matvecs(weight_ih, x, out_x, True)
    else:
        add_matvecs(weight_ih, x, out_x, False)
        add_matvecs(weight_hh, h, out_h, False)


@jit_inline
def products(weight_ih, x, weight_hh, h, out_x, out_h, backward, control):
    """`add_products`, its rows shared with the partner thread of `control`
    (`_step_partner.pair_products`) unless `control` is empty or the partner cannot take it;
    returns its flags for `after_step` (0 without the partner). Same results."""
    if control.shape[0]:
        flags = pair_products(control, weight_ih, x, weight_hh, h, out_x, out_h, backward)
        if flags >= 0:
            return flags
    add_products(weight_ih, x, weight_hh, h, out_x, out_h, backward)
    return 0


@jit_inline
def lstm_cell_into(
    x, h, c, weight_ih, weight_hh, bias_ih, bias_hh, h_out, c_out, backward, control
):
    """One LSTM step for x (B, H_in), h and c (B, H), written to h_out and c_out (B, H);
    `backward`: the direction `add_matvec1` reads the weights (the result is the same);
    `control`: the partner thread's, or empty (`products`, whose result this returns)."""
    batch, hidden = h.shape
    gates = np.empty((batch, 4 * hidden), dtype=h.dtype)  # (B, 4H): i|f|g|o
    h_part = np.zeros((batch, 4 * hidden), dtype=h.dtype)  # W_hh h, added last in either order
    for b in range(batch):
        for j in range(4 * hidden):
            gates[b, j] = bias_ih[j] + bias_hh[j]
    flags = products(weight_ih, x, weight_hh, h, gates, h_part, backward, control)
    for b in range(batch):
        for j in range(4 * hidden):
            gates[b, j] += h_part[b, j]
    for b in range(batch):
        g = gates[b]
        sigmoid_(g, 0, 2 * hidden)  # i, f
        tanh_(g, 2 * hidden, 3 * hidden)  # g
        sigmoid_(g, 3 * hidden, 4 * hidden)  # o
        for j in range(hidden):
            c_out[b, j] = g[hidden + j] * c[b, j] + g[j] * g[2 * hidden + j]
            h_out[b, j] = c_out[b, j]
        tanh_(h_out[b], 0, hidden)
        for j in range(hidden):
            h_out[b, j] *= g[3 * hidden + j]
    return flags


@jit_inline
def gru_cell_into(x, h, weight_ih, weight_hh, bias_ih, bias_hh, h_out, backward, control):
    """One GRU step for x (B, H_in) and h (B, H), written to h_out (B, H); `control` and
    `backward` as in `lstm_cell_into`."""
    batch, hidden = h.shape
    x_proj = np.empty((batch, 3 * hidden), dtype=h.dtype)  # (B, 3H): r|z|n
    h_proj = np.empty((batch, 3 * hidden), dtype=h.dtype)  # (B, 3H)
    for b in range(batch):
        copy_(bias_ih, x_proj[b])
        copy_(bias_hh, h_proj[b])
    flags = products(weight_ih, x, weight_hh, h, x_proj, h_proj, backward, control)
    gates = np.empty(4 * hidden, dtype=h.dtype)  # r|z|n|h_proj_n of one sequence
    for b in range(batch):
        gru_gates(gates, x_proj[b], h_proj[b])
        for j in range(hidden):
            n = gates[2 * hidden + j]
            h_out[b, j] = n + gates[hidden + j] * (h[b, j] - n)
    return flags


@jit_inline
def layer_input(x_address, below, layer, weight_ih):
    """The input of a stack's layer `layer`: for layer 0 the caller's x (B, H_in) at memory
    `x_address` (`rows_at`), else the new state of the layer below, below[layer - 1] (below:
    (L, B, P), the first part of the new state)."""
    if layer == 0:
        return rows_at(x_address, below.shape[1], weight_ih.shape[1], below)
    return below[layer - 1]


@jit
def lstm_step_at(
    x_address, h, c, weight_ih, weight_hh, bias_ih, bias_hh, h_out, c_out, backward, control
):
    """`lstm_cell_into` for x (B, H_in) at memory `x_address` (`rows_at`)."""
    x = rows_at(x_address, h.shape[0], weight_ih.shape[1], h)
    return lstm_cell_into(
        x, h, c, weight_ih, weight_hh, bias_ih, bias_hh, h_out, c_out, backward, control
    )


@jit
def gru_step_at(x_address, h, weight_ih, weight_hh, bias_ih, bias_hh, h_out, backward, control):
    """`gru_cell_into` for x (B, H_in) at memory `x_address` (`rows_at`)."""
    x = rows_at(x_address, h.shape[0], weight_ih.shape[1], h)
    return gru_cell_into(x, h, weight_ih, weight_hh, bias_ih, bias_hh, h_out, backward, control)


@jit
def lstm_layer_step(
    x_address, h, c, layer, weight_ih, weight_hh, bias_ih, bias_hh, h_out, c_out, out, backward,
    control,
):  # fmt: skip
    """Layer `layer` of a stack, states h, c, h_out, c_out (L, B, H) in torch.nn's layout, its
    input `layer_input`; the top layer's new h is copied to out (B, H) too. Returns
    `products`' flag (every layer kernel of a stack takes `control` and returns it)."""
    x = layer_input(x_address, h_out, layer, weight_ih)
    flags = lstm_cell_into(
        x, h[layer], c[layer], weight_ih, weight_hh, bias_ih, bias_hh, h_out[layer],
        c_out[layer], backward, control,
    )  # fmt: skip
    if layer == h.shape[0] - 1:
        copy_rows(h_out[layer], out, out.shape[0])
    return flags


@jit
def gru_layer_step(
    x_address, h, layer, weight_ih, weight_hh, bias_ih, bias_hh, h_out, out, backward, control
):
    """Layer `layer` of a stack, states h, h_out (L, B, H); as `lstm_layer_step`."""
    x = layer_input(x_address, h_out, layer, weight_ih)
    flags = gru_cell_into(
        x, h[layer], weight_ih, weight_hh, bias_ih, bias_hh, h_out[layer], backward, control
    )
    if layer == h.shape[0] - 1:
        copy_rows(h_out[layer], out, out.shape[0])
    return flags


def tensor_array(tensor: Tensor) -> np.ndarray:
    """A NumPy view of `tensor`, at the least cost in the usual case (contiguous, no grad)."""
    if tensor.is_contiguous() and not tensor.requires_grad:
        return tensor.numpy()
    return numpy_view(tensor)


def _described(value: object) -> str:
    """A tensor's dtype and device, or another value's type, for an error message."""
    if isinstance(value, Tensor):
        return f"{value.dtype} on {value.device}"
    return type(value).__name__


def checked_input(x: Tensor, dtype: torch.dtype, width: int) -> Tensor:
    """A step's input x, which must be a (B, width) CPU tensor of the parameters' dtype, made
    contiguous (its memory goes to the kernels by address, `rows_at`)."""
    if not isinstance(x, Tensor) or x.dtype != dtype or not x.is_cpu:
        raise TypeError(f"x must be a CPU {dtype} tensor, got {_described(x)}")
    shape = x.shape
    if len(shape) != 2 or shape[1] != width or shape[0] == 0:
        raise ValueError(
            f"x must have shape (batch, {width}) with batch >= 1, got {tuple(shape)}; "
            "for one sequence pass x[None]"
        )
    return x if x.is_contiguous() else x.contiguous()


def step_input(x: Tensor, dtype: torch.dtype, width: int) -> np.ndarray:
    """The NumPy view of a step's input x (`checked_input`)."""
    return tensor_array(checked_input(x, dtype, width))


def step_state(tensor: Tensor, name: str, dtype: torch.dtype, shape: tuple[int, int]) -> np.ndarray:
    """The NumPy view of state part `name`, which must be a CPU tensor of `shape` (B, size)
    and the parameters' dtype."""
    if not isinstance(tensor, Tensor) or tensor.dtype != dtype or not tensor.is_cpu:
        raise TypeError(f"{name} must be a CPU {dtype} tensor, got {_described(tensor)}")
    if tensor.shape != shape:
        raise ValueError(
            f"{name} must have shape {shape} (batch of x, state size), got {tuple(tensor.shape)}"
        )
    return tensor_array(tensor)


def step_parts(state: object, names: tuple[str, ...]) -> tuple:
    """`state` as a tuple of its parts, one per name, or a clear error naming the form it must
    take (a tuple such as (h, c)); a state of one part is the tensor itself."""
    if len(names) == 1:
        return (state,)
    if not isinstance(state, tuple | list) or len(state) != len(names):
        form = f"({', '.join(names)})"
        raise TypeError(f"state must be a tuple {form}, got {type(state).__name__}")
    return tuple(state)


def recorded_arrays(
    x: Tensor, parts: tuple, record: tuple, dtype: torch.dtype
) -> tuple[np.ndarray, ...] | None:
    """The arrays of `record` (tensors, their memory, their arrays, the batch's x shape:
    `make_record`) when x is a contiguous CPU tensor of that shape and `dtype` and `parts` are
    the record's tensors in the same memory (edits in place show through; a tensor whose memory
    was swapped, `set_`, is not the record's any more); else None. The usual step of a stream,
    a state fed back, checked at the least cost."""
    tensors, memory, arrays, x_shape = record
    if (
        x.__class__ is not Tensor
        or x.dtype is not dtype
        or not x.is_cpu
        or not x.is_contiguous()
        or x.shape != x_shape
        or len(parts) != len(tensors)
    ):
        return None
    if parts[0] is not tensors[0] or parts[0].data_ptr() != memory[0]:
        return None
    if len(parts) == 2 and (parts[1] is not tensors[1] or parts[1].data_ptr() != memory[1]):
        return None
    return arrays


def make_record(tensors: tuple, arrays: tuple[np.ndarray, ...], input_size: int) -> tuple:
    """What `recorded_arrays` compares (written out for one part and two: generators cost
    0.2-0.3 us a step here)."""
    if len(tensors) == 1:
        memory = (tensors[0].data_ptr(),)
    else:
        memory = (tensors[0].data_ptr(), tensors[1].data_ptr())
    return tensors, memory, arrays, (arrays[0].shape[-2], input_size)


class _CellStep:
    """Views of one cell's parameters, taken once; see `LSTMStep` and `GRUStep`."""

    gates = 0  # 4 for the LSTM, 3 for the GRU
    names: tuple[str, ...] = ()  # the state's parts, for errors

    def __init__(
        self, weight_ih: Tensor, weight_hh: Tensor, bias_ih: Tensor | None, bias_hh: Tensor | None
    ):
        size = weight_hh.shape[0]
        if size != self.gates * weight_hh.shape[1]:
            raise ValueError(f"weight_hh must be ({self.gates}*H, H), got {tuple(weight_hh.shape)}")
        self.dtype = weight_hh.dtype
        self.input_size, self.hidden = weight_ih.shape[1], weight_hh.shape[1]
        self.pointers = _pointers(weight_ih, weight_hh, bias_ih, bias_hh)
        self.weight_bytes = weight_ih.nbytes + weight_hh.nbytes  # read by every step
        self.views = (
            numpy_view(weight_ih), numpy_view(weight_hh),
            numpy_view(bias_or_zeros(bias_ih, size, weight_hh)),
            numpy_view(bias_or_zeros(bias_hh, size, weight_hh)),
        )  # fmt: skip
        # the state returned last: its tensors, their memory, its arrays (a state fed back
        # costs no conversion and no check)
        self._last: tuple = ((), (), (), ())  # `make_record`
        self._in_place: tuple = ((), (), (), ())  # the same for the state `update_` wrote last
        self._backward = False  # the direction of this call's weight reads (`add_matvec1`)

    def uses(
        self, weight_ih: Tensor, weight_hh: Tensor, bias_ih: Tensor | None, bias_hh: Tensor | None
    ) -> bool:
        """Whether this step still reads these parameters' memory (False once a parameter has
        been replaced, e.g. by `module.to()` or `load_state_dict(assign=True)`)."""
        return self.pointers == _pointers(weight_ih, weight_hh, bias_ih, bias_hh)

    def _arrays(self, x: Tensor, parts: tuple) -> tuple[Tensor, tuple[np.ndarray, ...]]:
        """x checked (`checked_input`) and views of the state's parts: the arrays of the state
        returned last when it comes back (`recorded_arrays`); else checked views."""
        arrays = recorded_arrays(x, parts, self._last, self.dtype)
        if arrays is not None:
            return x, arrays
        inputs = checked_input(x, self.dtype, self.input_size)
        shape = (inputs.shape[0], self.hidden)
        return inputs, tuple(
            step_state(part, name, self.dtype, shape)
            for part, name in zip(parts, self.names, strict=True)
        )

    def _writable(self, x: Tensor, parts: tuple) -> tuple[Tensor, tuple[np.ndarray, ...]]:
        """x checked and views of the state's parts for `update_`, which writes them: those of
        the state it updated last when it comes again (`recorded_arrays`); else checked as
        `_arrays` does, and each part contiguous, not requiring grad, and sharing no memory
        with another part."""
        arrays = recorded_arrays(x, parts, self._in_place, self.dtype)
        if arrays is not None:
            return x, arrays
        inputs = checked_input(x, self.dtype, self.input_size)
        shape = (inputs.shape[0], self.hidden)
        arrays = []
        for part, name in zip(parts, self.names, strict=True):
            arrays.append(step_state(part, name, self.dtype, shape))  # its memory, when usable
            if part.requires_grad:
                raise ValueError(
                    f"{name} requires grad: update_ writes the state in place, outside "
                    "autograd; pass tensors that do not (made under torch.no_grad(), or "
                    "detached), or use step(x, state), which returns new ones"
                )
            if not part.is_contiguous():
                raise ValueError(
                    f"{name} must be contiguous for update_ (it is written in place); pass "
                    f"{name}.contiguous(), or use step(x, state), which returns new tensors"
                )
        if len(parts) == 2 and memory_overlaps(parts[0], parts[1]):
            raise ValueError(
                f"{' and '.join(self.names)} share memory: update_ writes both in place, "
                "so each must have its own (clone one)"
            )
        self._in_place = make_record(tuple(parts), tuple(arrays), self.input_size)
        return inputs, self._in_place[2]

    def _returned(self, arrays: tuple[np.ndarray, ...]) -> tuple[Tensor, ...]:
        if len(arrays) == 1:
            tensors = (torch.from_numpy(arrays[0]),)
        else:
            tensors = (torch.from_numpy(arrays[0]), torch.from_numpy(arrays[1]))
        self._last = make_record(tensors, arrays, self.input_size)
        return tensors


def _pointers(*parameters: Tensor | None) -> tuple[int | None, ...]:
    return tuple(None if p is None else p.data_ptr() for p in parameters)


class LSTMStep(_CellStep):
    """Inference-only streaming steps of an LSTM cell with torch.nn.LSTMCell's parameters.

    `step = LSTMStep(cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh)`, then
    `h, c = step(x, (h, c))` per frame; x (B, H_in), h and c (B, H), CPU tensors of the
    parameters' dtype (anything else: a TypeError or ValueError that says what it must be).
    `step.update_(x, (h, c))` writes the new state into h and c instead (no new tensors: the
    least time a step takes from Python).
    """

    gates = 4
    names = ("h", "c")

    def __call__(self, x: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        inputs, (h, c) = self._arrays(x, step_parts(state, self.names))
        h_new, c_new = np.empty_like(h), np.empty_like(c)
        self._backward = backward = not self._backward  # alternate: the cache keeps more
        control = partner_control(self.weight_bytes)
        flags = lstm_step_at(inputs.data_ptr(), h, c, *self.views, h_new, c_new, backward, control)
        after_step(flags, self)
        return self._returned((h_new, c_new))

    def update_(self, x: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        """One step in place: the new h and c written into `state`'s tensors (contiguous, not
        requiring grad, each its own memory; their version counters are bumped, as torch's
        in-place operators do), which are returned. Same results as `step(x, state)`."""
        parts = step_parts(state, self.names)
        inputs, (h, c) = self._writable(x, parts)
        self._backward = backward = not self._backward
        control = partner_control(self.weight_bytes)
        flags = lstm_step_at(inputs.data_ptr(), h, c, *self.views, h, c, backward, control)
        after_step(flags, self)
        increment_version(parts)
        return state


class GRUStep(_CellStep):
    """Inference-only streaming steps of a GRU cell with torch.nn.GRUCell's parameters.

    `step = GRUStep(cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh)`, then
    `h = step(x, h)` per frame; x (B, H_in), h (B, H), CPU tensors of the parameters' dtype;
    `step.update_(x, h)` writes the new state into h instead (as `LSTMStep.update_`).
    """

    gates = 3
    names = ("h",)

    def __call__(self, x: Tensor, h: Tensor) -> Tensor:
        inputs, (h,) = self._arrays(x, (h,))
        h_new = np.empty_like(h)
        self._backward = backward = not self._backward  # alternate: the cache keeps more
        control = partner_control(self.weight_bytes)
        after_step(gru_step_at(inputs.data_ptr(), h, *self.views, h_new, backward, control), self)
        return self._returned((h_new,))[0]

    def update_(self, x: Tensor, h: Tensor) -> Tensor:
        """One step in place: the new state written into h, which is returned (as
        `LSTMStep.update_`)."""
        inputs, (array,) = self._writable(x, (h,))
        self._backward = backward = not self._backward
        control = partner_control(self.weight_bytes)
        flags = gru_step_at(inputs.data_ptr(), array, *self.views, array, backward, control)
        after_step(flags, self)
        increment_version(h)
        return h


class StackStep:
    """Inference-only streaming steps through a stack of plain LSTM or GRU cells, or of variant
    LSTM, GRU or Elman cells (the compiled route of `rnnkit.layers.Recurrent.step`), with states
    in torch.nn's layout.

    `out, state = stack(x, state)`: x (B, H_in), state (L, B, H) (a pair (h, c) for the LSTM,
    h (L, B, P) with a variant's projection; (s, h) for a variant GRU with one) or None for
    zeros; out (B, P) is the top layer's new h. Every call returns new memory, so a state or
    output the caller holds stays valid after the next step; the state returned last keeps its
    NumPy arrays, so passing it back costs no conversion. `steps` are the cells' step objects
    (`LSTMStep`, `GRUStep`, `numba_variant_step.Variant*Step`), for callers that hold one state
    per cell. `kind`: "lstm", "gru", "variant_lstm", "variant_gru", "variant_elman" or "minimal"
    (minGRU, minLSTM).
    """

    def __init__(self, cells: Sequence[torch.nn.Module], kind: str):
        self.cells, self.kind = tuple(cells), kind
        self.steps, self.kernel, names, self.sizes = _plan(kind, cells)
        self.parts = len(self.sizes)  # state tensors: (h, c) or h
        self.dtype = self.steps[0].dtype
        self.array_dtype = self.steps[0].views[1].dtype
        self.input_size = cells[0].weight_ih.shape[1]
        self._watched = [  # (where the parameter lives, its name, the tensor, its memory)
            (cell._parameters, name, cell._parameters.get(name), pointer)
            for cell, step in zip(cells, self.steps, strict=True)
            for name, pointer in zip(names, step.pointers, strict=True)
        ]
        # the state `__call__` returned last and the one `update_` wrote last (`make_record`),
        # with `update_`'s output and the top layer's array of the state, which it writes
        self._last: tuple = ((), (), (), ())
        self._in_place: tuple = ((), (), (), ())
        self._in_place_top: tuple = (None, None)
        self._shapes: tuple = (0, ())  # a batch size and the state's (L, B, size) shapes for it
        self._backward = False  # the direction of this call's weight reads (`add_matvec1`)

    def uses(self, cells: Sequence[torch.nn.Module]) -> bool:
        """Whether `cells` are still these cells with the same parameters in the same memory
        (see `LSTMStep.uses`); a fast check, run before every step."""
        modules = cells._modules.values() if isinstance(cells, torch.nn.ModuleList) else cells
        if tuple(modules) != self.cells:
            return False
        for parameters, name, tensor, pointer in self._watched:
            now = parameters.get(name)
            if now is not tensor or (now is not None and now.data_ptr() != pointer):
                return False
        return True

    def __call__(self, x: Tensor, state: Tensor | tuple[Tensor, ...] | None):
        """(out, new state), or None when x or state is not a batched CPU tensor of the usual
        shape and dtype (the layer's general path then checks them and says what is wrong)."""
        parts = state if isinstance(state, tuple) else (state,)
        arrays = recorded_arrays(x, parts, self._last, self.dtype)  # the state returned last
        if arrays is None:
            arrays = self._checked_arrays(x, parts, self._state_arrays)
            if arrays is None:
                return None
            x = x if x.is_contiguous() else x.contiguous()
        batch = x.shape[0]
        shapes, dtype = self._state_shapes(batch), self.array_dtype
        if self.parts == 2:
            new = (np.empty(shapes[0], dtype), np.empty(shapes[1], dtype))
        else:
            new = (np.empty(shapes[0], dtype),)
        out = np.empty((batch, self.sizes[0]), dtype)  # not a view of the state
        address = x.data_ptr()  # layer 0's input; the others read new[0] (`layer_input`)
        self._backward = backward = not self._backward  # the other way from the last call
        for layer, step in enumerate(self.steps):
            control = partner_control(step.weight_bytes)
            flags = self.kernel(address, *arrays, layer, *step.views, *new, out, backward, control)
            after_step(flags, step)
        if self.parts == 2:
            tensors = (torch.from_numpy(new[0]), torch.from_numpy(new[1]))
            state = tensors
        else:
            tensors = (torch.from_numpy(new[0]),)
            state = tensors[0]
        self._last = make_record(tensors, new, self.input_size)
        return torch.from_numpy(out), state

    def _state_shapes(self, batch: int) -> tuple:
        """The state's shapes (L, B, size) per part for this batch size (kept for the last)."""
        if self._shapes[0] != batch:
            shapes = tuple((len(self.steps), batch, size) for size in self.sizes)
            self._shapes = (batch, shapes)
        return self._shapes[1]

    def _checked_arrays(self, x: Tensor, parts: tuple, arrays_of: Callable) -> tuple | None:
        """`arrays_of(parts, shapes)` (`_state_arrays` or `_writable_arrays`) for x's batch
        size, where x is a batched CPU tensor of the usual dtype and width; else None. The path
        of a state that is not the one recorded last."""
        if x.__class__ is not Tensor or x.dim() != 2 or x.dtype != self.dtype or not x.is_cpu:
            return None
        batch, features = x.shape
        if features != self.input_size or batch == 0:
            return None
        return arrays_of(parts, self._state_shapes(batch))

    def update_(self, x: Tensor, state: Tensor | tuple[Tensor, ...]) -> Tensor | None:
        """One step in place: the new state written into `state`'s tensors (L, B, size), and
        the output returned, a view of the state (the top layer's new first part, which the
        next call overwrites too). None when x or state is not of the usual form, or a part is
        not contiguous, requires grad or shares memory with another (the layer's `step_` then
        steps and copies, or says what is wrong). Same results as `__call__`."""
        parts = state if isinstance(state, tuple) else (state,)
        arrays = recorded_arrays(x, parts, self._in_place, self.dtype)  # the state written last
        if arrays is None:
            arrays = self._checked_arrays(x, parts, self._writable_arrays)
            if arrays is None:
                return None
            self._in_place = make_record(parts, arrays, self.input_size)
            self._in_place_top = (parts[0][-1], arrays[0][-1])
            x = x if x.is_contiguous() else x.contiguous()
        out, top = self._in_place_top  # the kernels copy the top layer's new h there: onto itself
        address = x.data_ptr()
        self._backward = backward = not self._backward
        for layer, step in enumerate(self.steps):
            control = partner_control(step.weight_bytes)
            flags = self.kernel(
                address, *arrays, layer, *step.views, *arrays, top, backward, control
            )
            after_step(flags, step)
        increment_version(parts)
        return out

    def _writable_arrays(self, parts: tuple, shapes: tuple) -> tuple[np.ndarray, ...] | None:
        """Views of the state's parts that `update_` can write in place, or None."""
        if len(parts) != self.parts:
            return None
        for part, shape in zip(parts, shapes, strict=True):
            if not self._usual(part, shape) or part.requires_grad or not part.is_contiguous():
                return None
        if len(parts) == 2 and memory_overlaps(parts[0], parts[1]):
            return None
        return tuple(part.numpy() for part in parts)

    def _state_arrays(self, parts: tuple, shapes: tuple) -> tuple[np.ndarray, ...] | None:
        """NumPy arrays of the state's `parts` (zeros for (None,)), or None if they are not of
        the usual form."""
        if len(parts) == 1 and parts[0] is None:
            return tuple(np.zeros(shape, self.array_dtype) for shape in shapes)
        if len(parts) != self.parts:
            return None
        if not all(self._usual(p, shape) for p, shape in zip(parts, shapes, strict=True)):
            return None
        return tuple(tensor_array(p) for p in parts)

    def _usual(self, part: object, shape: tuple[int, int, int]) -> bool:
        return (
            isinstance(part, Tensor)
            and part.shape == shape
            and part.dtype == self.dtype
            and part.is_cpu
        )


_NAMES = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


def _plan(kind: str, cells: Sequence[torch.nn.Module]) -> tuple[list, object, tuple, tuple]:
    """(the cells' step objects, the layer kernel, the parameter names they read, the sizes of
    the state's parts (h, or h and c / s and h)) for a `StackStep` of `kind`."""
    if kind == "minimal":  # minGRU, minLSTM: h (L, B, H)
        from rnnkit.kernels import numba_variant_step as variant  # imports Numba

        steps = [variant.MinimalStep(c) for c in cells]
        sizes = (cells[0].hidden_size,)
        return steps, variant.minimal_layer_step, variant.MINIMAL_PARAMETERS, sizes
    weight_hh = cells[0].weight_hh  # (G * H, P)
    out_size = weight_hh.shape[1]
    if kind in ("lstm", "gru"):
        make = LSTMStep if kind == "lstm" else GRUStep
        steps = [make(c.weight_ih, c.weight_hh, c.bias_ih, c.bias_hh) for c in cells]
        if kind == "lstm":
            return steps, lstm_layer_step, _NAMES, (out_size, out_size)
        return steps, gru_layer_step, _NAMES, (out_size,)
    from rnnkit.kernels import numba_variant_step as variant  # imports Numba

    if kind == "variant_lstm":
        steps = [variant.VariantLSTMStep(c) for c in cells]
        sizes = (out_size, weight_hh.shape[0] // 4)  # h (L, B, P), c (L, B, H)
        return steps, variant.variant_lstm_layer_step, variant.LSTM_PARAMETERS, sizes
    if kind == "variant_gru":
        steps = [variant.VariantGRUStep(c) for c in cells]
        hidden = weight_hh.shape[0] // 3
        if cells[0].proj_size:  # (s, h): s (L, B, P), h (L, B, H)
            kernel, sizes = variant.variant_gru_proj_layer_step, (out_size, hidden)
        else:
            kernel, sizes = variant.variant_gru_layer_step, (hidden,)
        return steps, kernel, variant.GRU_PARAMETERS, sizes
    steps = [variant.VariantElmanStep(c) for c in cells]  # "variant_elman": h (L, B, P)
    return steps, variant.variant_elman_layer_step, variant.ELMAN_PARAMETERS, (out_size,)
