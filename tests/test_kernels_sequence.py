"""The compiled GRU and Elman sequence kernels equal torch.nn.GRU / torch.nn.RNN: outputs, final
states and the gradients of input, initial state and every parameter, over random shapes,
lengths, both directions, bias on and off, float32 and float64 (property-based), and gradcheck;
each with the recurrent products on every route: BLAS, the packed tiles and the hand-written
loops (`forced_route`).

torch.nn.GRU and torch.nn.RNN are the reference: rnnkit's cells have their gate order and
parameter names, and are tested equal to them in the layer tests.
"""

from __future__ import annotations

import contextlib
from unittest import mock

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from rnnkit import kernels
from rnnkit.kernels import _numba_common, _numba_products, _onednn, dispatch

KINDS = ("gru", "rnn_tanh", "rnn_relu")


ROUTES = (_numba_products.HAND, _numba_products.BLAS, _numba_products.PACKED)


@contextlib.contextmanager
def forced_route(route: int):
    """Make the kernels take one route for the recurrent products (the hand loop, BLAS or the
    packed tiles), whatever `product_route` would choose at this size; on the packed route the
    whole-sequence products x @ W_ih.T and dL/dx too, however few the rows, and the weight
    gradients through oneDNN (float32), however small."""
    fast = route == _numba_products.PACKED
    min_rows = 0 if fast else _numba_products.PACKED_LINEAR_MIN_ROWS
    min_onednn = 0 if fast else _onednn.MIN_MULTIPLY_ADDS
    with (
        mock.patch.object(_numba_products, "product_route", lambda batch, weight: route),
        mock.patch.object(_numba_products, "PACKED_LINEAR_MIN_ROWS", min_rows),
        mock.patch.object(_onednn, "MIN_MULTIPLY_ADDS", min_onednn),
    ):
        yield


def torch_module(
    kind: str, input_size: int, hidden: int, bias: bool, dtype: torch.dtype
) -> torch.nn.Module:
    if kind == "gru":
        return torch.nn.GRU(input_size, hidden, bias=bias, dtype=dtype)
    return torch.nn.RNN(input_size, hidden, nonlinearity=kind[4:], bias=bias, dtype=dtype)


def parameters(module: torch.nn.Module) -> list[torch.Tensor | None]:
    names = ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")
    return [getattr(module, name, None) for name in names]


def run_kernel(kind, x, h0, module, lengths, reverse):
    if kind == "gru":
        return kernels.gru_sequence(x, h0, *parameters(module), lengths=lengths, reverse=reverse)
    nonlinearity = kind[4:]
    return kernels.elman_sequence(x, h0, *parameters(module), lengths, reverse, nonlinearity)


def run_reference(x, h0, module, lengths, reverse):
    """torch.nn over packed sequences; in reverse, each sequence is flipped within its length,
    run forward and flipped back."""
    steps, batch, _ = x.shape
    lengths = torch.full((batch,), steps) if lengths is None else lengths
    time = torch.arange(steps)[:, None]  # (T, 1)
    index = (
        torch.where(time < lengths, lengths - 1 - time, time) if reverse else time.expand(-1, batch)
    )
    flip = index[..., None]  # (T, B, 1), an involution: flipping twice is the identity
    packed = pack_padded_sequence(x.gather(0, flip.expand_as(x)), lengths, enforce_sorted=False)
    output, h_n = module(packed, h0[None])
    output, _ = pad_packed_sequence(output, total_length=steps)
    return output.gather(0, flip.expand_as(output)), h_n[0]


def assert_equal_with_grads(kind, x, h0, module, lengths, reverse):
    ours = run_kernel(kind, x, h0, module, lengths, reverse)
    reference = run_reference(x, h0, module, lengths, reverse)
    for a, b in zip(ours, reference, strict=True):
        torch.testing.assert_close(a, b)
    grad_output, grad_h_n = torch.randn_like(ours[0]), torch.randn_like(ours[1])
    inputs = [x, h0, *(p for p in module.parameters())]

    def grads(output, h_n):
        loss = (output * grad_output).sum() + (h_n * grad_h_n).sum()
        return torch.autograd.grad(loss, inputs)

    for a, b in zip(grads(*ours), grads(*reference), strict=True):
        torch.testing.assert_close(a, b)


