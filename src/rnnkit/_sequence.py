"""Checking and normalising what a recurrent layer receives, and shaping what it returns.

A layer accepts what torch.nn.RNN/LSTM/GRU accept (a tensor, batch-first or not, batched or
unbatched, or a `PackedSequence`) plus `lengths=`. `prepare_input` turns all of it into one
time-major padded tensor with lengths; `finish_output` turns the output back into the form that
came in. States move between torch.nn's stacked layout (D*L, B, H) and one state per cell.
Every check raises a ValueError or TypeError naming the argument, what came and what is expected.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torch.autograd import forward_ad
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

State = Tensor | tuple[Tensor, ...]


@dataclass
class SequenceInput:
    """A layer's input, time-major: x (T, B, H_in), lengths (B,) or None when all equal T."""

    x: Tensor
    lengths: Tensor | None
    batched: bool
    packed: PackedSequence | None  # the packed input, to pack the output the same way


def _check_tensor(name: str, value: object) -> Tensor:
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    return value


def prepare_input(
    input: Tensor | PackedSequence,
    lengths: Tensor | None,
    *,
    input_size: int,
    batch_first: bool,
    like: Tensor,
) -> SequenceInput:
    """Validate `input` and `lengths` against the layer (whose parameter `like` gives dtype and
    device) and return them time-major."""
    if isinstance(input, PackedSequence):
        if lengths is not None:
            raise ValueError("pass either a PackedSequence or lengths=, not both")
        x, packed_lengths = pad_packed_sequence(input)  # (T, B, H_in), original batch order
        _check_features(x, input_size, like)
        lengths = _trim_lengths(packed_lengths.to(x.device), x.shape[0])
        return SequenceInput(x, lengths, batched=True, packed=input)
    x = _check_tensor("input", input)
    if x.dim() not in (2, 3):
        raise ValueError(
            f"input must be 3-D (batch, time, features) or (time, batch, features), or 2-D "
            f"(time, features) for one unbatched sequence; got shape {tuple(x.shape)}"
        )
    batched = x.dim() == 3
    if not batched:
        x = x.unsqueeze(1)
    elif batch_first:
        x = x.transpose(0, 1)
    _check_features(x, input_size, like)
    if lengths is not None:
        lengths = check_lengths(lengths, batch=x.shape[1], steps=x.shape[0], device=x.device)
    return SequenceInput(x, lengths, batched, packed=None)


def _check_features(x: Tensor, input_size: int, like: Tensor) -> None:
    """x (T, B, H_in) against the layer; the usual case (float, same dtype, both on the CPU,
    the right size) costs a few attribute reads, as the layer's own cost counts at small sizes."""
    dtype = x.dtype
    if dtype != like.dtype:
        if not x.is_floating_point():
            raise TypeError(f"input must be a floating-point tensor, got dtype {dtype}")
        raise TypeError(
            f"input dtype {dtype} does not match the layer's parameters ({like.dtype}); "
            f"convert one of them, e.g. input.to({like.dtype}) or layer.to({dtype})"
        )
    if not (x.is_cpu and like.is_cpu) and x.device != like.device:
        raise ValueError(
            f"input is on {x.device} but the layer's parameters are on {like.device}; "
            f"move one of them, e.g. input.to('{like.device}')"
        )
    steps, _, features = x.shape
    if features != input_size:
        raise ValueError(
            f"input has {features} features (last dim of shape {tuple(x.shape)}), "
            f"the layer expects input_size={input_size}"
        )
    if steps == 0:
        raise ValueError("input has 0 time steps; every sequence needs at least one step")


def check_lengths(lengths: object, *, batch: int, steps: int, device: torch.device) -> Tensor:
    """`lengths` as an int64 tensor (B,) on `device`, or None when every length equals T."""
    if isinstance(lengths, (list, tuple)):
        lengths = torch.as_tensor(lengths)
    lengths = _check_tensor("lengths", lengths)
    if lengths.dtype.is_floating_point or lengths.dtype == torch.bool or lengths.is_complex():
        raise TypeError(f"lengths must hold integers, got dtype {lengths.dtype}")
    if lengths.shape != (batch,):
        raise ValueError(
            f"lengths must have shape ({batch},), one per sequence, got {tuple(lengths.shape)}"
        )
    if batch == 0:
        return None
    low, high = int(lengths.min()), int(lengths.max())
    if low < 1 or high > steps:
        raise ValueError(
            f"lengths must lie in [1, {steps}] (the input has T={steps} steps), "
            f"got values from {low} to {high}"
        )
    return _trim_lengths(lengths.to(device=device, dtype=torch.int64), steps)


def _trim_lengths(lengths: Tensor, steps: int) -> Tensor | None:
    return None if bool((lengths == steps).all()) else lengths


def finish_output(out: Tensor, seq: SequenceInput, batch_first: bool) -> Tensor | PackedSequence:
    """Return the time-major output `out` (T, B, D*H_out) in the form the input came in."""
    if seq.packed is not None:
        return _repack(out, seq)
    if not seq.batched:
        return out.squeeze(1)
    return out.transpose(0, 1) if batch_first else out


def _repack(out: Tensor, seq: SequenceInput) -> PackedSequence:
    lengths = seq.lengths
    if lengths is None:
        lengths = torch.full((out.shape[1],), out.shape[0], dtype=torch.int64)
    order = seq.packed.sorted_indices
    if order is not None:
        out = out.index_select(1, order)
        lengths = lengths.index_select(0, order.to(lengths.device))
    packed = pack_padded_sequence(out, lengths.cpu(), enforce_sorted=True)
    return PackedSequence(
        packed.data, packed.batch_sizes, seq.packed.sorted_indices, seq.packed.unsorted_indices
    )


