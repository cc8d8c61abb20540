"""The compiled variant kernels (`kernels.variant_sequence`) equal the reference loop over the
variant cells: outputs, final states and the gradients of input, initial state and every
parameter, over random shapes, lengths (`lengths=` and PackedSequence), directions, layer
counts, options and their combinations, in training (the same seed gives both routes the same
random draws) and in eval (property-based); gradcheck in float64; the dispatch between them."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from unittest import mock

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.nn.utils.rnn import pack_padded_sequence

import rnnkit
from rnnkit import Variant, VariantGRUCell, bench, kernels
from rnnkit.kernels import _numba_products, _onednn, dispatch, numba_lstm
from rnnkit.variants import zoneout_draws

F64 = torch.float64
LAYERS = {"lstm": rnnkit.LSTM, "gru": rnnkit.GRU, "rnn_tanh": rnnkit.RNN, "rnn_relu": rnnkit.RNN}


def make_pair(kind: str, options: dict, dtype: torch.dtype, seed: int):
    """The same variant layer twice, on the compiled route and on the reference loop, with
    random weights (LN gains and peepholes included, so that every term counts)."""
    if kind.startswith("rnn"):
        options = options | {"nonlinearity": kind[4:]}
    layers = [LAYERS[kind](backend=b, dtype=dtype, **options) for b in ("numba", "reference")]
    assert layers[0]._route(torch.zeros(1, 1, layers[0].input_size, dtype=dtype)) == "numba"
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in layers[0].parameters():
            p.copy_(0.5 * torch.randn(p.shape, dtype=dtype, generator=generator))
    layers[1].load_state_dict(layers[0].state_dict())
    return layers


def initial_state(layer, batch: int, dtype: torch.dtype):
    """A random hx in torch.nn's layout, requiring grad."""
    rows = layer.num_layers * layer.num_directions
    out_size = layer.proj_size or layer.hidden_size
    h = torch.randn(rows, batch, out_size, dtype=dtype)
    if isinstance(layer, rnnkit.LSTM) or (isinstance(layer, rnnkit.GRU) and layer.proj_size):
        c = torch.randn(rows, batch, layer.hidden_size, dtype=dtype)
        return (h.requires_grad_(), c.requires_grad_())
    return h.requires_grad_()


def flat(state) -> torch.Tensor:
    return torch.cat([s.flatten() for s in state]) if isinstance(state, tuple) else state.flatten()


def run(layer, x, hx, lengths, packed: bool, seed: int):
    """(output as a tensor, final state flattened) from a seeded call."""
    torch.manual_seed(seed)
    if packed:
        data = pack_padded_sequence(x, lengths, enforce_sorted=False)
        output, final = layer(data, hx)
        return output.data, flat(final)
    output, final = layer(x, hx, lengths=lengths)
    return output, flat(final)


def assert_close_in_norm(a: torch.Tensor, b: torch.Tensor, relative: float, name: str) -> None:
    """|a - b| <= relative * |b| in the 2-norm: for float32, where a few elements of a gradient
    summed over many steps may differ by more than their own rounding."""
    assert (a - b).norm() <= relative * b.norm(), f"{name}: {(a - b).norm() / b.norm():.2e}"


def assert_routes_equal(layers, x, hx, lengths=None, packed=False, seed=0, relative=None):
    """Outputs, final states and all gradients of the two routes agree: elementwise to
    assert_close's tolerance for the dtype, or in norm to `relative`."""
    leaves = [x, *(hx if isinstance(hx, tuple) else [hx])]
    results = []
    for layer in layers:
        output, final = run(layer, x, hx, lengths, packed, seed)
        weights = torch.linspace(-1, 1, output.numel(), dtype=x.dtype).reshape(output.shape)
        loss = (output * weights).sum() + final.sin().sum()
        results.append((output, final, torch.autograd.grad(loss, [*leaves, *layer.parameters()])))
    (out_a, final_a, grads_a), (out_b, final_b, grads_b) = results
    names = ["x", "hx", "cx"][: len(leaves)] + [n for n, _ in layers[0].named_parameters()]
    pairs = zip(
        ["output", "final state", *names],
        [out_a, final_a, *grads_a],
        [out_b, final_b, *grads_b],
        strict=True,
    )
    for name, a, b in pairs:
        if relative is None:
            torch.testing.assert_close(a, b, msg=lambda m, name=name: f"{name}: {m}")
        else:
            assert_close_in_norm(a, b, relative, name)


