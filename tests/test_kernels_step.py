"""The streaming steps equal torch.nn.LSTMCell / torch.nn.GRUCell, and follow their parameters."""

from __future__ import annotations

import functools

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

import rnnkit
from rnnkit import kernels
from rnnkit.kernels import numba_step


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
@pytest.mark.parametrize("batch", [1, 3, 6])
def test_steps_read_the_weights_in_alternate_directions_with_the_same_result(kind, batch):
    """Successive calls read the weights first-to-last and last-to-first (each row's sum the
    same): the same input and state give bit-identical outputs on both calls, and both equal
    torch's cell. H = 13: blocks of 8 rows and a remainder; batch 6: blocks of 4 and two more."""
    torch.manual_seed(batch)
    cell, step = cell_and_step(kind, 7, 13, True, torch.float32)
    layer = {"lstm": rnnkit.LSTM, "gru": rnnkit.GRU}[kind](7, 13, num_layers=2).eval()
    x = torch.randn(batch, 7)
    h = torch.randn(batch, 13)
    state = (h, torch.randn(batch, 13)) if kind == "lstm" else h
    stacked = tuple(torch.stack([s, s]) for s in state) if kind == "lstm" else torch.stack([h, h])
    with torch.no_grad():
        first, second = step(x, state), step(x, state)
        assert step._backward is False  # two calls: forward, then backward
        torch.testing.assert_close(first, second, rtol=0, atol=0)
        torch.testing.assert_close(first, cell(x, state))
        layer_first, layer_second = layer.step(x, stacked), layer.step(x, stacked)
        torch.testing.assert_close(layer_first, layer_second, rtol=0, atol=0)
        torch.testing.assert_close(layer_first[0], layer(x[None], stacked)[0][0])


@pytest.mark.parametrize(
    "make",
    [
        lambda: rnnkit.LSTM(7, 13, num_layers=2, layer_norm=True, peephole=True, proj_size=5),
        lambda: rnnkit.GRU(7, 13, num_layers=2, layer_norm=True, proj_size=6),
        lambda: rnnkit.RNN(7, 13, nonlinearity="relu", proj_size=4, zoneout=0.2),
        lambda: rnnkit.MinLSTM(7, 13, num_layers=2),
    ],
)
@pytest.mark.parametrize("batch", [1, 6])
def test_variant_steps_alternate_directions_with_the_same_result(make, batch):
    """The variant and minimal steps alternate their weight reads too: two calls with the same
    input and state are bit-identical, and equal the layer's forward."""
    torch.manual_seed(batch)
    layer = make().eval()
    x = torch.randn(batch, 7)
    with torch.no_grad():
        _, state = layer(torch.randn(3, batch, 7))
        first, second = layer.step(x, state), layer.step(x, state)
        assert layer.__dict__["_compiled"] is not None  # the compiled steps ran
        torch.testing.assert_close(first, second, rtol=0, atol=0)
        torch.testing.assert_close(first[0], layer(x[None], state)[0][0])


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


def layer_and_reference(kind: str, input_size: int, hidden: int, layers: int, dtype):
    """rnnkit's layer (eval) and torch.nn's with the same weights."""
    reference = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[kind](
        input_size, hidden, layers, dtype=dtype
    )
    layer = {"lstm": rnnkit.LSTM, "gru": rnnkit.GRU}[kind](input_size, hidden, layers, dtype=dtype)
    layer.load_state_dict(reference.state_dict())
    return layer.eval(), reference.eval()


