"""The weight gradients' product, grad.T @ inputs over all rows, on each of its routes."""

from __future__ import annotations

from unittest import mock

import pytest
import torch

import rnnkit
from rnnkit.kernels import _onednn
from variant_layers import VARIANT_LAYERS


def reference(grad: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    return (grad.double().t() @ inputs.double()).to(grad.dtype)


@pytest.mark.parametrize("columns", [slice(None), slice(0, 100)])
def test_summed_outer_products_match_float64_on_the_large_route(columns):
    """Above the threshold, float32 (oneDNN where torch carries it), with a contiguous grad and
    with a slice of its columns, whose rows oneDNN would not take as they are."""
    generator = torch.Generator().manual_seed(0)
    grad = torch.randn(1700, 150, generator=generator)[:, columns]
    inputs = torch.randn(1700, 40, generator=generator)
    assert grad.shape[0] * grad.shape[1] * inputs.shape[1] >= _onednn.MIN_MULTIPLY_ADDS
    got = _onednn.summed_outer_products(grad, inputs)
    assert got.shape == (grad.shape[1], 40)
    torch.testing.assert_close(got, reference(grad, inputs), rtol=1e-5, atol=1e-4)


ROUTED = {  # the product, the oneDNN call it makes, its operands' shapes above and below 2**21
    "summed_outer_products": ("_onednn_product", ((2048, 32), (2048, 32)), ((8, 4), (8, 3))),
    "dense_product": ("_linear", ((256, 128), (128, 128)), ((8, 4), (3, 4))),
}


@pytest.mark.parametrize("product", ROUTED)
def test_the_large_route_is_onednn_where_torch_carries_it(product):
    """On this platform (torch's CPU wheels carry oneDNN) a float32 product above the threshold
    goes through oneDNN's op; one below it, and float64, through torch's matmul."""
    if not torch.backends.mkldnn.is_available():
        assert not _onednn.onednn_available()
        return
    assert _onednn.onednn_available()
    call, large, small = ROUTED[product]
    calls = []
    real = getattr(_onednn, call)

    def spy(a, b):
        calls.append(tuple(a.shape))
        return real(a, b)

    function = getattr(_onednn, product)
    with mock.patch.object(_onednn, call, spy):
        function(*(torch.ones(shape) for shape in large))
        function(*(torch.ones(shape) for shape in small))
        function(*(torch.ones(shape, dtype=torch.float64) for shape in large))
    assert calls == [large[0]]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_without_onednn_the_product_is_torchs(dtype):
    generator = torch.Generator().manual_seed(1)
    grad = torch.randn(2000, 40, generator=generator, dtype=dtype)
    inputs = torch.randn(2000, 30, generator=generator, dtype=dtype)
    with mock.patch.object(_onednn, "onednn_available", lambda: False):
        got = _onednn.summed_outer_products(grad, inputs)
    torch.testing.assert_close(got, grad.t() @ inputs)


def test_an_op_that_fails_its_check_is_not_used():
    """A oneDNN op that is missing, refuses, or computes something else leaves the route off."""
    _onednn.onednn_available.cache_clear()
    try:
        with mock.patch.object(_onednn, "_onednn_product", side_effect=RuntimeError("no")):
            assert not _onednn.onednn_available()
        _onednn.onednn_available.cache_clear()
        with mock.patch.object(_onednn, "_onednn_product", lambda g, i: (g.t() @ i) + 1):
            assert not _onednn.onednn_available()
        _onednn.onednn_available.cache_clear()
        with mock.patch.object(_onednn, "_linear", lambda a, b: (a @ b.t()) * 2):
            assert not _onednn.onednn_available()
    finally:
        _onednn.onednn_available.cache_clear()


def dense_reference(inputs: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return (inputs.double() @ weight.double().t()).to(inputs.dtype)


@pytest.mark.parametrize("form", ["contiguous", "transposed weight", "column slice"])
def test_dense_product_matches_float64_on_the_large_route(form):
    """inputs @ W.T above the threshold (oneDNN where torch carries it): with a contiguous
    weight (x @ W_ih.T), a transposed one (dL/dx = grad @ W is dense_product(grad, W.t())) and
    inputs that are a slice of columns, which oneDNN takes only as a copy."""
    generator = torch.Generator().manual_seed(2)
    inputs = torch.randn(300, 96, generator=generator)
    weight = torch.randn(130, 96, generator=generator)
    if form == "transposed weight":
        weight = torch.randn(96, 130, generator=generator).t()
    if form == "column slice":
        inputs = torch.randn(300, 150, generator=generator)[:, 20:116]
    assert inputs.shape[0] * inputs.shape[1] * weight.shape[0] >= _onednn.MIN_MULTIPLY_ADDS
    got = _onednn.dense_product(inputs, weight)
    assert got.shape == (300, 130)
    torch.testing.assert_close(got, dense_reference(inputs, weight), rtol=1e-5, atol=1e-4)


def test_whole_sequence_products_below_the_tiles_rows_go_through_dense_product():
    """x @ W.T over fewer rows than the packed tiles take (T = 50, B = 4) goes through
    `dense_product`, reshaped back to (T, B, G), equal to torch's product."""
    from rnnkit.kernels import _numba_products

    generator = torch.Generator().manual_seed(4)
    x = torch.randn(50, 4, 128, generator=generator)
    weight = torch.randn(384, 128, generator=generator)
    assert 50 * 4 < _numba_products.PACKED_LINEAR_MIN_ROWS
    seen = []
    real = _numba_products.dense_product

    def spy(inputs, matrix):
        seen.append(tuple(inputs.shape))
        return real(inputs, matrix)

    with mock.patch.object(_numba_products, "dense_product", spy):
        got = _numba_products.whole_product(x, weight)
    assert seen == [(200, 128)]
    torch.testing.assert_close(got, dense_reference(x, weight), rtol=1e-5, atol=1e-4)


def _layers() -> dict:
    plain = {
        "gru": lambda i, h, **kw: rnnkit.GRU(i, h, **kw),
        "rnn_relu": lambda i, h, **kw: rnnkit.RNN(i, h, nonlinearity="relu", **kw),
        "lstm_layer_norm": lambda i, h, **kw: rnnkit.LSTM(i, h, layer_norm=True, **kw),
    }
    return {**VARIANT_LAYERS, **plain}


@pytest.mark.parametrize("name", list(_layers()))
def test_the_compiled_kernels_give_parameter_gradients_in_the_parameters_layout(name):
    """At sizes whose weight gradients take oneDNN's product (and the LSTM's W_hh summed in its
    loop, H = 64, B = 8), every parameter's gradient comes out with the parameter's strides:
    autograd adds a transposed one into `.grad` by strided reads, 20-30x slower at 1024 x 256."""
    torch.manual_seed(0)
    layer = _layers()[name](32, 64, num_layers=2, bidirectional=True, backend="numba")
    x = torch.randn(64, 8, 32)
    output, _ = layer(x)
    parameters = [p for p in layer.parameters() if p.requires_grad]
    grads = torch.autograd.grad(output.square().sum(), parameters)
    for (label, parameter), grad in zip(layer.named_parameters(), grads, strict=True):
        assert grad.stride() == parameter.stride(), (label, grad.stride(), parameter.stride())