RATE = st.sampled_from([0.0, 0.3])


@st.composite
def variant_options(draw, kind: str, hidden: int) -> dict:
    options = {
        "recurrent_dropout": draw(RATE),
        "zoneout": draw(RATE),
        "weight_drop": draw(RATE),
        "proj_size": draw(st.sampled_from([0, *range(1, hidden)])),
    }
    if kind in ("lstm", "gru"):
        options["layer_norm"] = draw(st.booleans())
    if kind == "lstm":
        options["peephole"] = draw(st.booleans())
        options["zoneout_cell"] = draw(st.sampled_from([None, 0.0, 0.5]))
    plain = ("zoneout_cell", "proj_size") if kind == "lstm" else ("zoneout_cell",)
    if not any(v for k, v in options.items() if k not in plain):
        options["zoneout"] = 0.2  # at least one variant, else the layer is torch.nn's
    return options


@st.composite
def cases(draw):
    kind = draw(st.sampled_from(list(LAYERS)))
    hidden = draw(st.integers(1, 5))
    steps, batch = draw(st.integers(1, 5)), draw(st.integers(1, 4))
    lengths = draw(st.none() | st.lists(st.integers(1, steps), min_size=batch, max_size=batch))
    return {
        "kind": kind,
        "options": draw(variant_options(kind, hidden))
        | {
            "input_size": draw(st.integers(1, 3)),
            "hidden_size": hidden,
            "num_layers": draw(st.integers(1, 2)),
            "bidirectional": draw(st.booleans()),
        },
        "steps": steps,
        "batch": batch,
        "lengths": None if lengths is None else torch.tensor(lengths),
        "packed": lengths is not None and draw(st.booleans()),
        "training": draw(st.booleans()),
        "route": draw(st.sampled_from(ROUTES)),  # the per-step products' route
        "w_hh_in_loop": draw(st.booleans()),  # the LSTM loop sums dL/dW_hh, or torch's product
        "seed": draw(st.integers(0, 2**16)),
    }


ROUTES = (_numba_products.HAND, _numba_products.BLAS, _numba_products.PACKED)


@contextlib.contextmanager
def products(route: int):
    """Force the variant kernels' per-step products through one route: the hand loop, BLAS or
    the packed tiles; on the packed route the projection W_ih x too, however few the rows, and
    the weight gradients through oneDNN (float32), however small."""
    fast = route == _numba_products.PACKED
    min_rows = 0 if fast else _numba_products.PACKED_LINEAR_MIN_ROWS
    min_onednn = 0 if fast else _onednn.MIN_MULTIPLY_ADDS
    with (
        mock.patch.object(_numba_products, "product_route", lambda batch, weight: route),
        mock.patch.object(_numba_products, "PACKED_LINEAR_MIN_ROWS", min_rows),
        mock.patch.object(_onednn, "MIN_MULTIPLY_ADDS", min_onednn),
    ):
        yield


@settings(max_examples=40, deadline=None)
@given(cases())
def test_compiled_variants_equal_the_reference_loop(case):
    layers = make_pair(case["kind"], case["options"], F64, case["seed"])
    for layer in layers:
        layer.train(case["training"])
    torch.manual_seed(case["seed"])
    x = torch.randn(case["steps"], case["batch"], case["options"]["input_size"], dtype=F64)
    hx = initial_state(layers[0], case["batch"], F64)
    in_loop = (2**62, 1) if case["w_hh_in_loop"] else (0, 2**62)  # `sums_w_hh_in_loop`
    with products(case["route"]), mock.patch.object(numba_lstm, "SUMS_W_HH_IN_LOOP", in_loop):
        assert_routes_equal(
            layers, x.requires_grad_(), hx, case["lengths"], case["packed"], case["seed"]
        )