@settings(max_examples=25, deadline=None)
@given(
    kind=st.sampled_from(["lstm", "gru"]),
    layers=st.integers(1, 3),
    batch=st.integers(1, 9),
    input_size=st.integers(1, 6),
    hidden=st.integers(1, 11),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    seed=st.integers(0, 2**16),
)
def test_layer_step_equals_torch_layer(kind, layers, batch, input_size, hidden, dtype, seed):
    """`step()` on the compiled route (state fed back as returned, so its arrays are reused)
    equals torch.nn's layer run over the same sequence, output and state at every step."""
    torch.manual_seed(seed)
    layer, reference = layer_and_reference(kind, input_size, hidden, layers, dtype)
    x = torch.randn(4, batch, input_size, dtype=dtype)
    with torch.no_grad():
        expected_out, _ = reference(x)
        state = None
        for t in range(4):
            out, state = layer.step(x[t], state)
            torch.testing.assert_close(out, expected_out[t])
            torch.testing.assert_close(state, reference(x[: t + 1])[1])
    assert isinstance(layer.__dict__["_compiled"], numba_step.StackStep)  # the compiled route ran


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_returned_state_and_output_stay_valid(kind):
    """Nothing the caller holds is overwritten by later steps, and output and state do not
    share memory."""
    torch.manual_seed(0)
    layer, _ = layer_and_reference(kind, 3, 5, 2, torch.float32)
    x = torch.randn(2, 3)
    with torch.no_grad():
        out, state = layer.step(x)
        held = (out.clone(), _clone(state))
        for _ in range(3):
            newer_out, newer_state = layer.step(x, state)
        torch.testing.assert_close((out, state), held, rtol=0, atol=0)
        newer_out.add_(1.0)  # the caller edits the output in place
        torch.testing.assert_close(_first(newer_state)[-1], newer_out - 1.0)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_step_sees_changes_to_the_state_it_returned(kind):
    """A returned state passed back is read again: in-place edits and swapped memory count."""
    torch.manual_seed(1)
    layer, reference = layer_and_reference(kind, 3, 4, 1, torch.float64)
    x = torch.randn(2, 3, dtype=torch.float64)
    with torch.no_grad():
        _, state = layer.step(x)
        _first(state).mul_(0.5)  # in place: same memory
        torch.testing.assert_close(layer.step(x, state), _one_step(reference, x, state))
        _, state = layer.step(x)
        _first(state).set_(torch.randn(1, 2, 4, dtype=torch.float64))  # new memory
        torch.testing.assert_close(layer.step(x, state), _one_step(reference, x, state))


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_cell_step_rereads_a_fed_back_state_that_changed(kind):
    """`LSTMStep` / `GRUStep` reuse the arrays of the state they returned when it comes back,
    yet see in-place edits, swapped memory and other tensors, as torch.nn's cell does."""
    torch.manual_seed(3)
    cell, step = cell_and_step(kind, 3, 4, True, torch.float64)
    x = torch.randn(2, 3, dtype=torch.float64)
    zeros = torch.zeros(2, 4, dtype=torch.float64)
    state = (zeros, zeros.clone()) if kind == "lstm" else zeros
    with torch.no_grad():
        for change in (None, "in place", "new memory", "another tensor"):
            state = step(x, state)
            first = state[0] if kind == "lstm" else state
            if change == "in place":
                first.mul_(-2.0)
            elif change == "new memory":
                first.set_(torch.randn(2, 4, dtype=torch.float64))
            elif change == "another tensor":
                state = (first + 1.0, state[1]) if kind == "lstm" else first + 1.0
            torch.testing.assert_close(step(x, state), cell(x, state), rtol=0, atol=1e-12)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_cell_step_reads_inputs_of_any_layout(kind):
    """The kernels read x by its address (`rows_at`): a view with a storage offset, a strided
    view, a transposed one and one that requires grad give torch's cell's result."""
    torch.manual_seed(4)
    cell, step = cell_and_step(kind, 5, 7, True, torch.float32)
    big = torch.randn(9, 10)
    inputs = {
        "offset": torch.randn(40)[7:22].view(3, 5),  # contiguous, 7 numbers in
        "rows of a larger tensor": big[4:7, :5],
        "strided": big[1:4, ::2],
        "transposed": torch.randn(5, 3).t(),
        "requires grad": torch.randn(3, 5, requires_grad=True),
    }
    state = torch.randn(3, 7)
    if kind == "lstm":
        state = (state, torch.randn(3, 7))
    with torch.no_grad():
        for name, x in inputs.items():
            torch.testing.assert_close(step(x, state), cell(x, state), msg=name)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_step_unusual_inputs_take_the_checked_path(kind):
    """A list state, a strided or grad-requiring input, an unbatched input and a reset all
    still give torch.nn's result; a state of the wrong shape gives the layer's error."""
    torch.manual_seed(2)
    layer, reference = layer_and_reference(kind, 3, 4, 2, torch.float32)
    x = torch.randn(3, 6)[:, ::2].requires_grad_()  # (3, 3), not contiguous
    h = torch.randn(2, 3, 4)
    state = (h, torch.randn(2, 3, 4)) if kind == "lstm" else h
    with torch.no_grad():
        expected_out, expected_state = reference(x[None], state)
        listed = list(state) if kind == "lstm" else state
        torch.testing.assert_close(layer.step(x, listed), (expected_out[0], expected_state))
        torch.testing.assert_close(layer.step(x, state), (expected_out[0], expected_state))
        unbatched = _map(state, lambda s: s[:, 0])
        out, new = layer.step(x[0], unbatched)
        torch.testing.assert_close(out, expected_out[0, 0])
        torch.testing.assert_close(new, _map(expected_state, lambda s: s[:, 0]))
        reset = torch.tensor([True, False, False])
        out, _ = layer.step(x, state, reset=reset)
        torch.testing.assert_close(out[0], layer.step(x[:1])[0][0])
        with pytest.raises(ValueError, match=r"state(\[0\])? must have shape \(2, 3, 4\)"):
            layer.step(x, _map(state, lambda s: s[:, :2]))