@st.composite
def cases(draw):
    steps = draw(st.integers(1, 6))
    batch = draw(st.integers(1, 6))
    lengths = draw(st.none() | st.lists(st.integers(1, steps), min_size=batch, max_size=batch))
    return {
        "kind": draw(st.sampled_from(KINDS)),
        "steps": steps,
        "batch": batch,
        "input_size": draw(st.integers(1, 4)),
        "hidden": draw(st.integers(1, 6)),
        "bias": draw(st.booleans()),
        "reverse": draw(st.booleans()),
        "lengths": None if lengths is None else torch.tensor(lengths),
        "dtype": draw(st.sampled_from([torch.float32, torch.float64])),
        "seed": draw(st.integers(0, 2**16)),
        "route": draw(st.sampled_from(ROUTES)),
    }


@settings(max_examples=60, deadline=None)
@given(cases())
def test_kernel_equals_torch(case):
    torch.manual_seed(case["seed"])
    module = torch_module(
        case["kind"], case["input_size"], case["hidden"], case["bias"], case["dtype"]
    )
    x = torch.randn(
        case["steps"], case["batch"], case["input_size"], dtype=case["dtype"], requires_grad=True
    )
    h0 = torch.randn(case["batch"], case["hidden"], dtype=case["dtype"], requires_grad=True)
    with forced_route(case["route"]):
        assert_equal_with_grads(case["kind"], x, h0, module, case["lengths"], case["reverse"])


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("route", ROUTES)
def test_kernel_equals_torch_at_a_larger_size(kind, dtype, route):
    """Enough steps and units for the blocked products and vectorised gates to take every path,
    and for BLAS's products to run over a shrinking prefix of the sequences."""
    torch.manual_seed(0)
    module = torch_module(kind, 9, 37, True, dtype)
    x = torch.randn(40, 11, 9, dtype=dtype, requires_grad=True)
    h0 = torch.randn(11, 37, dtype=dtype, requires_grad=True)
    lengths = torch.randint(1, 41, (11,))
    with forced_route(route):
        for reverse in (False, True):
            assert_equal_with_grads(kind, x, h0, module, lengths, reverse)


@pytest.mark.parametrize(
    ("vector_bytes", "batch", "hidden", "expected"),
    [
        (64, 8, 128, "PACKED"),
        (64, 2, 64, "PACKED"),
        (64, 1, 256, "BLAS"),
        (32, 8, 128, "BLAS"),
        (32, 1, 256, "BLAS"),
        (32, 1, 1024, "BLAS"),
        (32, 8, 256, "PACKED"),
        (32, 64, 512, "PACKED"),
    ],
)
def test_the_gru_products_take_the_route_they_measured_faster_for(
    vector_bytes, batch, hidden, expected
):
    """W_hh (3H, H) float32. With AVX-512 (64-byte vectors): the packed tiles from batch 2,
    BLAS at batch 1. Without: BLAS at 192 KiB and at batch 1 whatever the size; the tiles at
    768 KiB from batch 2, where gemm would pack W_hh again at every step."""
    weight_hh = torch.zeros(3 * hidden, hidden)
    with mock.patch.object(_numba_products, "VECTOR_BYTES", vector_bytes):
        route = _numba_products.product_route(batch, weight_hh)
    assert route == getattr(_numba_products, expected)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("route", ROUTES)
