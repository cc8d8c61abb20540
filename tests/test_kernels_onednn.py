"""The weight gradients' product, grad.T @ inputs over all rows, on each of its routes."""

from __future__ import annotations

from unittest import mock

import pytest
import torch

from rnnkit.kernels import _onednn


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


def test_the_large_route_is_onednn_where_torch_carries_it():
    """On this platform (torch's CPU wheels carry oneDNN) the product above the threshold goes
    through oneDNN's op, and one below it through torch's matmul."""
    if not torch.backends.mkldnn.is_available():
        assert not _onednn.onednn_available()
        return
    assert _onednn.onednn_available()
    calls = []
    real = _onednn._onednn_product

    def spy(grad, inputs):
        calls.append(grad.shape)
        return real(grad, inputs)

    with mock.patch.object(_onednn, "_onednn_product", spy):
        _onednn.summed_outer_products(torch.ones(2048, 32), torch.ones(2048, 32))
        _onednn.summed_outer_products(torch.ones(8, 4), torch.ones(8, 3))
        _onednn.summed_outer_products(torch.ones(2048, 32).double(), torch.ones(2048, 32).double())
    assert calls == [(2048, 32)]


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
    finally:
        _onednn.onednn_available.cache_clear()
