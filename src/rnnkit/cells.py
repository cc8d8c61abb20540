"""The math of one time step: `ElmanCell`, `LSTMCell`, `GRUCell`.

Cells are the specification every route through time is tested against. Each computes one step
with the equations in its docstring, one line of code per equation, and keeps torch.nn's
parameter names (`weight_ih`, `weight_hh`, `bias_ih`, `bias_hh`, `weight_hr`) and gate order
(LSTM i|f|g|o, GRU r|z|n), so weights move between rnnkit and torch.nn without reordering.

The cell protocol, which `rnnkit.Recurrent` runs over time (a user's cell needs only this):
    cell.input_size, cell.hidden_size    ints
    cell.output_size                     size of the h fed upward (hidden_size unless projected)
    cell.zero_state(batch, like)         the initial state: a Tensor h, or a tuple whose first
                                         element is h (LSTM: (h, c))
    cell(x_t, state) -> state            one step; x_t: (B, input_size)
and two optional hooks:
    cell.begin(batch, like) -> step      called once per sequence; returns the step function
                                         with per-sequence random draws fixed (recurrent
                                         dropout, weight drop; see `rnnkit.variants`)
    cell.sequence(x, state, lengths, reverse) -> (outputs, final)
                                         the whole sequence at once (minGRU's parallel scan,
                                         see `rnnkit.minimal`), with the loop's semantics

The time loop, lengths, directions and layers live in `rnnkit.layers`; initialisers in
`rnnkit.init`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnkit import init as rinit

State = Tensor | tuple[Tensor, ...]

_ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {"tanh": torch.tanh, "relu": torch.relu}


def fixed_option(name: str, doc: str) -> property:
    """A constructor option as a read-only attribute (kept as `_<name>`): the layers choose their
    kernels and build their streaming steps from it, so a built cell that changed it would
    compute the old option on some routes and the new one on others. Changing it raises."""
    key = "_" + name

    def get(self: nn.Module) -> object:
        return self.__dict__[key]

    def refuse(self: nn.Module, value: object) -> None:
        raise AttributeError(
            f"{name} is fixed when {type(self).__name__} is built; build a new one with "
            f"{name}={value!r} and copy the parameters over "
            "(new.load_state_dict(old.state_dict()))"
        )

    return property(get, refuse, doc=doc)


@property
def activation_of_nonlinearity(self: nn.Module) -> Callable[[Tensor], Tensor]:
    """An Elman cell's f, from its `nonlinearity`: torch.tanh, torch.relu or the callable given."""
    f = self.nonlinearity
    return _ACTIVATIONS[f] if isinstance(f, str) else f


def _check_size(name: str, value: int, minimum: int = 1) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


class _GatedCell(nn.Module):
    """Parameters shared by the three cells: `gates` blocks of H rows each, torch.nn's layout."""

    gates: int = 1

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        recurrent_size: int | None = None,
        init: str = "torch",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        rinit.check_scheme(init)
        _check_size("input_size", input_size)
        _check_size("hidden_size", hidden_size)
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.bias = bias
        self.init = init
        recurrent_size = hidden_size if recurrent_size is None else recurrent_size
        rows = self.gates * hidden_size
        factory = {"device": device, "dtype": dtype}
        self.weight_ih = nn.Parameter(torch.empty(rows, input_size, **factory))  # (G*H, H_in)
        self.weight_hh = nn.Parameter(torch.empty(rows, recurrent_size, **factory))  # (G*H, H|P)
        if bias:
            self.bias_ih = nn.Parameter(torch.empty(rows, **factory))  # (G*H,)
            self.bias_hh = nn.Parameter(torch.empty(rows, **factory))  # (G*H,)
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)

    @property
    def output_size(self) -> int:
        return self.hidden_size

    def reset_parameters(self) -> None:
        rinit.init_cell(self, self.init)

    def zero_state(self, batch: int, like: Tensor) -> State:
        return like.new_zeros(batch, self.hidden_size)

    def gate_inputs(self, x: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        """W_ih x + b_ih and W_hh h + b_hh, each (B, G*H)."""
        return F.linear(x, self.weight_ih, self.bias_ih), F.linear(h, self.weight_hh, self.bias_hh)

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}, bias={self.bias}"


