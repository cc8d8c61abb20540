"""rnnkit's layers inside `torch.compile`, as torch.nn's run there.

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
