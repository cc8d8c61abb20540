"""Bad input to the layers raises a ValueError or TypeError naming the argument, what it got
and what it expected, before anything reaches torch's kernels."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

import rnnkit


@pytest.fixture(params=["reference", "torch"])
def lstm(request):
    return rnnkit.LSTM(3, 4, num_layers=2, batch_first=True, backend=request.param)


def test_wrong_feature_size(lstm):
    with pytest.raises(ValueError, match=r"input has 5 features.*input_size=3"):
        lstm(torch.randn(2, 6, 5))


def test_wrong_rank(lstm):
    with pytest.raises(ValueError, match=r"3-D.*got shape \(2, 6, 3, 1\)"):
        lstm(torch.randn(2, 6, 3, 1))


def test_batch_mismatch_between_input_and_state(lstm):
    h, c = torch.zeros(2, 5, 4), torch.zeros(2, 5, 4)
    with pytest.raises(ValueError, match=r"hx\[0\] must have shape \(2, 2, 4\).*got \(2, 5, 4\)"):
        lstm(torch.randn(2, 6, 3), (h, c))


def test_state_of_wrong_kind(lstm):
    with pytest.raises(TypeError, match="tuple of 2 tensors"):
        lstm(torch.randn(2, 6, 3), torch.zeros(2, 2, 4))
    with pytest.raises(TypeError, match="hx must be a tensor"):
        rnnkit.GRU(3, 4)(torch.randn(6, 2, 3), (torch.zeros(1, 2, 4), torch.zeros(1, 2, 4)))
    with pytest.raises(TypeError, match="tuple of 2 tensors .*got a float"):
        lstm(torch.randn(2, 6, 3), 0.0)
    for backend in ("torch", "numba"):  # a GRU's state in a tuple of one, as torch.nn refuses
        gru = rnnkit.GRU(3, 4, backend=backend)
        with pytest.raises(TypeError, match="hx must be a tensor .*got a tuple of 1"):
            gru(torch.randn(6, 2, 3), (torch.zeros(1, 2, 4),))
        with pytest.raises(TypeError, match="state must be a tensor .*got a list of 1"):
            gru.step(torch.randn(2, 3), [torch.zeros(1, 2, 4)])


@pytest.mark.parametrize("lengths", [[7, 2], [0, 3], [-1, 2]])
def test_lengths_out_of_range(lstm, lengths):
    with pytest.raises(ValueError, match=r"lengths must lie in \[1, 6\].*got values from"):
        lstm(torch.randn(2, 6, 3), lengths=torch.tensor(lengths))


def test_lengths_of_wrong_shape_or_dtype(lstm):
    with pytest.raises(ValueError, match=r"lengths must have shape \(2,\).*got \(3,\)"):
        lstm(torch.randn(2, 6, 3), lengths=torch.tensor([1, 2, 3]))
    with pytest.raises(TypeError, match="lengths must hold integers, got dtype torch.float32"):
        lstm(torch.randn(2, 6, 3), lengths=torch.tensor([1.0, 2.0]))


def test_lengths_with_a_packed_sequence(lstm):
    packed = pack_padded_sequence(torch.randn(2, 6, 3), torch.tensor([6, 3]), batch_first=True)
    with pytest.raises(ValueError, match="not both"):
        lstm(packed, lengths=torch.tensor([6, 3]))


def test_wrong_dtype(lstm):
    with pytest.raises(TypeError, match=r"input dtype torch.float64 does not match.*torch.float32"):
        lstm(torch.randn(2, 6, 3, dtype=torch.float64))
    with pytest.raises(TypeError, match="floating-point"):
        lstm(torch.ones(2, 6, 3, dtype=torch.int64))


def test_non_tensor_input(lstm):
    with pytest.raises(TypeError, match="input must be a torch.Tensor, got list"):
        lstm([[1.0, 2.0, 3.0]])
    with pytest.raises(TypeError, match="lengths must be a torch.Tensor, got str"):
        lstm(torch.randn(2, 6, 3), lengths="6")


def test_empty_sequence(lstm):
    with pytest.raises(ValueError, match="0 time steps"):
        lstm(torch.randn(2, 0, 3))


@pytest.mark.parametrize("inference", [False, True])
def test_step_input_checked_in_the_steps_terms(lstm, inference):
    """x (B, H_in) or (H_in,), named as the caller passed it, in training and on the compiled
    streaming route of inference."""
    lstm.train(not inference)
    with torch.set_grad_enabled(not inference):
        with pytest.raises(ValueError, match=r"x has 2 features \(shape \(4, 2\)\).*size=3"):
            lstm.step(torch.randn(4, 2))
        with pytest.raises(ValueError, match=r"x has 5 features \(shape \(5,\)\)"):
            lstm.step(torch.randn(5))
        with pytest.raises(ValueError, match=r"one time step.*got shape \(1, 4, 3\)"):
            lstm.step(torch.randn(1, 4, 3))
        with pytest.raises(ValueError, match="x has batch size 0"):
            lstm.step(torch.randn(0, 3))
        with pytest.raises(TypeError, match="x must be a torch.Tensor, got list"):
            lstm.step([[0.0, 1.0, 2.0]])
        _, state = lstm.step(torch.randn(4, 3))
        advance = lstm.step_ if inference else lstm.step  # step_ writes the state: no gradient
        with pytest.raises(ValueError, match=r"x has 2 features \(shape \(4, 2\)\)"):
            advance(torch.randn(4, 2), state)


def test_step_reset_checked(lstm):
    with pytest.raises(TypeError, match="reset must be a bool tensor"):
        lstm.step(torch.randn(4, 3), reset=torch.tensor([1, 0, 0, 1]))
    with pytest.raises(ValueError, match=r"reset must have shape \(4,\)"):
        lstm.step(torch.randn(4, 3), reset=torch.tensor([True]))


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda: rnnkit.LSTM(3, 0), "hidden_size must be an int >= 1, got 0"),
        (lambda: rnnkit.LSTM(3, 4, num_layers=0), "num_layers must be an int >= 1"),
        (lambda: rnnkit.LSTM(3, 4, proj_size=4), r"proj_size must be an int in \[0, hidden_size\)"),
        (lambda: rnnkit.GRU(3, 4, dropout=1.5), r"dropout must be a number in \[0, 1\]"),
        (lambda: rnnkit.RNN(3, 4, nonlinearity="gelu"), "nonlinearity must be 'tanh' or 'relu'"),
        (lambda: rnnkit.GRU(3, 4, backend="cuda"), "backend must be one of"),
        (lambda: rnnkit.Recurrent(rnnkit.GRUCell(3, 4), backend="torch"), "backend='torch' serves"),
    ],
)
def test_bad_constructor_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize(
    "make, option, value",
    [
        (lambda: rnnkit.ElmanCell(3, 4), "nonlinearity", "relu"),
        (lambda: rnnkit.RNN(3, 4, zoneout=0.1).cells[0], "nonlinearity", "relu"),
        (lambda: rnnkit.LSTM(3, 4, layer_norm=True).cells[0], "variant", rnnkit.Variant()),
        (lambda: rnnkit.GRU(3, 4, layer_norm=True).cells[0], "layer_norm_eps", 1e-3),
    ],
)
def test_a_built_cells_options_are_fixed(make, option, value):
    """The layers choose kernels and build streaming steps from these options: changing one on a
    built cell raises, naming it and how to get the other option, and leaves the cell as it was
    (which still copies and pickles)."""
    cell = make().eval()  # zoneout in eval: no draws
    before = getattr(cell, option)
    with pytest.raises(AttributeError, match=rf"{option} is fixed when .* is built.*{option}="):
        setattr(cell, option, value)
    assert getattr(cell, option) == before
    for twin in (copy.deepcopy(cell), pickle.loads(pickle.dumps(cell))):
        assert getattr(twin, option) == before
        x, state = torch.randn(2, 3), cell.zero_state(2, torch.empty(0))
        torch.testing.assert_close(twin(x, state), cell(x, state), rtol=0, atol=0)