ALL_OPTIONS = {
    "lstm": {"layer_norm": True, "peephole": True, "zoneout_cell": 0.4},
    "gru": {"layer_norm": True},
    "rnn_tanh": {},
    "rnn_relu": {},
}


@pytest.mark.parametrize("kind", list(LAYERS))
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("route", ROUTES)
def test_every_option_at_once_at_a_larger_size_in_float32(kind, training, route):
    """Enough units and sequences for the blocked products to take every path, and BLAS's;
    float32."""
    options = ALL_OPTIONS[kind] | {"recurrent_dropout": 0.3, "zoneout": 0.2, "weight_drop": 0.3}
    options |= {"input_size": 9, "hidden_size": 37, "proj_size": 13, "bidirectional": True}
    layers = make_pair(kind, options, torch.float32, seed=3)
    torch_init = LAYERS[kind](**options).state_dict()  # small weights: float32 stays close
    for layer in layers:
        layer.load_state_dict(torch_init)
        layer.train(training)
    torch.manual_seed(4)
    x = torch.randn(30, 11, 9, requires_grad=True)
    lengths = torch.randint(1, 31, (11,))
    hx = initial_state(layers[0], 11, torch.float32)
    # LN divides by small deviations: the float32 loop itself is 2e-5 off float64 here, and the
    # two float32 routes sum in different orders (BLAS's blocking, MKL's for W_ih x): LN_h's
    # gain gradient read 7.7e-5 apart through BLAS, 1e-5 through the hand loop; with the
    # masks drawn as uniform < keep (another draw of the same distribution) dW_ih read 2.1e-4
    # apart on the packed route. A wrong term in the equations is off by 1e-2 or more.
    with products(route):
        assert_routes_equal(layers, x, hx, lengths, seed=5, relative=4e-4)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("size", [1, 5, 64])
def test_the_gates_layer_norm_moments_in_one_pass_equal_torchs(dtype, size):
    """`gate_moments` (the four gate groups' sums in one pass) gives each group's mean and
    1 / sqrt(var + eps) as `group_moments` and as torch's float64 layer norm, on values far
    from zero (where E[v^2] - E[v]^2 without a shift would cancel)."""
    generator = np.random.default_rng(3)
    v = 1000 + generator.standard_normal(4 * size) * np.array([1, 1e-2, 10, 1]).repeat(size)
    v = v.astype(dtype)
    eps = 1e-5
    means, rstds = np.zeros((2, 4)), np.zeros((2, 4), dtype=dtype)
    numba_lstm.gate_moments(v, means[0], 0, rstds[0], 0, eps)
    numba_lstm.group_moments(v, 4, means[1], 0, rstds[1], 0, eps)
    groups = torch.from_numpy(v.astype(np.float64)).view(4, size)
    variance = groups.var(dim=1, unbiased=False)
    tolerance = {"rtol": 1e-5, "atol": 0} if dtype == np.float32 else {"rtol": 1e-12, "atol": 0}
    for mean, rstd in zip(means, rstds, strict=True):
        torch.testing.assert_close(torch.from_numpy(mean), groups.mean(dim=1), **tolerance)
        expected = (variance + eps).rsqrt().to(torch.from_numpy(rstd).dtype)
        torch.testing.assert_close(torch.from_numpy(rstd), expected, **tolerance)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("route", ROUTES)
