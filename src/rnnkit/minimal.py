"""minGRU and minLSTM (Feng et al. 2024, "Were RNNs All We Needed?"): cells and layers.

Their gates read only the input x_t, never h_{t-1}, so each is a linear recurrence
h_t = a_t ⊙ h_{t-1} + b_t whose coefficients are known for all steps at once. Each cell has a
sequential step (`forward`, for streaming and the reference loop) and a whole-sequence method
(`sequence`) that computes every h_t at once: on the CPU (float32, float64) with the compiled
`rnnkit.kernels.minimal_scan` (the gates and the sequential recurrence in one pass, forward and
backward), elsewhere with one parallel scan in log space, the paper's numerically stable
form. `rnnkit.layers.run_cell` takes `sequence` when a cell has it, so the layers `MinGRU` and
`MinLSTM` train over whole sequences with it (backend "auto") and stream with the step;
backend "reference" runs the step loop, and tests prove the routes equal.

This module builds on `rnnkit.layers` (the layers reuse its torch.nn-style naming); the plain
cells live in `rnnkit.cells`, the LSTM/GRU variants in `rnnkit.variants`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnkit import _sequence as seqs
from rnnkit import init as rinit
from rnnkit.cells import _check_size
from rnnkit.layers import _TorchLayout


def positive(v: Tensor) -> Tensor:
    """g(v) = v + 1/2 for v >= 0, sigmoid(v) for v < 0: the paper's positive candidate state."""
    return torch.where(v >= 0, v + 0.5, v.sigmoid())


def log_positive(v: Tensor) -> Tensor:
    """log g(v), computed without forming g(v): log(v + 1/2) or -softplus(-v)."""
    return torch.where(v >= 0, (F.relu(v) + 0.5).log(), -F.softplus(-v))


SCAN_CHUNK = 128  # steps per log-space scan; the state is carried exactly between chunks


def log_space_scan(log_a: Tensor, log_b: Tensor, h0: Tensor, chunk: int = SCAN_CHUNK) -> Tensor:
    r"""Every h_t of h_t = a_t ⊙ h_{t-1} + b_t (t = 1..T, over dim 0) at once, from log a_t and
    log b_t (a_t, b_t > 0) and any h_0:

    .. math::
        A_t = \prod_{k \le t} a_k, \qquad
        h_t = A_t h_0 + A_t \sum_{k \le t} b_k / A_k
            = e^{\log A_t} h_0
              + \exp(\log A_t + \mathrm{logcumsumexp}_{k \le t}(\log b_k - \log A_k))

    log A_t is a cumulative sum and the sum over k a log-cumulative-sum-exp, so nothing
    underflows however small A_t gets (Feng et al. 2024, after Heinsen 2023). The paper puts
    log h_0 into the scan and so needs h_0 > 0; the h_0 term is kept apart here, so any h_0 works.

    The two log terms above grow like |log A_t| and cancel, so their rounding error grows with
    the number of steps a scan spans (about 1e-4 relative after 3000 float32 steps). The scan
    therefore runs over chunks of `chunk` steps, each from the previous chunk's last h_t as its
    h_0: the same recurrence, exact, with the error of `chunk` steps.
    Shapes: log_a, log_b (T, B, H), h0 (B, H) -> h (T, B, H).
    """
    outputs = []
    for start in range(0, log_a.shape[0], chunk):
        log_a_star = torch.cumsum(log_a[start : start + chunk], dim=0)  # log A_t (C, B, H)
        log_b_part = log_a_star + torch.logcumsumexp(
            log_b[start : start + chunk] - log_a_star, dim=0
        )  # log(A_t sum_k b_k / A_k)
        outputs.append(log_a_star.exp() * h0 + log_b_part.exp())  # h_t (C, B, H)
        h0 = outputs[-1][-1]
    return torch.cat(outputs)