def test_gradcheck(kind, reverse, route):
    torch.manual_seed(1)
    module = torch_module(kind, 3, 4, True, torch.float64)
    x = torch.randn(5, 3, 3, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([5, 2, 4])
    if kind == "gru":

        def function(*inputs):
            return kernels.gru_sequence(*inputs, lengths=lengths, reverse=reverse)
    else:

        def function(*inputs):
            return kernels.elman_sequence(*inputs, lengths, reverse, kind[4:])

    with forced_route(route):
        assert torch.autograd.gradcheck(function, (x, h0, *parameters(module)))


def test_gradients_only_where_asked():
    """A parameter that does not require grad gets none; the others are still right."""
    module = torch_module("gru", 3, 4, True, torch.float64)
    module.weight_ih_l0.requires_grad_(False)
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    h0 = torch.randn(2, 4, dtype=torch.float64, requires_grad=True)
    wanted = [h0, module.weight_hh_l0, module.bias_ih_l0]
    ours = torch.autograd.grad(
        sum(t.sum() for t in run_kernel("gru", x, h0, module, None, False)), wanted
    )
    reference = torch.autograd.grad(
        sum(t.sum() for t in run_reference(x, h0, module, None, False)), wanted
    )
    for a, b in zip(ours, reference, strict=True):
        torch.testing.assert_close(a, b)
    sum(t.sum() for t in run_kernel("gru", x, h0, module, None, False)).backward()
    assert module.weight_ih_l0.grad is None


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"x": torch.randn(4, 2, 3).half()}, TypeError),
        ({"x": torch.randn(4, 2)}, ValueError),
        ({"h0": torch.zeros(3, 5)}, ValueError),
        ({"lengths": torch.tensor([5, 1])}, ValueError),
        ({"lengths": torch.tensor([0, 1])}, ValueError),
        ({"h0": torch.zeros(2, 5, dtype=torch.float64)}, TypeError),
    ],
)
def test_errors_name_the_argument(change, error):
    module = torch_module("gru", 3, 5, True, torch.float32)
    arguments = {"x": torch.randn(4, 2, 3), "h0": torch.zeros(2, 5), "lengths": None} | change
    with pytest.raises(error):
        kernels.gru_sequence(
            arguments["x"], arguments["h0"], *parameters(module), lengths=arguments["lengths"]
        )


def test_dispatch_thresholds_by_kind_and_mode():
    """Each kind, mode and hidden size has its own shortest sequence (`MIN_STEPS`); the LSTM
    never goes to the Numba kernels."""
    for (kind, training), (steps_small, steps_large) in dispatch.MIN_STEPS.items():
        for hidden, steps in ((dispatch.SMALL_HIDDEN, steps_small), (256, steps_large)):
            assert dispatch.numba_is_faster(kind, 1, hidden, steps, training)
            assert not dispatch.numba_is_faster(kind, 1, hidden, steps - 1, training)
    assert not dispatch.numba_is_faster("rnn_tanh", 8, 16, 10, training=False)
    assert dispatch.numba_is_faster("gru", 8, 16, 10, training=True)
    assert dispatch.numba_is_faster("gru", 128, 512, 50, training=True)  # packed products
    assert dispatch.numba_is_faster("rnn_tanh", 64, 256, 50, training=False)
    assert dispatch.numba_is_faster("gru", 64, 1024, 1000, training=True)
    assert not dispatch.numba_is_faster("gru", 256, 64, 1000, training=True)  # not measured
    assert not dispatch.numba_is_faster("gru", 1, 2048, 1000, training=True)
    # the GRU's training from 4 steps only at batch 1, or batch <= 8 with hidden <= 128
    assert dispatch.numba_is_faster("gru", 1, 1024, 4)
    assert dispatch.numba_is_faster("gru", 8, 128, 4)
    for batch, hidden in ((16, 64), (4, 256), (128, 1024)):
        assert not dispatch.numba_is_faster("gru", batch, hidden, 7, training=True)
        assert dispatch.numba_is_faster("gru", batch, hidden, 8, training=True)
    assert not dispatch.numba_is_faster("rnn_relu", 64, 64, 1000, training=False)
    assert not dispatch.numba_is_faster("rnn_relu", 32, 64, 1000, training=True)
    assert dispatch.numba_is_faster("rnn_relu", 128, 128, 50, training=True)  # above H = 64
    assert dispatch.numba_is_faster("rnn_relu", 64, 128, 50, training=False)
    assert not dispatch.numba_is_faster("rnn_relu", 128, 128, 50, training=False)
    assert not dispatch.numba_is_faster("lstm", 1, 64, 1000)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", ["sigmoid", "tanh"])