def test_the_per_step_product_adds_rows_in_order(dtype, route):
    """`add_product` adds M @ vectors[b] to out[b] for the first n_rows sequences of `order`
    and leaves the others alone, on every route (G = 23 leaves the packed tiles a short last
    panel; 7 rows run one tile each of 4, 2 and 1 rows)."""
    generator = torch.Generator().manual_seed(9)
    matrix = torch.randn(23, 13, dtype=dtype, generator=generator)  # (G, K)
    vectors = torch.randn(7, 13, dtype=dtype, generator=generator)  # (B, K)
    out = torch.randn(7, 23, dtype=dtype, generator=generator)  # (B, G)
    order, n_rows = torch.randperm(7, generator=generator), 5
    expected = out.clone()
    expected[order[:n_rows]] += vectors[order[:n_rows]] @ matrix.T
    operand = _numba_products.product_operand(matrix, route)
    packed = _numba_products.product_buffers(operand, route, 7, 13)
    result = out.numpy().copy()
    _numba_products.add_product(
        operand, route, vectors.numpy(), order.numpy(), n_rows, result, *packed
    )
    torch.testing.assert_close(torch.from_numpy(result), expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize(("rows", "inner", "cols"), [(1, 1, 1), (15, 37, 70), (64, 96, 128)])
def test_the_product_of_the_rows_in_front_equals_torch(dtype, route, rows, inner, cols):
    """`product_prefix` fills out[:n] with vectors[:n] @ M.T and leaves the rows after n alone,
    for every route and for row counts that use every tile size of the packed route."""
    generator = torch.Generator().manual_seed(rows)
    matrix = torch.randn(cols, inner, dtype=dtype, generator=generator)  # (G, K)
    vectors = torch.randn(rows + 2, inner, dtype=dtype, generator=generator)  # (B, K)
    out = torch.full((rows + 2, cols), float("nan"), dtype=dtype)
    operand = _numba_products.product_operand(matrix, route)
    identity = np.arange(rows + 2)
    _numba_products.product_prefix(operand, route, vectors.numpy(), rows, out.numpy(), identity)
    torch.testing.assert_close(out[:rows], vectors[:rows] @ matrix.T)
    assert out[rows:].isnan().all()


_OTHER_WIDTH = """
import sys
from llvmlite import binding
if sys.argv[1] == "avx2":  # a host without AVX-512: 32-byte vectors, tiles of up to 4 rows
    binding.get_host_cpu_features = lambda: binding.FeatureMap()
import numpy as np, torch
from rnnkit.kernels import _numba_gemm, _numba_products
assert _numba_gemm.VECTOR_BYTES == int(sys.argv[2]), _numba_gemm.VECTOR_BYTES
for dtype in (torch.float32, torch.float64):
    for rows, inner, cols in ((1, 1, 1), (13, 37, 70), (64, 96, 128)):
        generator = torch.Generator().manual_seed(rows)
        matrix = torch.randn(cols, inner, dtype=dtype, generator=generator)
        vectors = torch.randn(rows, inner, dtype=dtype, generator=generator)
        out = torch.full((rows, cols), float("nan"), dtype=dtype)
        operand = _numba_products.product_operand(matrix, _numba_products.PACKED)
        _numba_products.product_prefix(
            operand, _numba_products.PACKED, vectors.numpy(), rows, out.numpy(), np.arange(rows)
        )
        torch.testing.assert_close(out, vectors @ matrix.T)
        total = torch.randn(inner, cols, dtype=dtype, generator=generator)  # += over rows
        summed = total.clone()
        _numba_gemm.add_outer_products(vectors.numpy(), rows, out.numpy(), summed.numpy())
        expected = (total.double() + vectors.T.double() @ out.double()).to(dtype)
        tolerance = 1e-4 if dtype == torch.float32 else 1e-10  # sums of up to 64 terms
        torch.testing.assert_close(summed, expected, rtol=tolerance, atol=tolerance)
"""


@pytest.mark.slow
@pytest.mark.parametrize(
    ("host", "width", "environment"),
    [("avx2", 32, {}), ("generic", 16, {"NUMBA_CPU_NAME": "generic"})],
)
def test_the_packed_tiles_at_the_vector_widths_of_other_hosts(tmp_path, host, width, environment):
    """The tiles compile for the host's vector width; on this machine (AVX-512) only the widest
    runs, so a fresh process (its own Numba cache: the width is not in the cache's key) builds
    and checks the 32-byte tiles of an AVX2 host and the 16-byte ones of a generic CPU."""
    env = os.environ | environment | {"NUMBA_CACHE_DIR": str(tmp_path)}
    command = [sys.executable, "-c", _OTHER_WIDTH, host, str(width)]
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    ("rows", "n_out", "n_cols", "batch"),
    [(8, 64, 256, 8), (3, 5, 40, 4), (1, 13, 33, 2), (1, 64, 256, 1), (5, 3, 7, 9), (6, 17, 96, 6)],
)
def test_outer_products_add_up_as_a_float64_product(dtype, rows, n_out, n_cols, batch):
    """`add_outer_products(v, n, m, out)` adds v[:n].T @ m[:n] to out: whole panels of columns
    by the register tiles (out's rows in tiles of 8, 4, 2, 1), the columns past the last panel
    by the plain loop; NaN in the rows past n and beside each row (never read) stays out."""
    from rnnkit.kernels._numba_gemm import add_outer_products

    rng = np.random.default_rng(rows * 100 + n_cols)
    vectors_padded = rng.standard_normal((batch, n_out + 3)).astype(dtype)
    matrix_padded = rng.standard_normal((batch, n_cols + 5)).astype(dtype)
    vectors_padded[:, n_out:], matrix_padded[:, n_cols:] = np.nan, np.nan  # beside each row
    vectors, matrix = vectors_padded[:, :n_out], matrix_padded[:, :n_cols]  # strided rows
    vectors[rows:], matrix[rows:] = np.nan, np.nan  # rows past n
    out = rng.standard_normal((n_out, n_cols)).astype(dtype)
    expected = out.astype(np.float64) + vectors[:rows].T.astype(np.float64) @ matrix[:rows]
    add_outer_products(vectors, rows, matrix, out)
    tolerance = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(out, expected, rtol=tolerance, atol=tolerance)


