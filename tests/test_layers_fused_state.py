"""On torch's fused route the layers hand the initial state to torch's kernel as given (no split
into cells and stack back): outputs, final states and the gradients that reach the initial
state equal the reference loop's, whatever form the state comes in."""

from __future__ import annotations

import pytest
import torch

import rnnkit

LAYERS = {
    "lstm": lambda **kw: rnnkit.LSTM(3, 5, **kw),
    "lstm_proj": lambda **kw: rnnkit.LSTM(3, 5, proj_size=2, **kw),
    "gru": lambda **kw: rnnkit.GRU(3, 5, **kw),
    "rnn": lambda **kw: rnnkit.RNN(3, 5, nonlinearity="relu", **kw),
}


def pair(kind: str):
    torch.manual_seed(0)
    options = {"num_layers": 2, "bidirectional": True, "dtype": torch.float64}
    fused = LAYERS[kind](backend="torch", **options)
    reference = LAYERS[kind](backend="reference", **options)
    reference.load_state_dict(fused.state_dict())
    return fused, reference


def initial_state(kind: str, batch: int) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    h = torch.randn(4, batch, 2 if kind == "lstm_proj" else 5, dtype=torch.float64)
    return (h, torch.randn(4, batch, 5, dtype=torch.float64)) if kind.startswith("lstm") else h


def outputs_and_grads(layer, x, state):
    state = (
        tuple(s.clone().requires_grad_() for s in state)
        if isinstance(state, tuple)
        else (state.clone().requires_grad_())
    )
    out, final = layer(x, state)
    finals = final if isinstance(final, tuple) else (final,)
    loss = (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum()
    loss = loss + sum((f * f.detach().cos()).sum() for f in finals)
    parts = state if isinstance(state, tuple) else (state,)
    grads = torch.autograd.grad(loss, parts)
    return out, final, grads


@pytest.mark.parametrize("kind", list(LAYERS))
def test_initial_state_gradients_equal_the_reference(kind):
    fused, reference = pair(kind)
    x = torch.randn(6, 3, 3, dtype=torch.float64)
    state = initial_state(kind, 3)
    torch.testing.assert_close(
        outputs_and_grads(fused, x, state), outputs_and_grads(reference, x, state)
    )


@pytest.mark.parametrize("kind", list(LAYERS))
def test_state_as_list_strided_or_none(kind):
    fused, reference = pair(kind)
    x = torch.randn(6, 3, 3, dtype=torch.float64)
    state = initial_state(kind, 6)
    strided = tuple(s[:, ::2] for s in state) if isinstance(state, tuple) else state[:, ::2]
    forms = [strided, None] + ([list(strided)] if isinstance(state, tuple) else [])
    for form in forms:
        torch.testing.assert_close(fused(x, form), reference(x, form))


class Doubled(torch.nn.Module):
    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return 2 * weight


@pytest.mark.parametrize("kind", list(LAYERS))
@pytest.mark.parametrize("name", ["weight_ih", "weight_hh"])
def test_a_parametrized_weight_reaches_the_fused_kernel(kind, name):
    """A weight under torch.nn.utils.parametrize is no longer in the cell's parameters; the
    fused route reads it through the cell's attribute, as the reference loop does, and the
    gradient reaches the original parameter."""
    fused, reference = pair(kind)
    for layer in (fused, reference):
        for cell in layer.cells:
            torch.nn.utils.parametrize.register_parametrization(cell, name, Doubled())
    x = torch.randn(4, 3, 3, dtype=torch.float64)
    out_fused, _ = fused(x)
    out_reference, _ = reference(x)
    torch.testing.assert_close(out_fused, out_reference)
    out_fused.sum().backward()
    out_reference.sum().backward()
    for a, b in zip(fused.cells, reference.cells, strict=True):
        original_a = a.parametrizations[name].original
        original_b = b.parametrizations[name].original
        torch.testing.assert_close(original_a.grad, original_b.grad)
