"""The streaming steps equal torch.nn.LSTMCell / torch.nn.GRUCell, and follow their parameters."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rnnkit import kernels


def cell_and_step(kind: str, input_size: int, hidden: int, bias: bool, dtype: torch.dtype):
    cell_class, step_class = {
        "lstm": (torch.nn.LSTMCell, kernels.LSTMStep),
        "gru": (torch.nn.GRUCell, kernels.GRUStep),
    }[kind]
    cell = cell_class(input_size, hidden, bias=bias, dtype=dtype)
    return cell, step_class(cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh)


@settings(max_examples=30, deadline=None)
@given(
    kind=st.sampled_from(["lstm", "gru"]),
    batch=st.integers(1, 6),
    input_size=st.integers(1, 5),
    hidden=st.integers(1, 9),
    bias=st.booleans(),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    seed=st.integers(0, 2**16),
)
def test_step_equals_torch_cell(kind, batch, input_size, hidden, bias, dtype, seed):
    torch.manual_seed(seed)
    cell, step = cell_and_step(kind, input_size, hidden, bias, dtype)
    state = torch.randn(batch, hidden, dtype=dtype)
    if kind == "lstm":
        state = (state, torch.randn(batch, hidden, dtype=dtype))
    with torch.no_grad():
        for _ in range(3):  # a few steps, each from the state the previous one returned
            x = torch.randn(batch, input_size, dtype=dtype)
            ours, reference = step(x, state), cell(x, state)
            torch.testing.assert_close(ours, reference)
            state = ours


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_step_follows_in_place_updates_and_notices_replaced_parameters(kind):
    cell, step = cell_and_step(kind, 3, 4, True, torch.float32)
    parameters = (cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh)
    x, h = torch.randn(2, 3), torch.randn(2, 4)
    state = (h, h) if kind == "lstm" else h
    with torch.no_grad():
        cell.weight_hh.mul_(2.0)  # an optimizer step changes the parameters in place
        torch.testing.assert_close(step(x, state), cell(x, state))
    assert step.uses(*parameters)
    cell.weight_hh.data = cell.weight_hh.detach().clone()  # same Parameter, new memory
    assert not step.uses(*parameters)


def test_step_rejects_wrong_gate_count():
    cell = torch.nn.GRUCell(3, 4)
    with pytest.raises(ValueError, match="weight_hh"):
        kernels.LSTMStep(cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh)
