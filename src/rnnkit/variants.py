"""Cell variants: layer norm, peepholes, recurrent dropout, zoneout, weight drop, projection.

`VariantElmanCell`, `VariantLSTMCell` and `VariantGRUCell` compute the plain cells' step with the
options of a `Variant` switched on, one line of code per equation of their docstrings. They keep
the plain cells' parameters, names and gate order (`weight_ih`, `weight_hh`, `bias_ih`,
`bias_hh`, `weight_hr`; LSTM i|f|g|o, GRU r|z|n) and add their own (`ln_ih_weight`,
`weight_ci`, ...), so a torch.nn state_dict loads into them with only the new names missing.
With every option off they compute what the plain cells compute.

Random draws follow the papers: recurrent dropout draws one mask per sequence and weight drop one
dropped W_hh per forward pass (both held in a `SequenceNoise`, made by `cell.begin(batch, like)`,
which `rnnkit.layers.run_cell` calls once before its loop); zoneout draws a mask per step
(`zoneout_draws` draws a whole sequence's, the same numbers, for the compiled kernels in
`rnnkit.kernels.numba_variants`). In eval mode nothing is random: dropout and weight drop are
off and zoneout takes its expectation.

The drop-in layers build these cells from their constructor options (`rnnkit.LSTM(...,
layer_norm=True)`); the time loop lives in `rnnkit.layers`, minGRU and minLSTM in
`rnnkit.minimal`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnkit import init as rinit
from rnnkit.cells import (
    _ACTIVATIONS,
    State,
    _check_size,
    _GatedCell,
    activation_of_nonlinearity,
    fixed_option,
)


def check_rate(name: str, value: object) -> float:
    """`value` as a float in [0, 1), or a ValueError naming the option."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ValueError(f"{name} must be a number in [0, 1), got {value!r}")
    return float(value)


