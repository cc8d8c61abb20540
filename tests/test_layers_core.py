"""The reference loop and the cells: gradcheck, the worked example, streaming steps, reset,
`Recurrent` over other cells, initialisers."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import rnnkit
from rnnkit import ElmanCell, GRUCell, LSTMCell, Recurrent
from rnnkit.init import init_cell


def test_worked_example_of_the_elman_recurrence():
    """W_x = [[.1, .2], [.3, .4]], W_h = [[.5, .6], [.7, .8]], b = [.1, .1], x_1 = [1, 2],
    h_0 = 0: W_x x_1 = [.5, 1.1], pre-activation [.6, 1.2], h_1 = tanh of it."""
    cell = ElmanCell(2, 2, bias=True, dtype=torch.float64)
    with torch.no_grad():
        cell.weight_ih.copy_(torch.tensor([[0.1, 0.2], [0.3, 0.4]]))
        cell.weight_hh.copy_(torch.tensor([[0.5, 0.6], [0.7, 0.8]]))
        cell.bias_ih.copy_(torch.tensor([0.1, 0.1]))
        cell.bias_hh.zero_()
    x_1 = torch.tensor([[1.0, 2.0]], dtype=torch.float64)
    h_0 = torch.zeros(1, 2, dtype=torch.float64)
    x_part, h_part = cell.gate_inputs(x_1, h_0)
    torch.testing.assert_close(
        x_part - cell.bias_ih, torch.tensor([[0.5, 1.1]], dtype=torch.float64)
    )
    torch.testing.assert_close(x_part + h_part, torch.tensor([[0.6, 1.2]], dtype=torch.float64))
    h_1 = cell(x_1, h_0)
    torch.testing.assert_close(h_1, torch.tanh(torch.tensor([[0.6, 1.2]], dtype=torch.float64)))
    torch.testing.assert_close(h_1, torch.tensor([[0.53704957, 0.83365461]], dtype=torch.float64))


@pytest.mark.parametrize(
    "layer",
    [
        lambda: rnnkit.RNN(
            2,
            3,
            2,
            nonlinearity="relu",
            bidirectional=True,
            dtype=torch.float64,
            backend="reference",
        ),
        lambda: rnnkit.RNN(2, 3, 1, dtype=torch.float64, backend="reference"),
        lambda: rnnkit.LSTM(
            2, 3, 2, proj_size=2, bidirectional=True, dtype=torch.float64, backend="reference"
        ),
        lambda: rnnkit.GRU(
            2, 3, 2, bidirectional=True, batch_first=True, dtype=torch.float64, backend="reference"
        ),
    ],
)
def test_reference_loop_passes_gradcheck(layer):
    torch.manual_seed(0)
    module = layer()
    x = torch.randn(3, 4, 2, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([4, 2, 1]) if module.batch_first else None

    def fn(x, *params):
        out, final = torch.func.functional_call(
            module,
            dict(zip([n for n, _ in module.named_parameters()], params, strict=True)),
            (x,),
            {"lengths": lengths},
        )
        final = torch.cat([s.flatten() for s in final]) if isinstance(final, tuple) else final
        return out, final

    params = [p.detach().clone().requires_grad_(True) for p in module.parameters()]
    assert torch.autograd.gradcheck(fn, (x, *params))


@settings(max_examples=25, deadline=None)
@given(
    kind=st.sampled_from(["rnn", "lstm", "lstm_proj", "gru"]),
    num_layers=st.integers(1, 3),
    batch=st.integers(1, 4),
    steps=st.integers(1, 7),
    seed=st.integers(0, 2**16),
)
def test_step_reproduces_forward(kind, num_layers, batch, steps, seed):
    torch.manual_seed(seed)
    layer = {
        "rnn": lambda: rnnkit.RNN(3, 4, num_layers),
        "lstm": lambda: rnnkit.LSTM(3, 4, num_layers),
        "lstm_proj": lambda: rnnkit.LSTM(3, 4, num_layers, proj_size=2),
        "gru": lambda: rnnkit.GRU(3, 4, num_layers),
    }[kind]()
    x = torch.randn(steps, batch, 3)
    expected_out, expected_final = layer(x)
    state, outputs = None, []
    for t in range(steps):
        out, state = layer.step(x[t], state)
        outputs.append(out)
    torch.testing.assert_close(torch.stack(outputs), expected_out)
    torch.testing.assert_close(state, expected_final)


def test_step_reset_zeroes_exactly_the_chosen_samples():
    torch.manual_seed(0)
    layer = rnnkit.LSTM(3, 4, num_layers=2)
    h, c = torch.randn(2, 5, 4), torch.randn(2, 5, 4)
    reset = torch.tensor([True, False, True, False, False])
    h_r, c_r = rnnkit.reset_state((h, c), reset)
    assert torch.all(h_r[:, reset] == 0) and torch.all(c_r[:, reset] == 0)
    assert torch.equal(h_r[:, ~reset], h[:, ~reset]) and torch.equal(c_r[:, ~reset], c[:, ~reset])
    x_t = torch.randn(5, 3)
    out, state = layer.step(x_t, (h, c), reset=reset)
    fresh_out, fresh_state = layer.step(x_t[reset], None)
    kept_out, kept_state = layer.step(x_t[~reset], (h[:, ~reset], c[:, ~reset]))
    torch.testing.assert_close(out[reset], fresh_out)
    torch.testing.assert_close(out[~reset], kept_out)
    torch.testing.assert_close(state[1][:, reset], fresh_state[1])
    torch.testing.assert_close(state[1][:, ~reset], kept_state[1])


def test_step_with_a_state_builds_no_zero_states_and_still_checks_it(monkeypatch):
    """A step fed a state checks it against zero states kept from the first such step (none
    allocated per step); a state for another batch size or of the wrong shape is still refused."""
    layer = rnnkit.GRU(3, 4, num_layers=2)  # training: the route through torch's cell kernel
    calls = []
    for cell in layer.cells:
        original = cell.zero_state
        monkeypatch.setattr(
            cell, "zero_state", lambda b, like, f=original: calls.append(b) or f(b, like)
        )
    out, state = layer.step(torch.randn(5, 3))  # a new stream: zeros, one per cell
    for _ in range(4):
        out, state = layer.step(torch.randn(5, 3), state)
    assert calls == [5, 5, 5, 5]  # the first step's zeros, and once the shapes to check against
    with pytest.raises(ValueError, match=r"state must have shape \(2, 3, 4\)"):
        layer.step(torch.randn(3, 3), state)  # batch 3 with batch 5's state
    with pytest.raises(ValueError, match=r"state must have shape \(2, 5, 4\)"):
        layer.step(torch.randn(5, 3), state[:1])


def test_step_refuses_bidirectional():
    with pytest.raises(ValueError, match="bidirectional"):
        rnnkit.GRU(3, 4, bidirectional=True).step(torch.randn(2, 3))


def test_unbatched_step():
    layer = rnnkit.GRU(3, 4)
    x = torch.randn(5, 3)
    out, final = layer(x)
    state = None
    for t in range(5):
        step_out, state = layer.step(x[t], state)
    torch.testing.assert_close(step_out, out[-1])
    torch.testing.assert_close(state, final)


def test_recurrent_over_our_cells_equals_the_drop_in_layers():
    torch.manual_seed(0)
    lstm = rnnkit.LSTM(3, 4, num_layers=2, bidirectional=True, backend="reference")
    generic = Recurrent(lambda n: LSTMCell(n, 4), input_size=3, num_layers=2, bidirectional=True)
    generic.load_state_dict(
        {k: v for k, v in zip(generic.state_dict(), lstm.state_dict().values(), strict=True)}
    )
    x, lengths = torch.randn(6, 2, 3), torch.tensor([6, 3])
    torch.testing.assert_close(generic(x, lengths=lengths), lstm(x, lengths=lengths))


class MinimalCell(torch.nn.Module):
    """A user's cell with only the protocol's essentials (no zero_state): a leaky integrator."""

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.input_size, self.hidden_size, self.output_size = input_size, hidden_size, hidden_size
        self.proj = torch.nn.Linear(input_size, hidden_size)

    def forward(self, x, h):
        return 0.5 * h + torch.tanh(self.proj(x))


def test_recurrent_runs_a_users_cell():
    torch.manual_seed(0)
    cell = MinimalCell(3, 4)
    layer = Recurrent(cell, bidirectional=True, batch_first=True)
    x = torch.randn(2, 5, 3)
    out, final = layer(x, lengths=torch.tensor([5, 2]))
    # by hand: forward over the first sequence, backward over the second's two steps
    h = torch.zeros(4)
    for t in range(5):
        h = 0.5 * h + torch.tanh(cell.proj(x[0, t]))
    torch.testing.assert_close(out[0, 4, :4], h)
    torch.testing.assert_close(final[0, 0], h)
    backward = layer.cells[1]
    h = torch.zeros(4)
    for t in (1, 0):
        h = 0.5 * h + torch.tanh(backward.proj(x[1, t]))
    torch.testing.assert_close(out[1, 0, 4:], h)
    torch.testing.assert_close(final[1, 1], h)
    assert torch.all(out[1, 2:] == 0)


def test_recurrent_with_a_module_needs_a_factory_for_deep_stacks():
    with pytest.raises(ValueError, match="factory"):
        Recurrent(GRUCell(3, 4), num_layers=2)
    deep = Recurrent(lambda n: GRUCell(n, 4), input_size=3, num_layers=2)
    assert deep.cells[1].input_size == 4


def test_elman_cell_takes_any_callable():
    cell = ElmanCell(2, 3, nonlinearity=torch.sigmoid)
    x, h = torch.randn(4, 2), torch.randn(4, 3)
    expected = torch.sigmoid(
        x @ cell.weight_ih.T + cell.bias_ih + h @ cell.weight_hh.T + cell.bias_hh
    )
    torch.testing.assert_close(cell(x, h), expected)


def test_orthogonal_init_and_forget_bias():
    cell = LSTMCell(5, 8, init="orthogonal", forget_bias=1.0)
    for block in cell.weight_hh.detach().chunk(4):
        torch.testing.assert_close(block @ block.T, torch.eye(8), atol=1e-5, rtol=0)
    bound = (6 / (5 + 8)) ** 0.5  # Xavier-uniform for a (8, 5) block
    assert cell.weight_ih.abs().max() <= bound
    total = cell.bias_ih + cell.bias_hh
    torch.testing.assert_close(total[8:16], torch.ones(8))
    torch.testing.assert_close(total[:8], torch.zeros(8))
    layer = rnnkit.LSTM(5, 8, num_layers=2, init="orthogonal", forget_bias=1.0)
    torch.testing.assert_close((layer.bias_ih_l1 + layer.bias_hh_l1)[8:16], torch.ones(8))


def test_torch_init_bound():
    cell = GRUCell(3, 16)
    init_cell(cell, "torch")
    for p in cell.parameters():
        assert p.abs().max() <= 16**-0.5
        assert p.abs().max() > 0.5 * 16**-0.5


@pytest.mark.parametrize(
    "make",
    [
        lambda **device: rnnkit.LSTM(3, 4, 2, bidirectional=True, forget_bias=1.0, **device),
        lambda **device: rnnkit.GRU(3, 4, layer_norm=True, init="orthogonal", **device),
        lambda **device: rnnkit.RNN(3, 4, proj_size=2, **device),
        lambda **device: rnnkit.MinLSTM(3, 4, **device),
    ],
)
def test_reset_parameters_initialises_as_the_constructor_did(make):
    """torch.nn's `reset_parameters()`: the same numbers as construction under the same seed
    (also after `to_empty()` from the meta device), and a user's cell without one is named."""
    torch.manual_seed(0)
    built = make()
    layer = make(device="meta").to_empty(device="cpu")
    torch.manual_seed(0)
    layer.reset_parameters()
    torch.testing.assert_close(layer.state_dict(), built.state_dict(), rtol=0, atol=0)
    with pytest.raises(TypeError, match="MinimalCell has no reset_parameters"):
        Recurrent(MinimalCell(3, 4)).reset_parameters()