def test_stack_step_rebuilds_when_a_parameter_is_replaced():
    torch.manual_seed(3)
    layer, reference = layer_and_reference("gru", 3, 4, 2, torch.float32)
    x = torch.randn(1, 3)
    with torch.no_grad():
        layer.step(x)
        first = layer.__dict__["_compiled"]
        layer.cells[1].weight_hh.data = torch.randn(12, 4)  # same Parameter, new memory
        reference.weight_hh_l1.data = layer.cells[1].weight_hh.detach().clone()
        torch.testing.assert_close(layer.step(x)[0], reference(x[None])[0][0])
    assert layer.__dict__["_compiled"] is not first


def _one_step(reference, x, state):
    out, new = reference(x[None], state)
    return out[0], new


def _first(state):
    return state[0] if isinstance(state, tuple) else state


def _map(state, function):
    return tuple(function(s) for s in state) if isinstance(state, tuple) else function(state)


def _clone(state):
    return _map(state, torch.clone)


# ---- the layer's step in place ---------------------------------------------------------------

IN_PLACE_LAYERS = {
    "lstm": lambda: rnnkit.LSTM(5, 7, num_layers=2),
    "gru": lambda: rnnkit.GRU(5, 7, num_layers=3),
    "gru layer norm zoneout": lambda: rnnkit.GRU(5, 7, 2, layer_norm=True, zoneout=0.3),
    "gru projection zoneout": lambda: rnnkit.GRU(5, 7, 2, proj_size=3, zoneout=0.3),
    "lstm peephole projection zoneout": lambda: rnnkit.LSTM(
        5, 7, 2, peephole=True, proj_size=4, zoneout=0.3
    ),
    "rnn relu zoneout": lambda: rnnkit.RNN(5, 7, 2, nonlinearity="relu", zoneout=0.3),
    "mingru": lambda: rnnkit.MinGRU(5, 7, num_layers=2),
}


@pytest.mark.parametrize("name", list(IN_PLACE_LAYERS))
@pytest.mark.parametrize("batch", [1, 3])
def test_layer_step_in_place_equals_step_bit_for_bit(name, batch):
    """`step_` on the compiled route (its output a view of the state: nothing allocated)
    writes into the state the bits `step()` returns, for every kind of compiled stack; every
    layer kernel reads its old state at a position before writing it there."""
    torch.manual_seed(batch)
    layer = IN_PLACE_LAYERS[name]().eval()
    with torch.no_grad():
        _, state = layer.step(torch.randn(batch, 5))
        in_place = _clone(state)
        versions = [p._version for p in _parts(in_place)]
        for t in range(4):
            x = torch.randn(batch, 5)
            out, state = layer.step(x, state)
            returned = layer.step_(x, in_place)
            assert returned.data_ptr() == _first(in_place)[-1].data_ptr()  # the compiled route
            torch.testing.assert_close(returned, out, rtol=0, atol=0, msg=f"{name}, step {t}")
            torch.testing.assert_close(in_place, state, rtol=0, atol=0, msg=f"{name}, step {t}")
    assert all(p._version > v for p, v in zip(_parts(in_place), versions, strict=True))