class _MinimalCell(nn.Module):
    """What minGRU and minLSTM share: `weight_ih`, `bias_ih` (gates blocks of H rows), the
    initialisers, the zero state and the scan over a whole sequence."""

    gates: int = 2
    scan_chunk: int = SCAN_CHUNK  # steps per log-space scan in `sequence`
    scan: str = "auto"  # `sequence`'s route: "auto", "compiled" or "log" (see `_uses_compiled`)

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
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
        self.output_size = hidden_size
        self.bias = bias
        self.init = init
        rows = self.gates * hidden_size
        factory = {"device": device, "dtype": dtype}
        self.weight_ih = nn.Parameter(torch.empty(rows, input_size, **factory))  # (G*H, H_in)
        if bias:
            self.bias_ih = nn.Parameter(torch.empty(rows, **factory))  # (G*H,)
        else:
            self.register_parameter("bias_ih", None)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """init="torch": U(-1/sqrt(H), 1/sqrt(H)) everywhere; "orthogonal": Xavier-uniform per
        gate block and zero bias (there is no recurrent matrix to make orthogonal)."""
        if self.init == "torch":
            bound = 1.0 / math.sqrt(self.hidden_size)
            for param in self.parameters():
                nn.init.uniform_(param, -bound, bound)
        else:
            for block in self.weight_ih.chunk(self.gates, dim=0):
                nn.init.xavier_uniform_(block)
            if self.bias_ih is not None:
                nn.init.zeros_(self.bias_ih)

    def zero_state(self, batch: int, like: Tensor) -> Tensor:
        return like.new_zeros(batch, self.hidden_size)

    def preactivations(self, x: Tensor) -> tuple[Tensor, ...]:
        """W_ih x + b_ih split into the gate blocks, each (..., H)."""
        return F.linear(x, self.weight_ih, self.bias_ih).chunk(self.gates, dim=-1)

    def coefficients(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(a_t, b_t) of h_t = a_t ⊙ h_{t-1} + b_t for x (..., H_in), each (..., H)."""
        raise NotImplementedError

    def log_coefficients(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(log a_t, log b_t) of h_t = a_t ⊙ h_{t-1} + b_t for x (T, B, H_in), each (T, B, H)."""
        raise NotImplementedError

    def forward(self, x: Tensor, h: Tensor) -> Tensor:
        a, b = self.coefficients(x)  # each (B, H)
        return a * h + b

    def _uses_compiled(self, x: Tensor) -> bool:
        """Whether `sequence` runs the compiled sequential recurrence: on the CPU in float32 or
        float64 (with scan "auto"; "compiled" insists, "log" takes the log-space scan)."""
        if self.scan != "auto":
            return self.scan == "compiled"
        return seqs.numba_can_read(x)

    def sequence(
        self, x: Tensor, h0: Tensor, lengths: Tensor | None, reverse: bool
    ) -> tuple[Tensor, Tensor]:
        """The whole sequence x (T, B, H_in) from h0 (B, H) with one scan; returns
        (outputs (T, B, H), final (B, H)) as `rnnkit.layers.run_cell` does: outputs past a
        sequence's length are zero, and in reverse each sequence starts at its own last step."""
        if self._uses_compiled(x) and seqs.autocast_enabled(x.device):
            with seqs.without_autocast(x.device):  # the kernel computes in float32/64
                return self.sequence(x, h0.to(x.dtype), lengths, reverse)
        order = _scan_order(x.shape[0], lengths, reverse, x.device)  # (T, B) or None
        if order is not None:
            x = _take(x, order)  # each sequence in the order the scan visits it
        if self._uses_compiled(x):
            from rnnkit import kernels  # Numba loads on the first call, not at import

            preactivations = F.linear(x, self.weight_ih, self.bias_ih)  # (T, B, G*H)
            h = kernels.minimal_scan(preactivations, h0, lstm=self.gates == 3)  # in scan order
        else:
            log_a, log_b = self.log_coefficients(x)
            h = log_space_scan(log_a, log_b, h0, self.scan_chunk)  # (T, B, H) in scan order
        final = h[-1] if lengths is None else _take(h, (lengths - 1)[None])[0]
        if order is not None:
            h = _take(h, order)  # back to time order: the permutation is its own inverse
        if lengths is not None:
            valid = torch.arange(x.shape[0], device=x.device)[:, None] < lengths  # (T, B)
            h = torch.where(valid[..., None], h, 0.0)
        return h, final

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}, bias={self.bias}"


def _scan_order(steps: int, lengths: Tensor | None, reverse: bool, device) -> Tensor | None:
    """For reverse: index (T, B) of the time step the scan reads at each position, each sequence
    backwards from its own last step, padding left in place; None for forward."""
    if not reverse:
        return None
    t = torch.arange(steps, device=device)[:, None]  # (T, 1)
    if lengths is None:
        return steps - 1 - t  # (T, 1): the same for every sequence
    return torch.where(t < lengths, lengths - 1 - t, t)  # (T, B)


def _take(v: Tensor, index: Tensor) -> Tensor:
    """v[index[t, b], b] for v (T, B, H) and index (T', B) (or (T', 1), the same for all b)."""
    index = index.expand(index.shape[0], v.shape[1])
    return v.gather(0, index[..., None].expand(-1, -1, v.shape[-1]))