def test_unknown_init_is_refused():
    with pytest.raises(ValueError, match="init must be one of"):
        rnnkit.GRU(3, 4, init="glorot")
    with pytest.raises(ValueError, match="LSTM"):
        init_cell(GRUCell(3, 4), "torch", forget_bias=1.0)


def test_dropout_between_layers_in_training_only():
    torch.manual_seed(0)
    layer = rnnkit.GRU(3, 4, num_layers=2, dropout=0.5, backend="reference")
    x = torch.randn(5, 2, 3)
    layer.eval()
    first, second = layer(x)[0], layer(x)[0]
    torch.testing.assert_close(first, second)
    layer.train()
    assert not torch.allclose(layer(x)[0], first)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_compiled_streaming_step_equals_forward(kind, dtype):
    """Under no_grad in eval, step() runs the compiled kernels; they reproduce forward."""
    torch.manual_seed(3)
    layer = {"lstm": rnnkit.LSTM, "gru": rnnkit.GRU}[kind](5, 8, num_layers=2, dtype=dtype)
    layer.eval()
    x = torch.randn(6, 3, 5, dtype=dtype)
    with torch.no_grad():
        expected_out, expected_final = layer(x)
        state, outputs = None, []
        for t in range(6):
            out, state = layer.step(x[t], state)
            outputs.append(out)
        assert layer.__dict__.get("_compiled") is not None  # the compiled route ran
        torch.testing.assert_close(torch.stack(outputs), expected_out)
        torch.testing.assert_close(state, expected_final)
        layer.cells[0].weight_hh.mul_(0.5)  # in-place updates show through the views
        expected_out, _ = layer(x[:1])
        out, _ = layer.step(x[0])
        torch.testing.assert_close(out, expected_out[0])