@pytest.mark.parametrize(
    "make",
    [
        lambda: rnnkit.LSTM(6, 6, num_layers=2),
        lambda: rnnkit.GRU(6, 6),
        lambda: rnnkit.GRU(6, 6, 2, layer_norm=True, zoneout=0.2),
        lambda: rnnkit.MinGRU(6, 6),
    ],
)
def test_layer_step_in_place_can_be_fed_its_own_output(make):
    """`out = layer.step_(out, state)`: x is then a view of the state itself (the top layer's
    h), which the kernels read before they overwrite it."""
    torch.manual_seed(8)
    layer = make().eval()
    with torch.no_grad():
        out, state = layer.step(torch.randn(2, 6))
        fed, in_place = out.clone(), _clone(state)
        for _ in range(3):
            out, state = layer.step(out, state)
            fed = layer.step_(fed, in_place)  # from the second step on, x is in_place's memory
            torch.testing.assert_close(fed, out, rtol=0, atol=0)
        assert fed.data_ptr() == _first(in_place)[-1].data_ptr()
        torch.testing.assert_close(in_place, state, rtol=0, atol=0)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_layer_step_in_place_off_the_compiled_route_copies_what_step_returns(kind):
    """Where the compiled steps do not serve (training mode, a reset, unbatched input, a list
    or non-contiguous state) `step_` steps as `step()` and copies into the state."""
    torch.manual_seed(7)
    layer, _ = layer_and_reference(kind, 3, 4, 2, torch.float64)
    x = torch.randn(2, 3, dtype=torch.float64)
    with torch.no_grad():
        _, start = layer.step(x)
        cases = {
            "reset": dict(reset=torch.tensor([True, False])),
            "training": {},
            "unbatched": {},
            "list": {},
            "non-contiguous": {},
        }
        for case, options in cases.items():
            layer.train(case == "training")
            state, inputs = _clone(start), x
            if case == "unbatched":
                state, inputs = _map(state, lambda s: s[:, 0].clone()), x[0]
            if case == "non-contiguous":
                state = _map(state, lambda s: s.transpose(0, 1).clone().transpose(0, 1))
            expected_out, expected_state = layer.step(inputs, state, **options)
            given = list(state) if case == "list" and kind == "lstm" else state
            out = layer.step_(inputs, given, **options)
            torch.testing.assert_close(out, expected_out, rtol=0, atol=0, msg=case)
            torch.testing.assert_close(state, expected_state, rtol=0, atol=0, msg=case)


def test_layer_step_in_place_refuses_what_it_cannot_do_with_a_clear_error():
    layer = rnnkit.LSTM(3, 4, num_layers=2).eval()
    x = torch.randn(2, 3)
    with torch.no_grad():
        _, state = layer.step(x)
    with pytest.raises(RuntimeError, match="step_ writes the state in place.*torch.no_grad"):
        layer.step_(x, state)  # parameters require grad and grad mode is on
    with torch.no_grad():
        with pytest.raises(ValueError, match=r"start a stream with `out, state = layer.step"):
            layer.step_(x, None)
        shared = torch.zeros(2, 2, 4)
        with pytest.raises(ValueError, match=r"state\[0\] and state\[1\] share memory"):
            layer.step_(x, (shared, shared))
        with pytest.raises(ValueError, match=r"state\[0\] must have shape \(2, 2, 4\)"):
            layer.step_(x, (torch.zeros(2, 5, 4), torch.zeros(2, 5, 4)))


# ---- the variant LSTM's compiled step ------------------------------------------------------


def variant_pair(options: dict, layers: int, dtype: torch.dtype, seed: int, kind: str = "lstm"):
    """A variant LSTM or GRU in eval on its default route and the same layer on the reference
    loop."""
    torch.manual_seed(seed)
    make = {"lstm": rnnkit.LSTM, "gru": rnnkit.GRU, "rnn_tanh": rnnkit.RNN}.get(kind)
    make = {"mingru": rnnkit.MinGRU, "minlstm": rnnkit.MinLSTM}.get(kind, make)
    if kind == "rnn_relu":
        make = functools.partial(rnnkit.RNN, nonlinearity="relu")
    layer = make(3, 5, layers, dtype=dtype, **options).eval()
    reference = make(3, 5, layers, dtype=dtype, backend="reference", **options).eval()
    reference.load_state_dict(layer.state_dict())
    return layer, reference