@dataclass(frozen=True)
class Variant:
    """Which variants a cell runs; every field at its default gives the plain cell's math."""

    layer_norm: bool = False  # LN per gate group (Ba, Kiros & Hinton 2016); LSTM and GRU
    peephole: bool = False  # LSTM: i, f see c_{t-1}, o sees c_t (Gers & Schmidhuber 2000)
    recurrent_dropout: float = 0.0  # one mask per sequence on h_{t-1} (Gal & Ghahramani 2016)
    zoneout: float = 0.0  # each unit of h keeps its previous value with this probability
    zoneout_cell: float | None = None  # LSTM: the zoneout rate of c; None: the same as zoneout
    weight_drop: float = 0.0  # DropConnect on W_hh, one draw per forward (Merity et al. 2017)

    def __post_init__(self) -> None:
        for name in ("layer_norm", "peephole"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")
        for name in ("recurrent_dropout", "zoneout", "weight_drop"):
            check_rate(name, getattr(self, name))
        if self.zoneout_cell is not None:
            check_rate("zoneout_cell", self.zoneout_cell)

    def on(self) -> list[str]:
        """The options that are on, e.g. ["layer_norm", "zoneout=0.1"]."""
        named = []
        for field in fields(self):
            value = getattr(self, field.name)
            if value is True:
                named.append(field.name)
            elif value:
                named.append(f"{field.name}={value}")
        return named

    @property
    def cell_zoneout(self) -> float:
        """The zoneout rate of the LSTM cell state c."""
        return self.zoneout if self.zoneout_cell is None else self.zoneout_cell


@dataclass(frozen=True)
class SequenceNoise:
    """The random draws that hold for one whole sequence; None where there are none. Masks, not
    masked weights: `step()` keeps them across calls, so they must hold no autograd graph."""

    h_mask: Tensor | None = None  # (B, P) recurrent-dropout mask m for h_{t-1}, scaled by 1/(1-p)
    weight_mask: Tensor | None = None  # (G*H, P) weight-drop mask M for W_hh, scaled by 1/(1-p)


def _keep_mask(shape: tuple[int, ...], rate: float, like: Tensor) -> Tensor | None:
    """Bernoulli(1 - rate) draws divided by 1 - rate (inverted dropout), or None if rate is 0.
    Drawn as uniform < 1 - rate: on the CPU 2.6x faster than torch's `bernoulli_` (0.82 against
    2.15 ms for a 1024 x 256 weight-drop mask, one thread), the same distribution."""
    if rate == 0:
        return None
    keep = 1 - rate
    return like.new_empty(shape).uniform_().lt_(keep).div_(keep)  # in place, as zoneout_draws


def zoneout(previous: Tensor, new: Tensor, rate: float, training: bool) -> Tensor:
    """Zoneout (Krueger et al. 2017): in training each unit keeps its previous value with
    probability `rate` (a fresh draw per call); in eval the expectation
    (1 - rate) * new + rate * previous."""
    if rate == 0:
        return new
    if not training:
        return (1 - rate) * new + rate * previous
    keep = torch.rand_like(new) < rate  # d_t: True where the unit keeps its previous value
    return torch.where(keep, previous, new)


def zoneout_draws(
    rates: list[tuple[float, int]],
    steps: int,
    batch: int,
    like: Tensor,
    training: bool,
    reverse: bool,
) -> list[Tensor | None]:
    """Zoneout's d for a whole sequence, for each (rate, units) of `rates` in the order a step
    applies them (LSTM: c, then h): (T, B, units) tensors indexed by time, None where the rate
    is 0. In training 1.0 where a unit keeps its previous value, drawn as the step loop draws
    them (`zoneout` at each step, from the first step the loop runs, the last in reverse): torch
    fills a tensor one number after another from the generator, so one draw of
    (T, B * sum(units)) is the loop's T draws of (B, units) each. In eval, the rate, as
    (1, 1, units) for the kernels to broadcast (`_numba_common.draws_at`)."""
    sizes = [units for rate, units in rates if rate > 0]
    if not training:  # the same rate at every step and sequence: (1, 1, units), broadcast
        return [like.new_full((1, 1, units), rate) if rate > 0 else None for rate, units in rates]
    uniform = torch.rand(steps, batch * sum(sizes), dtype=like.dtype, device=like.device)
    if reverse:
        uniform = uniform.flip(0)  # the loop's first draw belongs to the last step
    parts = iter(uniform.split([batch * units for units in sizes], dim=1))
    return [
        _below(next(parts), rate).unflatten(1, (batch, units)) if rate > 0 else None
        for rate, units in rates
    ]


def _below(uniform: Tensor, rate: float) -> Tensor:
    """d = uniform < rate, 1.0 or 0.0 in uniform's dtype: in place where uniform is contiguous
    (a third of a compare and a conversion's time), else written to new contiguous memory, as
    the kernels read it (one pass, instead of a strided one and a copy in each direction)."""
    if uniform.is_contiguous():
        return uniform.lt_(rate)
    return torch.lt(
        uniform, rate, out=torch.empty_like(uniform, memory_format=torch.contiguous_format)
    )


def gate_layer_norm(v: Tensor, gain: Tensor, shift: Tensor, gates: int, eps: float) -> Tensor:
    """LN(v) per gate group: v (B, G*H) normalised over each gate's H units, then gain and shift
    (G*H,) applied: LN(v)_j = gain_j (v_j - mean) / sqrt(var + eps) + shift_j."""
    grouped = v.unflatten(-1, (gates, v.shape[-1] // gates))  # (B, G, H)
    normed = F.layer_norm(grouped, grouped.shape[-1:], eps=eps).flatten(-2)  # (B, G*H)
    return torch.addcmul(shift, normed, gain)  # one pass, no temporary for normed * gain


class _VariantCell(_GatedCell):
    """What the three variant cells share: projection, LN parameters, the per-sequence draws of
    recurrent dropout and weight drop, and the gate pre-activations built from them."""

    variant = fixed_option("variant", "the `Variant` this cell runs")
    layer_norm_eps = fixed_option("layer_norm_eps", "layer norm's epsilon (torch.nn.LayerNorm's)")

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool,
        proj_size: int,
        variant: Variant,
        init: str,
        device: torch.device | str | None,
        dtype: torch.dtype | None,
    ) -> None:
        _check_size("hidden_size", hidden_size)
        if not isinstance(proj_size, int) or not 0 <= proj_size < hidden_size:
            raise ValueError(f"proj_size must be an int in [0, hidden_size), got {proj_size!r}")
        if not isinstance(variant, Variant):
            raise TypeError(f"variant must be a rnnkit.Variant, got {type(variant).__name__}")
        super().__init__(
            input_size, hidden_size, bias, proj_size or hidden_size, init, device, dtype
        )
        self.proj_size = proj_size
        self._variant = variant
        self._layer_norm_eps = 1e-5
        factory = {"device": device, "dtype": dtype}
        rows = self.gates * hidden_size
        if proj_size:
            self.weight_hr = nn.Parameter(torch.empty(proj_size, hidden_size, **factory))  # (P, H)
        else:
            self.register_parameter("weight_hr", None)
        for name in ("ln_ih_weight", "ln_ih_bias", "ln_hh_weight", "ln_hh_bias"):
            if variant.layer_norm:
                self.register_parameter(name, nn.Parameter(torch.empty(rows, **factory)))  # (G*H,)
            else:
                self.register_parameter(name, None)

    @property
    def output_size(self) -> int:
        return self.proj_size or self.hidden_size

    def reset_parameters(self) -> None:
        rinit.init_cell(self, self.init)
        with torch.no_grad():
            for name, param in self.named_parameters():
                if name.startswith("ln_"):
                    param.fill_(1.0 if name.endswith("_weight") else 0.0)  # gain 1, shift 0

    def sample_noise(self, batch: int, like: Tensor) -> SequenceNoise:
        """Draw the recurrent-dropout mask (B, P) and the weight-drop mask (G*H, P) for one
        sequence; nothing in eval mode."""
        if not self.training:
            return SequenceNoise()
        return SequenceNoise(
            h_mask=_keep_mask((batch, self.output_size), self.variant.recurrent_dropout, like),
            weight_mask=_keep_mask(tuple(self.weight_hh.shape), self.variant.weight_drop, like),
        )

    def begin(self, batch: int, like: Tensor) -> Callable[[Tensor, State], State]:
        """The step function for one sequence of `batch` samples: this cell with the sequence's
        draws fixed (the optional protocol hook that `rnnkit.layers.run_cell` calls)."""
        return functools.partial(self, noise=self.sample_noise(batch, like))

    def preactivations(self, x: Tensor, h: Tensor, noise: SequenceNoise) -> tuple[Tensor, Tensor]:
        r"""a^x = LN_x(W_ih x) + b_ih and a^h = LN_h(\tilde W_hh (m \odot h)) + b_hh, each
        (B, G*H); LN is the identity without layer_norm, m = 1 without recurrent dropout and
        \tilde W_hh = M \odot W_hh / (1 - p) with weight drop, else W_hh."""
        if noise.h_mask is not None:
            h = noise.h_mask * h  # m ⊙ h_{t-1}, one m per sequence
        weight_hh = (
            self.weight_hh if noise.weight_mask is None else noise.weight_mask * self.weight_hh
        )
        x_part = F.linear(x, self.weight_ih)  # (B, G*H)
        h_part = F.linear(h, weight_hh)  # (B, G*H)
        if self.variant.layer_norm:
            eps = self.layer_norm_eps
            x_part = gate_layer_norm(x_part, self.ln_ih_weight, self.ln_ih_bias, self.gates, eps)
            h_part = gate_layer_norm(h_part, self.ln_hh_weight, self.ln_hh_bias, self.gates, eps)
        if self.bias_ih is not None:
            x_part, h_part = x_part + self.bias_ih, h_part + self.bias_hh
        return x_part, h_part

    def project(self, h: Tensor) -> Tensor:
        """W_hr h (B, P) with a projection, else h."""
        return h if self.weight_hr is None else F.linear(h, self.weight_hr)

    def _noise(self, noise: SequenceNoise | None, batch: int, like: Tensor) -> SequenceNoise:
        """The draws to use: the sequence's, or fresh ones when the cell is called on its own."""
        return self.sample_noise(batch, like) if noise is None else noise

    def extra_repr(self) -> str:
        proj = f", proj_size={self.proj_size}" if self.proj_size else ""
        options = "".join(f", {name}" for name in self.variant.on())
        return f"{super().extra_repr()}{proj}{options}"


class VariantLSTMCell(_VariantCell):
    r"""LSTM step with variants (gate order i|f|g|o, torch.nn.LSTM's parameters).

    .. math::
        a^x &= \mathrm{LN}_x(W_{ih} x_t) + b_{ih} \qquad
        a^h = \mathrm{LN}_h(\tilde W_{hh} (m \odot h_{t-1})) + b_{hh} \\
        i &= \sigma(a^x_i + a^h_i + w_{ci} \odot c_{t-1}) \\
        f &= \sigma(a^x_f + a^h_f + w_{cf} \odot c_{t-1}) \\
        g &= \tanh(a^x_g + a^h_g) \\
        \hat c &= f \odot c_{t-1} + i \odot g \\
        o &= \sigma(a^x_o + a^h_o + w_{co} \odot \hat c) \\
        \hat h &= W_{hr} (o \odot \tanh(\mathrm{LN}_c(\hat c))) \\
        c_t &= d^c \odot c_{t-1} + (1 - d^c) \odot \hat c \\
        h_t &= d^h \odot h_{t-1} + (1 - d^h) \odot \hat h

    Each option switches on its part; off, the part is the identity (LN), zero (peepholes w_c),
    one (masks m, M) or absent (W_hr, d):

    - layer_norm (Ba, Kiros & Hinton 2016, their LSTM equations): LN on the input and recurrent
      pre-activations and on the cell state. LN's mean and variance are taken over each gate's
      H units separately (per gate group; the paper normalises the stacked 4H vector at once),
      with a gain and shift per unit: `ln_ih_weight`, `ln_ih_bias`, `ln_hh_weight`,
      `ln_hh_bias` (4H,), `ln_c_weight`, `ln_c_bias` (H,).
    - peephole (Gers & Schmidhuber 2000): diagonal weights `weight_ci`, `weight_cf`, `weight_co`
      (H,); i and f see c_{t-1}, o sees the new cell state.
    - recurrent_dropout (Gal & Ghahramani 2016): m (B, P), Bernoulli(1 - p) / (1 - p), one draw
      per sequence, on the recurrent input h_{t-1} of every gate.
    - weight_drop (Merity et al. 2017): \tilde W_hh = M ⊙ W_hh / (1 - p), M one draw of
      Bernoulli(1 - p) per element per forward pass, shared by the batch.
    - zoneout (Krueger et al. 2017): d^h, d^c Bernoulli(p_h), Bernoulli(p_c) drawn per step and
      unit in training; in eval d is replaced by its expectation p. h keeps zoneout's rate,
      c `zoneout_cell`'s (default the same).
    - proj_size (torch.nn.LSTM's): W_hr (P, H); h is (B, P), c stays (B, H).

    Shapes: x_t (B, H_in), h (B, P), c (B, H) with P = proj_size or H.
    """

    gates = 4

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        proj_size: int = 0,
        variant: Variant = Variant(),
        init: str = "torch",
        forget_bias: float | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(input_size, hidden_size, bias, proj_size, variant, init, device, dtype)
        self.forget_bias = forget_bias
        factory = {"device": device, "dtype": dtype}
        for name in ("weight_ci", "weight_cf", "weight_co"):
            if variant.peephole:
                self.register_parameter(name, nn.Parameter(torch.empty(hidden_size, **factory)))
            else:
                self.register_parameter(name, None)
        for name in ("ln_c_weight", "ln_c_bias"):
            if variant.layer_norm:
                self.register_parameter(name, nn.Parameter(torch.empty(hidden_size, **factory)))
            else:
                self.register_parameter(name, None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        super().reset_parameters()
        if self.forget_bias is not None:
            rinit.set_forget_bias(self, self.forget_bias)
        with torch.no_grad():
            bound = 1.0 / math.sqrt(self.hidden_size) if self.init == "torch" else 0.0
            for peephole in (self.weight_ci, self.weight_cf, self.weight_co):
                if peephole is not None:
                    nn.init.uniform_(peephole, -bound, bound)

    def zero_state(self, batch: int, like: Tensor) -> tuple[Tensor, Tensor]:
        return like.new_zeros(batch, self.output_size), like.new_zeros(batch, self.hidden_size)

    def forward(
        self, x: Tensor, state: tuple[Tensor, Tensor], noise: SequenceNoise | None = None
    ) -> tuple[Tensor, Tensor]:
        h, c = state
        x_part, h_part = self.preactivations(x, h, self._noise(noise, x.shape[0], x))
        a_i, a_f, a_g, a_o = (x_part + h_part).chunk(4, dim=-1)  # each (B, H)
        i = (a_i + _peep(self.weight_ci, c)).sigmoid()
        f = (a_f + _peep(self.weight_cf, c)).sigmoid()
        g = a_g.tanh()
        c_hat = f * c + i * g
        o = (a_o + _peep(self.weight_co, c_hat)).sigmoid()
        h_hat = self.project(o * self._norm_c(c_hat).tanh())
        c_new = zoneout(c, c_hat, self.variant.cell_zoneout, self.training)
        h_new = zoneout(h, h_hat, self.variant.zoneout, self.training)
        return h_new, c_new

    def _norm_c(self, c: Tensor) -> Tensor:
        """LN_c(c) over the H units with gain and shift (H,), or c without layer_norm."""
        if not self.variant.layer_norm:
            return c
        return gate_layer_norm(c, self.ln_c_weight, self.ln_c_bias, 1, self.layer_norm_eps)


def _peep(weight: Tensor | None, c: Tensor) -> Tensor | float:
    """w_c ⊙ c with peepholes, else 0."""
    return 0.0 if weight is None else weight * c


class VariantGRUCell(_VariantCell):
    r"""GRU step with variants (gate order r|z|n, torch.nn.GRU's parameters).

    .. math::
        s_{t-1} &= W_{hr} h_{t-1} \quad (\text{the recurrent input; } h_{t-1} \text{ without
        projection}) \\
        a^x &= \mathrm{LN}_x(W_{ih} x_t) + b_{ih} \qquad
        a^h = \mathrm{LN}_h(\tilde W_{hh} (m \odot s_{t-1})) + b_{hh} \\
        r &= \sigma(a^x_r + a^h_r) \\
        z &= \sigma(a^x_z + a^h_z) \\
        n &= \tanh(a^x_n + r \odot a^h_n) \\
        \hat h &= (1 - z) \odot n + z \odot h_{t-1} \\
        h_t &= d \odot h_{t-1} + (1 - d) \odot \hat h

    - layer_norm: LN per gate group on the input and recurrent pre-activations, as the
      layer-normalised GRU of Ba, Kiros & Hinton's code (their paper gives the LSTM's
      equations; the GRU has no cell state to normalise), with torch.nn.GRU's
      r ⊙ (W_hn h + b_hn) placement. Parameters `ln_ih_weight`, `ln_ih_bias`, `ln_hh_weight`,
      `ln_hh_bias` (3H,).
    - recurrent_dropout, weight_drop, zoneout: as in `VariantLSTMCell` (the mask m acts on the
      input of W_hh only, not on the z ⊙ h_{t-1} term).
    - proj_size: W_hr (P, H) (`weight_hr`, torch.nn.LSTM's name for its projection). The state
      is then the pair (s_t, h_t) = (W_hr h_t, h_t), (B, P) and (B, H), like LSTM's (h, c):
      the gates see the projection s, the update keeps the full h, and s is the output.

    Shapes: x_t (B, H_in); state h (B, H), or (s, h) with a projection.
    """

    gates = 3

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        proj_size: int = 0,
        variant: Variant = Variant(),
        init: str = "torch",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        _refuse_lstm_options(variant, "GRU")
        super().__init__(input_size, hidden_size, bias, proj_size, variant, init, device, dtype)
        self.reset_parameters()

    def zero_state(self, batch: int, like: Tensor) -> State:
        h = like.new_zeros(batch, self.hidden_size)
        return (like.new_zeros(batch, self.proj_size), h) if self.proj_size else h

    def forward(self, x: Tensor, state: State, noise: SequenceNoise | None = None) -> State:
        s, h = state if self.proj_size else (state, state)  # s: the recurrent input (B, P)
        x_part, h_part = self.preactivations(x, s, self._noise(noise, x.shape[0], x))
        x_r, x_z, x_n = x_part.chunk(3, dim=-1)  # each (B, H)
        h_r, h_z, h_n = h_part.chunk(3, dim=-1)
        r = (x_r + h_r).sigmoid()
        z = (x_z + h_z).sigmoid()
        n = (x_n + r * h_n).tanh()
        h_hat = (1 - z) * n + z * h
        h_new = zoneout(h, h_hat, self.variant.zoneout, self.training)
        return (self.project(h_new), h_new) if self.proj_size else h_new


class VariantElmanCell(_VariantCell):
    r"""Elman step with variants (torch.nn.RNN's parameters).

    .. math::
        \hat h &= W_{hr} f(W_{ih} x_t + b_{ih} + \tilde W_{hh} (m \odot h_{t-1}) + b_{hh}) \\
        h_t &= d \odot h_{t-1} + (1 - d) \odot \hat h

    - recurrent_dropout, weight_drop, zoneout: as in `VariantLSTMCell`.
    - proj_size: W_hr (P, H) (`weight_hr`); the state h is (B, P) and W_hh is (H, P), as in
      torch.nn.LSTM's projection.

    `f` is tanh (default), relu or a callable. Shapes: x_t (B, H_in), h (B, P), P = proj_size
    or H. layer_norm and peephole are not Elman variants.
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
        proj_size: int = 0,
        variant: Variant = Variant(),
        init: str = "torch",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        _refuse_lstm_options(variant, "Elman")
        if variant.layer_norm:
            raise ValueError("layer_norm is an LSTM and GRU variant, not an Elman one")
        if nonlinearity not in _ACTIVATIONS and not callable(nonlinearity):
            raise ValueError(
                f"nonlinearity must be 'tanh', 'relu' or a callable, got {nonlinearity!r}"
            )
        super().__init__(input_size, hidden_size, bias, proj_size, variant, init, device, dtype)
        self._nonlinearity = nonlinearity
        self.reset_parameters()

    def zero_state(self, batch: int, like: Tensor) -> Tensor:
        return like.new_zeros(batch, self.output_size)

    def forward(self, x: Tensor, h: Tensor, noise: SequenceNoise | None = None) -> Tensor:
        x_part, h_part = self.preactivations(x, h, self._noise(noise, x.shape[0], x))
        h_hat = self.project(self.activation(x_part + h_part))
        return zoneout(h, h_hat, self.variant.zoneout, self.training)


def _refuse_lstm_options(variant: Variant, cell: str) -> None:
    for name in ("peephole", "zoneout_cell"):
        if getattr(variant, name) not in (False, None):
            raise ValueError(f"{name} is an LSTM variant; the {cell} cell has no cell state")