def test_nonlinearities_are_within_a_few_ulp_of_torch_float64(name, dtype):
    """The kernels' vectorised sigmoid and tanh (float32 computed in float32 with its own
    polynomial, float64 in float64) against torch's in float64: within 2 float32 ulp (torch's
    float64 is exact at that resolution; measured 1.6 and 1.8, torch's own float32 sigmoid 1.9)
    and 4 float64 ulp (measured: 2); saturation, signed zero, NaN and infinities as torch."""
    generator = torch.Generator().manual_seed(0)
    values = torch.cat(
        (
            torch.randn(20000, generator=generator, dtype=torch.float64) * 8,
            torch.linspace(-100, 100, 4001, dtype=torch.float64),
            torch.tensor([0.0, -0.0, 1e-30, -1e-8, 1e-4, 87.5, -87.5, 88.8, -104.0]),
        )
    ).to(dtype)
    special = torch.tensor([float("nan"), float("inf"), -float("inf")], dtype=dtype)
    kernel = getattr(_numba_common, f"{name}_")
    reference = getattr(torch, name)
    array = torch.cat((values, special)).numpy().copy()
    kernel(array, 0, len(array))
    ours = torch.from_numpy(array)
    exact = reference(values.double())
    normal = exact.abs() >= torch.finfo(dtype).tiny  # ulps of denormal results mean little
    rounded = exact.to(dtype).abs()
    ulp = (rounded.nextafter(torch.tensor(float("inf"), dtype=dtype)) - rounded).double()
    error = (ours[: len(values)].double() - exact).abs()
    assert (error / ulp)[normal].max() <= (2.0 if dtype == torch.float32 else 4.0)
    assert error.max() <= 2 * torch.finfo(dtype).eps
    torch.testing.assert_close(ours[len(values) :], reference(special), equal_nan=True)
    zeros = values == 0
    assert torch.equal(ours[: len(values)][zeros].signbit(), reference(values[zeros]).signbit())


def test_unowned_arrays_are_the_same_memory_without_an_owner():
    """`unowned` gives the loops an array whose row views count no references: the same data,
    shape and strides (a strided view too), writes through its rows reach the owner, and the
    views read what the owner holds."""
    import numba
    import numpy as np

    @numba.njit
    def through_rows(array):
        view = _numba_common.unowned(array)
        total = 0.0
        for i in range(view.shape[0]):
            row = view[i]
            for j in range(row.shape[0]):
                total += row[j]
                row[j] = 10 * i + j
        return total, view.shape, view.strides

    owner = np.arange(24.0).reshape(4, 6)
    strided = owner[::2, 1::2]  # (2, 3), not contiguous
    expected_sum = float(strided.sum())
    total, shape, strides = through_rows(strided)
    assert total == expected_sum
    assert shape == strided.shape and strides == strided.strides
    np.testing.assert_array_equal(owner[::2, 1::2], [[0, 1, 2], [10, 11, 12]])
    assert owner[1, 1] == 7.0 and owner[0, 0] == 0.0  # rows and columns outside it untouched


def test_prefetch_hints_the_rows_a_step_will_read_and_changes_nothing():
    """`prefetch_step` / `prefetch_block` compile to prefetch instructions (the hint reaches
    the machine code) for each running sequence's row `step` ahead, and read or write nothing:
    the arrays are as before, whatever the step (past the end too: no fault)."""
    import numba
    import numpy as np

    @numba.njit
    def hint(rows, lengths, order, step, reverse):
        _numba_common.prefetch_step(rows, lengths, order, len(order), step, reverse)
        _numba_common.prefetch_block(rows, step)

    rows = np.arange(5 * 3 * 40, dtype=np.float32).reshape(5, 3, 40)
    before = rows.copy()
    lengths, order = np.array([5, 2, 4]), np.array([0, 2, 1])
    for step in (-3, 0, 1, 4, 5, 9):
        for reverse in (False, True):
            hint(rows, lengths, order, step, reverse)
    np.testing.assert_array_equal(rows, before)
    assembly = next(iter(hint.inspect_asm().values()))
    assert "prefetch" in assembly or "prfm" in assembly  # x86-64, Arm