class MinGRUCell(_MinimalCell):
    r"""minGRU, one step (Feng et al. 2024, the log-space version of their Algorithm).

    .. math::
        z_t &= \sigma(W_z x_t + b_z) \\
        \tilde h_t &= g(W_h x_t + b_h), \quad g(v) = v + 1/2 \ (v \ge 0), \ \sigma(v) \ (v < 0) \\
        h_t &= (1 - z_t) \odot h_{t-1} + z_t \odot \tilde h_t

    The scan (`sequence`) uses log a_t = log(1 - z_t) = -softplus(W_z x_t + b_z) and
    log b_t = log z_t + log \tilde h_t = -softplus(-(W_z x_t + b_z)) + log g(W_h x_t + b_h).

    Parameters: weight_ih (2H, H_in), bias_ih (2H,), blocks z|h. Shapes: x_t (B, H_in),
    h (B, H).
    """

    gates = 2

    def coefficients(self, x: Tensor) -> tuple[Tensor, Tensor]:
        a_z, a_h = self.preactivations(x)  # each (..., H)
        z = a_z.sigmoid()
        h_tilde = positive(a_h)
        return 1 - z, z * h_tilde  # h_t = (1 - z) h_{t-1} + z h~

    def log_coefficients(self, x: Tensor) -> tuple[Tensor, Tensor]:
        a_z, a_h = self.preactivations(x)  # each (T, B, H)
        log_z = -F.softplus(-a_z)
        log_one_minus_z = -F.softplus(a_z)
        return log_one_minus_z, log_z + log_positive(a_h)


class MinLSTMCell(_MinimalCell):
    r"""minLSTM, one step (Feng et al. 2024, the log-space version of their Algorithm).

    .. math::
        f_t &= \sigma(W_f x_t + b_f) \qquad i_t = \sigma(W_i x_t + b_i) \\
        \tilde h_t &= g(W_h x_t + b_h) \\
        f'_t &= f_t / (f_t + i_t) \qquad i'_t = i_t / (f_t + i_t) \\
        h_t &= f'_t \odot h_{t-1} + i'_t \odot \tilde h_t

    The scan uses, with d = softplus(-(W_f x + b_f)) - softplus(-(W_i x + b_i))
    = log i_t - log f_t: log a_t = log f'_t = -softplus(d) and
    log b_t = log i'_t + log \tilde h_t = -softplus(-d) + log g(W_h x_t + b_h).

    Parameters: weight_ih (3H, H_in), bias_ih (3H,), blocks f|i|h. Shapes: x_t (B, H_in),
    h (B, H).
    """

    gates = 3

    def coefficients(self, x: Tensor) -> tuple[Tensor, Tensor]:
        a_f, a_i, a_h = self.preactivations(x)  # each (..., H)
        f = a_f.sigmoid()
        i = a_i.sigmoid()
        h_tilde = positive(a_h)
        f_prime, i_prime = f / (f + i), i / (f + i)
        return f_prime, i_prime * h_tilde  # h_t = f' h_{t-1} + i' h~

    def log_coefficients(self, x: Tensor) -> tuple[Tensor, Tensor]:
        a_f, a_i, a_h = self.preactivations(x)  # each (T, B, H)
        d = F.softplus(-a_f) - F.softplus(-a_i)  # log i_t - log f_t
        log_f_prime = -F.softplus(d)
        log_i_prime = -F.softplus(-d)
        return log_f_prime, log_i_prime + log_positive(a_h)


class _MinimalLayer(_TorchLayout):
    """`Recurrent` over minimal cells, with torch.nn-style flat names (`weight_ih_l0`, ...)."""

    cell_class: type[_MinimalCell]  # set by MinGRU, MinLSTM

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
    ) -> None:
        def make(n: int) -> _MinimalCell:
            return self.cell_class(n, hidden_size, bias, init, device=device, dtype=dtype)

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
        self.proj_size = 0


class MinGRU(_MinimalLayer):
    """minGRU layer (see `MinGRUCell`): the arguments, inputs and outputs of `rnnkit.GRU`.

    backend "auto" runs whole sequences at once (`MinGRUCell.sequence`: the compiled sequential
    recurrence on the CPU, the log-space parallel scan elsewhere), "reference" with the
    loop over the step; `step()` streams with the step. Shapes: input (T, B, H_in) or
    (B, T, H_in) with batch_first, h_0 and h_n (D*num_layers, B, H), output (T, B, D*H).
    """

    cell_class = MinGRUCell


class MinLSTM(_MinimalLayer):
    """minLSTM layer (see `MinLSTMCell`): the arguments, inputs and outputs of `rnnkit.GRU` (its
    state is one tensor h, there is no cell state). backend "auto" runs `sequence`, "reference"
    the loop over the step; `step()` streams with the step."""

    cell_class = MinLSTMCell
