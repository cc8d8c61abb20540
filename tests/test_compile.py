"""rnnkit's layers inside `torch.compile`, `torch.export` and `torch.func.grad`, as torch.nn's
run there.

Dynamo does not trace torch.nn.RNN/LSTM/GRU (a graph break: they run eagerly); traced, torch's
fused LSTM kernel fails in AOT autograd when its input needs no gradient ("expected all
tensors_saved_with_vc_check to be Tensors"; with inductor "expected Tensor() for op
mkldnn_rnn_layer"). rnnkit's torch route breaks the graph the same way, and the compiled routes
(Numba) break it at their call. The "aot_eager" backend runs AOT autograd without generating
code, so these tests need no C++ compiler: a compiled layer, and a model around one, give
eager's outputs and gradients.
"""

from __future__ import annotations

import pytest
import torch

import rnnkit

LAYERS = {
    "lstm_torch": lambda: rnnkit.LSTM(5, 6, num_layers=2),
    "lstm_torch_bidirectional": lambda: rnnkit.LSTM(5, 6, bidirectional=True),
    "gru_torch": lambda: rnnkit.GRU(5, 6, backend="torch"),
    "gru_numba": lambda: rnnkit.GRU(5, 6, backend="numba"),
    "lstm_layer_norm_numba": lambda: rnnkit.LSTM(5, 6, layer_norm=True, backend="numba"),
    "mingru": lambda: rnnkit.MinGRU(5, 6),
}
MODES = [(False, False), (True, False), (False, True)]  # (with lengths, training)


def _loss(layer, x, lengths):
    out, state = layer(x, lengths=lengths)
    state = state if isinstance(state, tuple) else (state,)
    return out.sum() + sum((s * s).sum() for s in state)


@pytest.mark.parametrize("name", list(LAYERS))
@pytest.mark.parametrize(("with_lengths", "training"), MODES)
def test_compiled_layer_gives_eager_outputs_and_gradients(name, with_lengths, training):
    """The layer compiled on its own, its input needing no gradient: eval mode with gradients
    of the parameters (what failed before) and training mode (no dropout set: both agree)."""
    torch.manual_seed(0)
    layer = LAYERS[name]().train(training)
    x, lengths = torch.randn(7, 3, 5), torch.tensor([7, 3, 5]) if with_lengths else None
    expected = _loss(layer, x, lengths)
    expected_grads = torch.autograd.grad(expected, list(layer.parameters()))
    torch._dynamo.reset()
    got = _loss(torch.compile(layer, backend="aot_eager"), x, lengths)
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(torch.autograd.grad(got, list(layer.parameters())), expected_grads)


