"""Gradients of gradients (`create_graph=True`) through the compiled kernels: the GRU and
Elman sequences, minGRU / minLSTM's scans and the packed linear map give them through torch's
operators (`_numba_common.recomputed_gradients`), checked by gradgradcheck and against
torch.nn; the variant kernels, which cannot, say so instead of dropping them."""

from __future__ import annotations

import pytest
import torch

import rnnkit
from rnnkit import kernels
from rnnkit.kernels import _numba_products, numba_scan

torch.set_num_threads(1)
F64 = {"dtype": torch.float64}


def _sequence_args(kind: str, lengths, reverse: bool):
    torch.manual_seed(0)
    gates = 3 if kind == "gru" else 1
    x = torch.randn(4, 3, 2, **F64, requires_grad=True)
    h0 = torch.randn(3, 2, **F64, requires_grad=True)
    weights = [torch.randn(gates * 2, n, **F64, requires_grad=True) for n in (2, 2)]
    biases = [torch.randn(gates * 2, **F64, requires_grad=True) for _ in range(2)]
    if kind == "gru":

        def function(x, h0, *parameters):
            return kernels.gru_sequence(x, h0, *parameters, lengths, reverse)
    else:
        nonlinearity = kind[4:]

        def function(x, h0, *parameters):
            return kernels.elman_sequence(x, h0, *parameters, lengths, reverse, nonlinearity)

    return function, (x, h0, *weights, *biases)


@pytest.mark.parametrize("kind", ["gru", "rnn_tanh", "rnn_relu"])
@pytest.mark.parametrize("lengths", [None, [4, 1, 3]])
@pytest.mark.parametrize("reverse", [False, True])
def test_gru_and_elman_kernels_pass_gradgradcheck(kind, lengths, reverse):
    lengths = None if lengths is None else torch.tensor(lengths)
    function, inputs = _sequence_args(kind, lengths, reverse)
    assert torch.autograd.gradgradcheck(function, inputs)


def test_the_scans_and_the_packed_linear_map_pass_gradgradcheck(monkeypatch):
    torch.manual_seed(1)
    a = torch.rand(5, 2, 3, **F64, requires_grad=True)
    b, h0 = torch.randn(5, 2, 3, **F64, requires_grad=True), torch.randn(2, 3, **F64)
    assert torch.autograd.gradgradcheck(numba_scan.linear_scan, (a, b, h0.requires_grad_()))
    for lstm, gates in ((False, 2), (True, 3)):
        p = torch.randn(5, 2, gates * 3, **F64, requires_grad=True)
        h0 = torch.randn(2, 3, **F64, requires_grad=True)
        scan = lambda p, h0, lstm=lstm: numba_scan.minimal_scan(p, h0, lstm)  # noqa: E731
        assert torch.autograd.gradgradcheck(scan, (p, h0))
    monkeypatch.setattr(_numba_products, "PACKED_LINEAR_MIN_ROWS", 0)  # the tiles at any size
    inputs = torch.randn(3, 2, 4, **F64, requires_grad=True)
    weight = torch.randn(5, 4, **F64, requires_grad=True)
    assert torch.autograd.gradgradcheck(_numba_products.packed_linear, (inputs, weight))


@pytest.mark.parametrize(
    ("reference", "ours"),
    [
        (
            lambda: torch.nn.GRU(4, 5, 2, bidirectional=True),
            lambda: rnnkit.GRU(4, 5, 2, bidirectional=True, backend="numba"),
        ),
        (
            lambda: torch.nn.RNN(4, 5, 2, bidirectional=True),
            lambda: rnnkit.RNN(4, 5, 2, bidirectional=True, backend="numba"),
        ),
        (
            lambda: torch.nn.RNN(4, 5, nonlinearity="relu"),
            lambda: rnnkit.RNN(4, 5, nonlinearity="relu", backend="numba"),
        ),
    ],
)
def test_a_gradient_penalty_through_the_compiled_layers_equals_torch_nn(reference, ours):
    """A WGAN-GP style penalty on dL/dx: its gradient with respect to every parameter equals
    torch.nn's (on the compiled kernels it was dropped before, with no error)."""
    torch.manual_seed(2)
    reference, layer = reference().double(), ours().double()
    layer.load_state_dict(reference.state_dict())
    x = torch.randn(20, 2, 4, **F64, requires_grad=True)
    results = []
    for module in (reference, layer):
        out, _ = module(x)
        (grad_x,) = torch.autograd.grad(out.sum(), x, create_graph=True)
        penalty = out.pow(2).mean() + 10 * (grad_x.norm() - 1) ** 2
        names = sorted(module.state_dict())
        parameters = [getattr(module, name) for name in names]
        results.append(torch.autograd.grad(penalty, parameters))
    torch.testing.assert_close(results[1], results[0])


def test_the_variant_kernels_refuse_a_gradient_of_a_gradient_with_a_clear_error():
    layer = rnnkit.LSTM(3, 4, layer_norm=True, backend="numba").double()
    x = torch.randn(5, 2, 3, **F64, requires_grad=True)
    out, _ = layer(x)
    with pytest.raises(RuntimeError, match="backend='reference'"):
        torch.autograd.grad(out.sum(), x, create_graph=True)
    reference = rnnkit.LSTM(3, 4, layer_norm=True, backend="reference").double()
    reference.load_state_dict(layer.state_dict())
    out, _ = reference(x)
    (grad_x,) = torch.autograd.grad(out.sum(), x, create_graph=True)
    assert grad_x.requires_grad  # the route the message names gives it