class ElmanCell(_GatedCell):
    r"""The Elman recurrence, one step.

    .. math::
        h_t = f(W_{ih} x_t + b_{ih} + W_{hh} h_{t-1} + b_{hh})

    `f` is tanh (default), relu, or any callable Tensor -> Tensor (`nonlinearity=`).

    Shapes: x_t (B, H_in), h (B, H). Parameters: weight_ih (H, H_in), weight_hh (H, H),
    bias_ih (H,), bias_hh (H,) — torch.nn.RNNCell's.
    """

    gates = 1
    nonlinearity = fixed_option("nonlinearity", "'tanh', 'relu' or the callable f")
    activation = activation_of_nonlinearity

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        nonlinearity: str | Callable[[Tensor], Tensor] = "tanh",
        init: str = "torch",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(input_size, hidden_size, bias, init=init, device=device, dtype=dtype)
        if isinstance(nonlinearity, str):
            if nonlinearity not in _ACTIVATIONS:
                raise ValueError(
                    f"nonlinearity must be 'tanh', 'relu' or a callable, got {nonlinearity!r}"
                )
        elif not callable(nonlinearity):
            raise TypeError(f"nonlinearity must be a str or a callable, got {type(nonlinearity)}")
        self._nonlinearity = nonlinearity
        self.reset_parameters()

    def forward(self, x: Tensor, h: Tensor) -> Tensor:
        x_part, h_part = self.gate_inputs(x, h)
        return self.activation(x_part + h_part)

    def extra_repr(self) -> str:
        name = self.nonlinearity if isinstance(self.nonlinearity, str) else "callable"
        return f"{super().extra_repr()}, nonlinearity={name}"


class LSTMCell(_GatedCell):
    r"""Long short-term memory, one step (Hochreiter & Schmidhuber 1997; gate order i|f|g|o).

    .. math::
        i &= \sigma(W_{ii} x + b_{ii} + W_{hi} h + b_{hi}) \\
        f &= \sigma(W_{if} x + b_{if} + W_{hf} h + b_{hf}) \\
        g &= \tanh(W_{ig} x + b_{ig} + W_{hg} h + b_{hg}) \\
        o &= \sigma(W_{io} x + b_{io} + W_{ho} h + b_{ho}) \\
        c' &= f \odot c + i \odot g \\
        h' &= o \odot \tanh(c') \quad (\text{then } h' = W_{hr} h' \text{ if proj\_size} > 0)

    Shapes: x (B, H_in), h (B, P) with P = proj_size or H, c (B, H). Parameters: weight_ih
    (4H, H_in), weight_hh (4H, P), bias_ih (4H,), bias_hh (4H,), weight_hr (P, H) — the names
    and layout of torch.nn.LSTM's layer.
    """

    gates = 4

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        proj_size: int = 0,
        init: str = "torch",
        forget_bias: float | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        _check_size("hidden_size", hidden_size)
        if not isinstance(proj_size, int) or not 0 <= proj_size < hidden_size:
            raise ValueError(f"proj_size must be an int in [0, hidden_size), got {proj_size!r}")
        super().__init__(
            input_size, hidden_size, bias, proj_size or hidden_size, init, device, dtype
        )
        self.proj_size = proj_size
        self.forget_bias = forget_bias
        if proj_size:
            self.weight_hr = nn.Parameter(
                torch.empty(proj_size, hidden_size, device=device, dtype=dtype)
            )  # (P, H)
        else:
            self.register_parameter("weight_hr", None)
        self.reset_parameters()

    @property
    def output_size(self) -> int:
        return self.proj_size or self.hidden_size

    def reset_parameters(self) -> None:
        rinit.init_cell(self, self.init, forget_bias=self.forget_bias)

    def zero_state(self, batch: int, like: Tensor) -> tuple[Tensor, Tensor]:
        return like.new_zeros(batch, self.output_size), like.new_zeros(batch, self.hidden_size)

    def forward(self, x: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        h, c = state
        x_part, h_part = self.gate_inputs(x, h)
        i, f, g, o = (x_part + h_part).chunk(4, dim=-1)  # each (B, H)
        c = f.sigmoid() * c + i.sigmoid() * g.tanh()
        h = o.sigmoid() * c.tanh()
        if self.weight_hr is not None:
            h = F.linear(h, self.weight_hr)  # (B, P)
        return h, c

    def extra_repr(self) -> str:
        proj = f", proj_size={self.proj_size}" if self.proj_size else ""
        return f"{super().extra_repr()}{proj}"


class GRUCell(_GatedCell):
    r"""Gated recurrent unit, one step (Cho et al. 2014; gate order r|z|n as torch.nn.GRU).

    .. math::
        r &= \sigma(W_{ir} x + b_{ir} + W_{hr} h + b_{hr}) \\
        z &= \sigma(W_{iz} x + b_{iz} + W_{hz} h + b_{hz}) \\
        n &= \tanh(W_{in} x + b_{in} + r \odot (W_{hn} h + b_{hn})) \\
        h' &= (1 - z) \odot n + z \odot h

    Shapes: x (B, H_in), h (B, H). Parameters: weight_ih (3H, H_in), weight_hh (3H, H),
    bias_ih (3H,), bias_hh (3H,).
    """

    gates = 3

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        init: str = "torch",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(input_size, hidden_size, bias, init=init, device=device, dtype=dtype)
        self.reset_parameters()

    def forward(self, x: Tensor, h: Tensor) -> Tensor:
        x_part, h_part = self.gate_inputs(x, h)
        x_r, x_z, x_n = x_part.chunk(3, dim=-1)  # each (B, H)
        h_r, h_z, h_n = h_part.chunk(3, dim=-1)
        r = (x_r + h_r).sigmoid()
        z = (x_z + h_z).sigmoid()
        n = (x_n + r * h_n).tanh()
        return (1 - z) * n + z * h