def test_the_products_take_the_route_they_measured_faster_for():
    small, large = torch.zeros(4 * 128, 128), torch.zeros(4 * 256, 256)  # 256 KiB, 1 MiB float32
    route = _numba_products.product_route
    with mock.patch.object(_numba_products, "VECTOR_BYTES", 32):  # no AVX-512
        assert route(1, small) == route(8, small) == _numba_products.BLAS  # W stays in L2
        assert route(16, small) == route(64, small) == _numba_products.PACKED
        assert route(2, large) == route(8, large) == route(64, large) == _numba_products.PACKED
        assert route(8, small.double().repeat(2, 1)) == _numba_products.PACKED  # 1 MiB float64
        assert route(1, large) == _numba_products.BLAS  # gemv: one row, nothing to pack for
    with mock.patch.object(_numba_products, "VECTOR_BYTES", 64):  # full-width tiles
        assert route(2, small) == route(8, small) == route(64, large) == _numba_products.PACKED
        assert route(1, small) == route(1, large) == _numba_products.BLAS


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_packed_projection_equals_torch_linear(dtype):
    """`packed_linear` over all steps (40 x 16 = 640 rows, past its 512-row switch; 37 inputs
    and 70 outputs leave a short last panel) gives torch's linear and its gradients."""
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(40, 16, 37, dtype=dtype, generator=generator, requires_grad=True)
    weight = torch.randn(70, 37, dtype=dtype, generator=generator, requires_grad=True)
    upstream = torch.randn(40, 16, 70, dtype=dtype, generator=generator)
    ours = _numba_products.packed_linear(x, weight)
    assert ours.grad_fn.name().endswith("PackedLinearBackward")
    expected = torch.nn.functional.linear(x, weight)
    torch.testing.assert_close(ours, expected)
    grads = torch.autograd.grad(ours, (x, weight), upstream)
    torch.testing.assert_close(grads, torch.autograd.grad(expected, (x, weight), upstream))


def test_the_projection_below_the_tiles_rows_takes_onednn_in_float32():
    """Below 512 rows a float32 projection large enough for oneDNN goes through `PackedLinear`
    (its products through oneDNN where torch carries it) and gives torch's linear and its
    gradients; a small one is torch's linear itself."""
    generator = torch.Generator().manual_seed(5)
    x = torch.randn(50, 4, 128, generator=generator, requires_grad=True)
    weight = torch.randn(512, 128, generator=generator, requires_grad=True)
    upstream = torch.randn(50, 4, 512, generator=generator)
    ours = _numba_products.packed_linear(x, weight)
    routed = ours.grad_fn.name().endswith("PackedLinearBackward")
    assert routed == _onednn.onednn_available()
    expected = torch.nn.functional.linear(x, weight)
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-4)
    grads = torch.autograd.grad(ours, (x, weight), upstream)
    expected_grads = torch.autograd.grad(expected, (x, weight), upstream)
    torch.testing.assert_close(grads, expected_grads, rtol=1e-5, atol=1e-4)
    small = _numba_products.packed_linear(x[:2, :1, :8], weight[:16, :8])
    assert not small.grad_fn.name().endswith("PackedLinearBackward")