@settings(max_examples=50, deadline=None)
@given(
    kind=st.sampled_from(["lstm", "gru", "rnn_tanh", "rnn_relu", "mingru", "minlstm"]),
    layer_norm=st.booleans(),
    peephole=st.booleans(),
    proj_size=st.sampled_from([0, 2]),
    zoneout=st.sampled_from([0.0, 0.3]),
    zoneout_cell=st.sampled_from([None, 0.0, 0.6]),
    dropouts=st.booleans(),
    layers=st.integers(1, 2),
    batch=st.integers(1, 5),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    seed=st.integers(0, 2**16),
)
@example(
    kind="lstm",
    layer_norm=True,
    peephole=False,
    proj_size=0,
    zoneout=0.0,
    zoneout_cell=None,
    dropouts=False,
    layers=2,
    batch=2,
    dtype=torch.float32,
    seed=10031,
)  # 1.2e-5 apart in float32
def test_variant_step_equals_the_reference_loop(
    kind, layer_norm, peephole, proj_size, zoneout, zoneout_cell, dropouts, layers, batch,
    dtype, seed,
):  # fmt: skip
    """`step()` of a variant LSTM, GRU or Elman RNN, or of minGRU / minLSTM, in eval runs the
    compiled `Variant*Step` / `MinimalStep` and equals the reference loop
    over the same sequence (every option; recurrent dropout and weight drop are off in eval,
    zoneout mixes by its rates), output and state at every step."""
    options = {"proj_size": proj_size, "zoneout": zoneout} if kind[:3] != "min" else {}
    if kind in ("lstm", "gru"):
        options["layer_norm"] = layer_norm
    if kind == "lstm":
        options |= {"peephole": peephole, "zoneout_cell": zoneout_cell}
    if dropouts:
        options |= {"recurrent_dropout": 0.3, "weight_drop": 0.4}
    if kind[:3] == "min":
        options = {}  # minGRU and minLSTM have no options
    elif not (options.get("layer_norm") or zoneout or dropouts or options.get("peephole")):
        options["zoneout"] = 0.5  # a variant layer, not torch.nn's
    layer, reference = variant_pair(options, layers, dtype, seed, kind)
    x = 2 * torch.randn(4, batch, 3, dtype=dtype)
    # float32: layer norm's moments (float64 sums here, float32 in torch) round differently,
    # which 1/std amplifies (1e-5 seen); float64 is held to assert_close's default
    tolerance = {"rtol": 1e-4, "atol": 1e-4} if dtype == torch.float32 else {}
    with torch.no_grad():
        expected_out, _ = reference(x)
        state = None
        for t in range(4):
            out, state = layer.step(x[t], state)
            torch.testing.assert_close(out, expected_out[t], **tolerance)
            torch.testing.assert_close(state, reference(x[: t + 1])[1], **tolerance)
    steps = layer.__dict__["_compiled"].steps  # the compiled route ran
    expected = {"lstm": "VariantLSTMStep", "gru": "VariantGRUStep"}.get(kind, "VariantElmanStep")
    expected = "MinimalStep" if kind[:3] == "min" else expected
    assert [type(s).__name__ for s in steps] == [expected] * layers


def test_variant_lstm_step_follows_its_parameters_and_keeps_the_loop_for_training():
    layer, reference = variant_pair({"layer_norm": True, "peephole": True}, 1, torch.float32, 9)
    x = torch.randn(2, 3)
    with torch.no_grad():
        layer.step(x)
        first = layer.__dict__["_compiled"]
        layer.cells[0].ln_hh_weight.mul_(3.0)  # in place: the step reads the same memory
        reference.load_state_dict(layer.state_dict())
        torch.testing.assert_close(layer.step(x)[0], reference(x[None])[0][0])
        assert layer.__dict__["_compiled"] is first
        layer.cells[0].weight_ci.data = torch.randn(5)  # new memory: the steps are rebuilt
        reference.load_state_dict(layer.state_dict())
        torch.testing.assert_close(layer.step(x)[0], reference(x[None])[0][0])
        assert layer.__dict__["_compiled"] is not first
        out, _ = layer.step(x, reset=torch.tensor([True, False]))  # the general path, on the
        torch.testing.assert_close(out, reference(x[None])[0][0])  # same compiled cell steps
    layer.__dict__.pop("_compiled")
    layer.step(x)  # eval, but the parameters want gradients: the cells' own step
    layer.train()
    with torch.no_grad():
        layer.step(x)  # training: the cells' step with its draws
    assert "_compiled" not in layer.__dict__