class Model(torch.nn.Module):
    """A layer between two linear maps, so that the compiled graph has parts on both sides."""

    def __init__(self, layer: torch.nn.Module) -> None:
        super().__init__()
        self.inp, self.rnn = torch.nn.Linear(4, 5), layer
        self.out = torch.nn.Linear(layer.num_directions * 6, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs, _ = self.rnn(torch.tanh(self.inp(x)))
        return self.out(outputs).sum()


@pytest.mark.parametrize("name", ["lstm_torch_bidirectional", "gru_numba"])
def test_compiled_model_around_a_layer_gives_eager_gradients(name):
    torch.manual_seed(1)
    model = Model(LAYERS[name]()).eval()
    x = torch.randn(7, 3, 4)
    expected = model(x)
    expected_grads = torch.autograd.grad(expected, list(model.parameters()))
    torch._dynamo.reset()
    got = torch.compile(model, backend="aot_eager")(x)
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(torch.autograd.grad(got, list(model.parameters())), expected_grads)


EXPORTED = {
    "lstm": lambda: rnnkit.LSTM(5, 6, num_layers=2),
    "gru_auto": lambda: rnnkit.GRU(5, 6),  # on the CPU at this size: the Numba route
    "rnn_relu_auto": lambda: rnnkit.RNN(5, 6, nonlinearity="relu"),
    "lstm_layer_norm": lambda: rnnkit.LSTM(5, 6, layer_norm=True, peephole=True),
    "gru_zoneout_proj": lambda: rnnkit.GRU(5, 6, zoneout=0.1, proj_size=3),
    "minlstm_bidirectional": lambda: rnnkit.MinLSTM(5, 6, bidirectional=True),
}


@pytest.mark.parametrize("name", list(EXPORTED))
def test_torch_export_traces_every_route_with_torchs_operators(name):
    """torch.export traces with fake tensors, which have no memory for the Numba kernels: the
    layer then takes torch's kernel or its cells' operators, and the exported program gives the
    eager layer's outputs (".numpy() is not supported for tensor subclasses" before)."""
    torch.manual_seed(2)
    layer = EXPORTED[name]().eval()
    x = torch.randn(7, 3, 5)
    program = torch.export.export(layer, (x,))
    out, state = program.module()(x)
    expected, expected_state = layer(x)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(state, expected_state)


def test_exporting_with_backend_numba_is_a_clear_error():
    layer = rnnkit.GRU(5, 6, backend="numba").eval()
    with pytest.raises(ValueError, match="backend='numba' reads a plain tensor's memory, got a"):
        torch.export.export(layer, (torch.randn(7, 3, 5),))


@pytest.mark.parametrize("name", ["gru_auto", "lstm_layer_norm", "minlstm_bidirectional"])
def test_torch_func_grad_takes_torchs_operators(name):
    """Under torch.func.grad the parameters are wrapped tensors that NumPy cannot read: the
    layer takes torch's kernel or its cells' operators, and the gradients equal autograd's
    (an autograd.Function without `setup_context` made functorch refuse the Numba route).
    In float64, where the two routes' rounding differences stay far below the tolerance."""
    torch.manual_seed(3)
    layer = EXPORTED[name]().double()
    params = dict(layer.named_parameters())
    x = torch.randn(7, 3, 5, dtype=torch.float64)

    def loss(p):
        return torch.func.functional_call(layer, p, (x,))[0].sum()

    grads = torch.func.grad(loss)(params)
    expected = torch.autograd.grad(layer(x)[0].sum(), list(params.values()))
    torch.testing.assert_close(list(grads.values()), list(expected))


@pytest.mark.parametrize(
    "make", [lambda: rnnkit.LSTM(4, 5, layer_norm=True), lambda: rnnkit.MinGRU(4, 5)]
)
def test_vmap_over_streaming_steps_takes_the_cells_operators(make):
    """Under torch.func.vmap a step's input is a batched wrapper without memory of its own:
    `step()` leaves the compiled streaming steps (which read memory by address) to the cells'
    operators, and the mapped steps equal the steps one at a time."""
    torch.manual_seed(4)
    layer = make().eval()
    xs = torch.randn(3, 2, 4)
    with torch.no_grad():
        expected = torch.stack([layer.step(x)[0] for x in xs])
        assert layer._compiled_steps(xs[0]) is not None  # the compiled route serves plain x
        mapped = torch.func.vmap(lambda x: layer.step(x)[0])(xs)
    torch.testing.assert_close(mapped, expected)


class Stepper(torch.nn.Module):
    """A layer's `step()` from a zero state as a module's forward, for tracing."""

    def __init__(self, layer: torch.nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer.step(x)[0]


@pytest.mark.parametrize(
    "make",
    [
        lambda: rnnkit.GRU(4, 5),
        lambda: rnnkit.RNN(4, 5, nonlinearity="relu"),
        lambda: rnnkit.LSTM(4, 5, layer_norm=True),
        lambda: rnnkit.MinLSTM(4, 5),
    ],
)
def test_jit_trace_records_torchs_operators_not_the_kernels_results(make):
    """`torch.jit.trace` records torch's operators: the compiled kernels' results would be
    recorded as constants, and the traced module gave the traced input's outputs for any
    input. Its step() too."""
    torch.manual_seed(5)
    layer = make().eval()
    x, other = torch.randn(20, 2, 4), torch.randn(20, 2, 4)
    with torch.no_grad():
        traced = torch.jit.trace(layer, (x,), check_trace=False)
        torch.testing.assert_close(traced(other), layer(other))
        stepped = torch.jit.trace(Stepper(layer), (x[0],), check_trace=False)
        torch.testing.assert_close(stepped(other[0]), layer.step(other[0])[0])


@pytest.mark.parametrize(
    "make",
    [
        lambda: rnnkit.GRU(4, 5),
        lambda: rnnkit.RNN(4, 5),
        lambda: rnnkit.LSTM(4, 5, peephole=True),
        lambda: rnnkit.MinGRU(4, 5),
    ],
)
def test_forward_mode_ad_takes_torchs_operators(make):
    """Under a forward-mode AD dual level the layer leaves the compiled kernels (which have no
    JVP: "You must implement the jvp function" before): the tangent of the output equals
    torch.func.jvp's. Its step() too."""
    import torch.autograd.forward_ad as fwad

    torch.manual_seed(6)
    layer = make().double()
    x, tangent = torch.randn(20, 2, 4, dtype=torch.float64), torch.randn(20, 2, 4).double()
    expected = torch.func.jvp(lambda x: layer(x)[0], (x,), (tangent,))[1]
    step_expected = torch.func.jvp(lambda x: layer.step(x)[0], (x[0],), (tangent[0],))[1]
    with fwad.dual_level():
        got = fwad.unpack_dual(layer(fwad.make_dual(x, tangent))[0]).tangent
        step_got = fwad.unpack_dual(layer.step(fwad.make_dual(x[0], tangent[0]))[0]).tangent
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(step_got, step_expected)