def test_the_packed_projection_passes_gradcheck():
    x = torch.randn(3, 5, 4, dtype=F64, requires_grad=True)
    weight = torch.randn(6, 4, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(_numba_products.PackedLinear.apply, (x, weight))


GRADCHECK = {
    "lstm": dict(layer_norm=True, peephole=True, proj_size=2, zoneout=0.3, zoneout_cell=0.5),
    "gru": dict(layer_norm=True, proj_size=2, zoneout=0.3),
    "rnn_tanh": dict(proj_size=2, zoneout=0.3),
}


@pytest.mark.parametrize("kind", list(GRADCHECK))
@pytest.mark.parametrize("route", ROUTES)
def test_gradcheck(kind, route):
    """torch.autograd.gradcheck through the compiled route in both directions, with recurrent
    dropout and weight drop in training (the same draws at every evaluation) and lengths."""
    options = GRADCHECK[kind] | {"recurrent_dropout": 0.3, "weight_drop": 0.3}
    options |= {"input_size": 2, "hidden_size": 3, "bidirectional": True}
    layer = make_pair(kind, options, F64, seed=6)[0]
    x = torch.randn(4, 2, 2, dtype=F64, requires_grad=True)
    hx = initial_state(layer, 2, F64)
    hx = hx if isinstance(hx, tuple) else (hx,)
    names = [n for n, _ in layer.named_parameters()]
    lengths = torch.tensor([4, 2])

    def function(x, *tensors):
        torch.manual_seed(0)
        state = tensors[: len(hx)] if len(hx) > 1 else tensors[0]
        params = dict(zip(names, tensors[len(hx) :], strict=True))
        output, final = torch.func.functional_call(layer, params, (x, state), {"lengths": lengths})
        return output, flat(final)

    params = [p.detach().clone().requires_grad_() for p in layer.parameters()]
    with products(route):
        assert torch.autograd.gradcheck(function, (x, *hx, *params))


@pytest.mark.parametrize("reverse", [False, True])
def test_zoneout_draws_are_the_loops_per_step_draws(reverse):
    """One draw for the sequence holds the numbers the loop draws step by step (LSTM: c, then
    h; in reverse the loop's first step is the last time index)."""
    torch.manual_seed(8)
    d_c, d_h = zoneout_draws([(0.5, 3), (0.2, 2)], 6, 4, torch.zeros(1, dtype=F64), True, reverse)
    torch.manual_seed(8)
    for t in reversed(range(6)) if reverse else range(6):
        torch.testing.assert_close(d_c[t], (torch.rand(4, 3, dtype=F64) < 0.5).double())
        torch.testing.assert_close(d_h[t], (torch.rand(4, 2, dtype=F64) < 0.2).double())
    assert d_c.is_contiguous() and d_h.is_contiguous()  # the kernels read them without a copy
    eval_draws = zoneout_draws([(0.0, 3), (0.2, 2)], 6, 4, torch.zeros(1), False, reverse)
    assert eval_draws[0] is None and torch.all(eval_draws[1] == 0.2)


# ---- the dispatch ------------------------------------------------------------------------------


def test_auto_takes_the_kernel_for_small_batches_and_the_loop_for_large():
    layer = rnnkit.LSTM(8, 16, layer_norm=True)
    assert layer._route(torch.randn(50, 1, 8)) == "numba"
    assert layer._route(torch.randn(50, 256, 8)) == "reference"
    with torch.no_grad():
        assert layer._route(torch.randn(50, 1, 8)) == "numba"
    assert rnnkit.GRU(8, 16, zoneout=0.1, backend="reference")._route(torch.randn(50, 1, 8)) == (
        "reference"
    )
    assert rnnkit.RNN(8, 16, proj_size=4)._route(torch.randn(50, 1, 8).half()) == "reference"


@pytest.mark.parametrize("kind", list(LAYERS))
def test_dropout_variants_in_eval_take_torch_nns_route(kind):
    """In eval, recurrent dropout and weight drop are off: the layer is torch.nn's and takes
    torch's kernel ("plain"; GRU and RNN up to their dispatch's batch limit the compiled one),
    equal to the loop."""
    options = {"input_size": 3, "hidden_size": 4, "num_layers": 2, "bidirectional": True}
    options |= {"recurrent_dropout": 0.3, "weight_drop": 0.3}
    if kind == "lstm":
        options["proj_size"] = 2
    fast, loop = make_pair(kind, options, F64, seed=7)
    fast.backend = "auto"
    fast.eval(), loop.eval()
    x = torch.randn(9, 40, 3, dtype=F64, requires_grad=True)
    wide = torch.randn(9, dispatch.WIDE_MAX_BATCH + 1, 3, dtype=F64)
    assert fast._route(wide) == "plain"
    assert fast._route(x[:, :1]) == ("plain" if kind == "lstm" else "numba")
    hx = initial_state(fast, 40, F64)
    assert_routes_equal([fast, loop], x, hx, torch.randint(1, 10, (40,)))
    fast.train()
    assert fast._route(x) != "plain"  # in training the draws count


def test_cells_without_a_kernel_run_the_loop_and_refuse_numba():
    class Custom(VariantGRUCell):
        pass

    layer = rnnkit.Recurrent(Custom(3, 4, variant=Variant(zoneout=0.1)))
    assert kernels.variant_kind(layer.cells[0]) is None
    assert layer._route(torch.randn(20, 1, 3)) == "reference"
    forced = rnnkit.Recurrent(Custom(3, 4), backend="numba")
    with pytest.raises(ValueError, match="no compiled kernel"):
        forced(torch.randn(5, 1, 3))
    with pytest.raises(ValueError, match="float32/float64 on the CPU"):
        rnnkit.LSTM(3, 4, peephole=True, backend="numba")._route(torch.randn(5, 1, 3).half())


def test_variant_kernels_load_lazily_and_compile_nothing_until_called():
    code = (
        "import sys; before = set(sys.modules)\n"
        "import rnnkit\n"
        "assert not [m for m in set(sys.modules) - before if 'numba' in m]\n"
        "from rnnkit.kernels import numba_lstm, numba_variants\n"
        "kernels = [f for m in (numba_lstm, numba_variants) for f in vars(m).values()\n"
        "           if hasattr(f, 'signatures')]\n"
        "print(len(kernels), sum(len(f.signatures) for f in kernels))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    n_kernels, n_compiled = map(int, result.stdout.split())
    assert n_kernels >= 6 and n_compiled == 0


def test_bench_times_a_variant_against_lstm_and_the_loop(tmp_path):
    path = tmp_path / "bench.json"
    names = ["lstm_layer_norm:train:2:6:3:4", "mingru:infer:2:6:3:4", "gru_proj:stream:1:1:3:4"]
    cases = bench.cases_from_names(names)
    bench.run_bench(cases, repeats=1, json_path=str(path), compile=False, log=lambda line: None)
    records = json.loads(path.read_text())
    assert [r["route"] for r in records] == ["numba", "scan", "numba"]
    references = ["torch.nn.LSTM", "torch.nn.LSTM", "torch.nn.LSTMCell"]
    for record, reference in zip(records, references, strict=True):
        assert record["reference"] == reference
        assert record["ratio"] == pytest.approx(record["ours_ms"] / record["reference_ms"])
        assert record["loop_ratio"] == pytest.approx(record["ours_ms"] / record["loop_ms"])
    with pytest.raises(ValueError, match="kind:mode"):
        bench.cases_from_names(["lstm_fancy:stream:1:1:3:4"])