def split_state(
    hx: State | None, zero: list[State], *, batched: bool, name: str = "hx"
) -> list[State]:
    """One state per cell from torch.nn's stacked layout; `zero` holds the cells' zero states
    (their shapes are the expected ones). Unbatched states (D*L, H) are accepted for unbatched
    input."""
    if hx is None:
        return zero
    expected = zero[0] if isinstance(zero[0], tuple) else (zero[0],)
    if isinstance(hx, (tuple, list)) and len(expected) > 1:
        parts = hx
    elif isinstance(hx, Tensor) and len(expected) == 1:
        parts = (hx,)
    else:
        got = f"a {type(hx).__name__}"
        got += f" of {len(hx)}" if isinstance(hx, (tuple, list)) else ""
        raise TypeError(
            f"{name} must be {_kind(len(expected))} (one per state component), got {got}"
        )
    if len(parts) != len(expected):
        raise TypeError(
            f"{name} must be {_kind(len(expected))} (one per state component), "
            f"got {_kind(len(parts))}"
        )
    cells = len(zero)
    stacked = []
    for i, (part, ref) in enumerate(zip(parts, expected, strict=True)):
        label = f"{name}[{i}]" if len(parts) > 1 else name
        part = _check_tensor(label, part)
        if not batched:
            if part.dim() != 2:
                raise ValueError(
                    f"{label} must be 2-D (num_layers*directions, H) for unbatched input, "
                    f"got shape {tuple(part.shape)}"
                )
            part = part.unsqueeze(1)
        want = (cells, *ref.shape)
        if tuple(part.shape) != want:
            raise ValueError(
                f"{label} must have shape {want} (num_layers*directions, batch, size), got "
                f"{tuple(part.shape)}"
            )
        if part.dtype != ref.dtype and part.device == ref.device and autocast_enabled(ref.device):
            part = part.to(ref.dtype)  # a state an autocast region computed in lower precision
        if part.dtype != ref.dtype or part.device != ref.device:
            raise TypeError(
                f"{label} must be {ref.dtype} on {ref.device} like the input, "
                f"got {part.dtype} on {part.device}"
            )
        stacked.append(part)
    if len(expected) == 1:
        return [stacked[0][k] for k in range(cells)]
    return [tuple(s[k] for s in stacked) for k in range(cells)]


def memory_overlaps(a: Tensor, b: Tensor) -> bool:
    """Whether the memory spans of two tensors (first element to last) overlap: two parts of
    a state that a step writes in place must not."""

    def span(t: Tensor) -> tuple[int, int]:
        last = sum((size - 1) * stride for size, stride in zip(t.shape, t.stride(), strict=True))
        return t.data_ptr(), t.data_ptr() + (last + 1) * t.element_size()

    if a.numel() == 0 or b.numel() == 0:
        return False
    (a_start, a_end), (b_start, b_end) = span(a), span(b)
    return a_start < b_end and b_start < a_end


def numba_can_read(x: Tensor) -> bool:
    """Whether the Numba kernels can run on x: a plain CPU tensor of float32/64 (not a subclass,
    such as the fake tensors of `torch.export`'s tracing, which have no memory to read) outside
    torch.func's transforms (grad, vmap: their wrapped tensors and autograd do not reach into
    NumPy), forward-mode AD's dual levels (the kernels have no JVP) and `torch.jit.trace`
    (which would record the kernels' results as constants)."""
    if x.device.type != "cpu" or x.dtype not in NUMBA_DTYPES or type(x) is not Tensor:
        return False
    return not transformed()


def transformed() -> bool:
    """Whether a torch.func transform, a forward-mode AD dual level or `torch.jit.trace` is
    active here: computations that must stay in torch's operators (no compiled kernel)."""
    return (
        _functorch_interpreter() is not None
        or forward_ad._current_level >= 0
        or torch._C._get_tracing_state() is not None
    )


try:
    _functorch_interpreter = torch._C._functorch.peek_interpreter_stack
except AttributeError:  # a torch without functorch's C API: no transform can be active

    def _functorch_interpreter() -> None:
        return None


NUMBA_DTYPES = (torch.float32, torch.float64)  # what the compiled kernels compute in


def autocast_enabled(device: torch.device) -> bool:
    """Whether `torch.autocast` is on for `device`'s type here."""
    try:
        return torch.is_autocast_enabled(device.type)
    except TypeError:  # torch < 2.4: no device argument
        cpu = device.type == "cpu"
        return torch.is_autocast_cpu_enabled() if cpu else torch.is_autocast_enabled()


def without_autocast(device: torch.device):
    """A context that turns autocast off for `device`'s type: the compiled kernels compute in
    the parameters' float32 / float64, and so must the torch operators around them."""
    return torch.autocast(device_type=device.type, enabled=False)


def _kind(count: int) -> str:
    return "a tensor" if count == 1 else f"a tuple of {count} tensors"


def stack_state(states: list[State], *, batched: bool) -> State:
    """torch.nn's stacked layout (D*L, B, ...) from one state per cell."""
    if isinstance(states[0], tuple):
        out = tuple(torch.stack(parts) for parts in zip(*states, strict=True))
        return out if batched else tuple(s.squeeze(1) for s in out)
    out = torch.stack(states)
    return out if batched else out.squeeze(1)