def _parts(state) -> tuple[torch.Tensor, ...]:
    return state if isinstance(state, tuple) else (state,)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("batch", [1, 3, 6])
def test_update_in_place_equals_the_returning_step_bit_for_bit(kind, dtype, batch):
    """`update_` writes into the state the bits `step()` returns (both read directions, mixed
    with `step()` calls on the same object), and returns the state's own tensors."""
    torch.manual_seed(batch)
    cell, step = cell_and_step(kind, 7, 13, True, dtype)
    h = torch.randn(batch, 13, dtype=dtype)
    state = (h, torch.randn(batch, 13, dtype=dtype)) if kind == "lstm" else h
    in_place = tuple(part.clone() for part in _parts(state))
    in_place = in_place if kind == "lstm" else in_place[0]
    with torch.no_grad():
        for t in range(5):
            x = torch.randn(batch, 7, dtype=dtype)
            expected = cell(x, state)
            state = step(x, state)
            returned = step.update_(x, in_place)
            assert returned is in_place
            for ours, returning in zip(_parts(in_place), _parts(state), strict=True):
                torch.testing.assert_close(ours, returning, rtol=0, atol=0, msg=f"step {t}")
            torch.testing.assert_close(in_place, expected)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_update_sees_edits_swapped_memory_and_an_input_that_is_the_state(kind):
    """Between `update_` calls the state may be edited in place, have its memory swapped
    (`set_`) or be other tensors; x may be h itself. Each step equals torch's cell."""
    torch.manual_seed(5)
    cell, step = cell_and_step(kind, 4, 4, True, torch.float64)
    x = torch.randn(2, 4, dtype=torch.float64)
    state = tuple(torch.randn(2, 4, dtype=torch.float64) for _ in range(2 if kind == "lstm" else 1))
    state = state if kind == "lstm" else state[0]
    with torch.no_grad():
        for change in (None, "in place", "new memory", "other tensors", "x is h"):
            first = _parts(state)[0]
            if change == "in place":
                first.mul_(-2.0)
            elif change == "new memory":
                first.set_(torch.randn(2, 4, dtype=torch.float64))
            elif change == "other tensors":
                state = tuple(p.clone() for p in _parts(state)) if kind == "lstm" else first + 1
            inputs = _parts(state)[0] if change == "x is h" else x
            expected = cell(inputs, state)
            torch.testing.assert_close(step.update_(inputs, state), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_update_bumps_version_counters_so_autograd_notices(kind):
    """A state that an autograd graph saved and `update_` then overwrote makes backward raise,
    as torch's own in-place operators do, instead of giving wrong gradients."""
    torch.manual_seed(6)
    _, step = cell_and_step(kind, 3, 4, True, torch.float32)
    state = tuple(torch.randn(1, 4) for _ in range(2 if kind == "lstm" else 1))
    state = state if kind == "lstm" else state[0]
    head = torch.nn.Linear(4, 1)
    loss = head(_parts(state)[0]).sum()  # saves h for head.weight's gradient
    before = [p._version for p in _parts(state)]
    with torch.no_grad():
        step.update_(torch.randn(1, 3), state)
    assert all(p._version > v for p, v in zip(_parts(state), before, strict=True))
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_update_rejects_a_state_it_cannot_write_with_a_clear_error(kind):
    _, step = cell_and_step(kind, 3, 4, True, torch.float32)
    x = torch.randn(2, 3)

    def state_of(*parts):
        return parts if kind == "lstm" else parts[0]

    shared = torch.zeros(4, 4)  # rows 0-1 and 1-2: overlapping views
    bad = [
        (x, state_of(torch.zeros(2, 4, requires_grad=True), torch.zeros(2, 4)), "h requires grad"),
        (x, state_of(torch.zeros(4, 2).t(), torch.zeros(2, 4)), "h must be contiguous"),
        (x, state_of(torch.zeros(2, 5), torch.zeros(2, 4)), r"h must have shape \(2, 4\)"),
        (torch.randn(2, 5), state_of(torch.zeros(2, 4), torch.zeros(2, 4)), r"x must have shape"),
    ]
    if kind == "lstm":
        h = torch.zeros(2, 4)
        bad += [
            (x, (h, h), "h and c share memory"),
            (x, (shared[:2], shared[1:3]), "h and c share memory"),
            (x, h, r"state must be a tuple \(h, c\)"),
        ]
    for inputs, state, message in bad:
        with pytest.raises((TypeError, ValueError), match=message):
            step.update_(inputs, state)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_cell_step_rejects_bad_inputs_with_a_clear_error(kind):
    """x or a state of the wrong shape, dtype or form is refused with what it must be, also
    after a state was fed back (the fast path checks x against the state's batch)."""
    cell, step = cell_and_step(kind, 3, 4, True, torch.float32)
    x, h = torch.randn(2, 3), torch.zeros(2, 4)
    state = (h, h) if kind == "lstm" else h
    with torch.no_grad():
        returned = step(x, state)
        bad = [
            (torch.randn(2, 5), state, ValueError, r"x must have shape \(batch, 3\)"),
            (torch.randn(3), state, ValueError, r"got \(3,\); for one sequence pass x\[None\]"),
            (torch.randn(0, 3), state, ValueError, "batch >= 1"),
            (x.double(), state, TypeError, "x must be a CPU torch.float32 tensor"),
            (torch.randn(5, 3), returned, ValueError, r"h must have shape \(5, 4\)"),
            ([[0.0] * 3] * 2, state, TypeError, "got list"),
        ]
        wrong = torch.zeros(2, 7)
        if kind == "lstm":
            bad += [
                (x, (h, wrong), ValueError, r"c must have shape \(2, 4\).*got \(2, 7\)"),
                (x, h, TypeError, r"state must be a tuple \(h, c\)"),
                (x, (h, h.double()), TypeError, "c must be a CPU torch.float32 tensor"),
            ]
        else:
            bad += [(x, wrong, ValueError, r"h must have shape \(2, 4\).*got \(2, 7\)")]
        for inputs, state_, error, message in bad:
            with pytest.raises(error, match=message):
                step(inputs, state_)
        torch.testing.assert_close(step(x, returned), cell(x, returned))  # still usable


@pytest.mark.parametrize("kind", ["lstm", "gru", "gru_proj", "elman", "min"])
def test_variant_cell_steps_reject_bad_inputs_with_a_clear_error(kind):
    from rnnkit.kernels import numba_variant_step as variant

    layer_kind = {"gru_proj": "gru", "min": "mingru", "elman": "rnn_tanh"}.get(kind, kind)
    options = {"zoneout": 0.5, "proj_size": 2} if kind == "gru_proj" else {"zoneout": 0.5}
    options = {} if kind == "min" else options
    layer, _ = variant_pair(options, 1, torch.float32, 0, layer_kind)
    cell = layer.cells[0]
    make = {
        "lstm": variant.VariantLSTMStep, "gru": variant.VariantGRUStep,
        "gru_proj": variant.VariantGRUStep, "elman": variant.VariantElmanStep,
        "min": variant.MinimalStep,
    }[kind]  # fmt: skip
    step = make(cell)
    x = torch.randn(2, 3)
    good = cell.zero_state(2, x)
    with torch.no_grad():
        step(x, good)  # accepted
        with pytest.raises(ValueError, match=r"x must have shape \(batch, 3\)"):
            step(torch.randn(2, 4), good)
        wrong = torch.zeros(3, 9)
        bad_state = (good[0], wrong) if isinstance(good, tuple) else wrong
        with pytest.raises(ValueError, match=r"must have shape \(2, \d\)"):
            step(x, bad_state)
        if isinstance(good, tuple):
            with pytest.raises(TypeError, match="state must be a tuple"):
                step(x, good[0])
