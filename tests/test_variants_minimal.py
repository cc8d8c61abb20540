"""minGRU and minLSTM: the step against the paper's equations; the log-space scan, the compiled
sequential recurrence and the fused gates-and-recurrence kernel against the step loop and
against each other (outputs and gradients,
property-based over shapes, lengths, directions and layers); the scan's stability on long
sequences, streaming, gradcheck."""

from __future__ import annotations

from unittest import mock

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import rnnkit
from rnnkit import MinGRU, MinGRUCell, MinLSTM, MinLSTMCell, kernels
from rnnkit.minimal import log_space_scan

F64 = torch.float64


def g(v):
    """The paper's positive activation: v + 1/2 for v >= 0, sigmoid(v) below."""
    return torch.where(v >= 0, v + 0.5, torch.sigmoid(v))


def written_out(a, b, h0):
    """h_t = a_t * h_{t-1} + b_t over dim 0, a step at a time in torch."""
    hs, state = [], h0
    for t in range(a.shape[0]):
        state = a[t] * state + b[t]
        hs.append(state)
    return torch.stack(hs)


def test_min_gru_step_follows_the_equations():
    torch.manual_seed(0)
    cell = MinGRUCell(3, 4, dtype=F64)
    x, h = torch.randn(5, 3, dtype=F64), torch.randn(5, 4, dtype=F64)
    w_z, w_h = cell.weight_ih[:4], cell.weight_ih[4:]
    b_z, b_h = cell.bias_ih[:4], cell.bias_ih[4:]
    z = torch.sigmoid(x @ w_z.T + b_z)
    h_tilde = g(x @ w_h.T + b_h)
    torch.testing.assert_close(cell(x, h), (1 - z) * h + z * h_tilde)


def test_min_lstm_step_follows_the_equations():
    torch.manual_seed(1)
    cell = MinLSTMCell(3, 4, dtype=F64)
    x, h = torch.randn(5, 3, dtype=F64), torch.randn(5, 4, dtype=F64)
    w_f, w_i, w_h = cell.weight_ih.split(4)
    b_f, b_i, b_h = cell.bias_ih.split(4)
    f = torch.sigmoid(x @ w_f.T + b_f)
    i = torch.sigmoid(x @ w_i.T + b_i)
    h_tilde = g(x @ w_h.T + b_h)
    expected = f / (f + i) * h + i / (f + i) * h_tilde
    torch.testing.assert_close(cell(x, h), expected)


def test_positive_activation_on_worked_numbers():
    cell = MinGRUCell(1, 2, bias=False, dtype=F64)
    with torch.no_grad():
        cell.weight_ih.copy_(torch.tensor([[0.0], [0.0], [1.0], [-1.0]], dtype=F64))  # z: 1/2
    h = cell(torch.tensor([[2.0]], dtype=F64), torch.zeros(1, 2, dtype=F64))
    # h_tilde = [2 + 1/2, sigmoid(-2)], z = 1/2, h_0 = 0
    torch.testing.assert_close(h, 0.5 * torch.tensor([[2.5, 0.11920292202211755]], dtype=F64))


@pytest.mark.parametrize("chunk", [1, 3, 7, 128])
def test_log_space_scan_solves_the_linear_recurrence(chunk):
    torch.manual_seed(2)
    a = torch.rand(7, 2, 3, dtype=F64)  # in (0, 1)
    b = torch.rand(7, 2, 3, dtype=F64) * 3
    h = torch.randn(2, 3, dtype=F64)  # any sign
    scanned = log_space_scan(a.log(), b.log(), h, chunk)
    for t in range(7):
        h = a[t] * h + b[t]
        torch.testing.assert_close(scanned[t], h)


@settings(max_examples=30, deadline=None)
@given(
    steps=st.integers(1, 9),
    batch=st.integers(1, 4),
    hidden=st.integers(1, 5),
    dtype=st.sampled_from([torch.float32, F64]),
    seed=st.integers(0, 2**16),
)
def test_compiled_recurrence_solves_it_with_its_gradients(steps, batch, hidden, dtype, seed):
    """`kernels.linear_scan` against the recurrence written out in torch, outputs and the
    gradients of a, b and h0."""
    generator = torch.Generator().manual_seed(seed)
    a = torch.rand(steps, batch, hidden, dtype=dtype, generator=generator).requires_grad_()
    b = torch.randn(steps, batch, hidden, dtype=dtype, generator=generator).requires_grad_()
    h0 = torch.randn(batch, hidden, dtype=dtype, generator=generator).requires_grad_()
    weight = torch.randn(steps, batch, hidden, dtype=dtype, generator=generator)
    results = []
    for compiled in (True, False):
        if compiled:
            h = kernels.linear_scan(a, b, h0)
        else:
            h = written_out(a, b, h0)
        results.append((h, *torch.autograd.grad((h * weight).sum(), [a, b, h0])))
    for name, got, want in zip(["h", "da", "db", "dh0"], *results, strict=True):
        torch.testing.assert_close(got, want, msg=name)


def test_compiled_recurrence_passes_gradcheck():
    generator = torch.Generator().manual_seed(11)
    a = torch.rand(5, 2, 3, dtype=F64, generator=generator).requires_grad_()
    b = torch.randn(5, 2, 3, dtype=F64, generator=generator).requires_grad_()
    h0 = torch.randn(2, 3, dtype=F64, generator=generator).requires_grad_()
    assert torch.autograd.gradcheck(kernels.linear_scan, (a, b, h0))


@settings(max_examples=30, deadline=None)
@given(
    lstm=st.booleans(),
    steps=st.integers(1, 7),
    batch=st.integers(1, 4),
    hidden=st.integers(1, 9),
    dtype=st.sampled_from([torch.float32, F64]),
    seed=st.integers(0, 2**16),
)
def test_fused_minimal_scan_equals_the_cells_coefficients(lstm, steps, batch, hidden, dtype, seed):
    """`kernels.minimal_scan` (gates and recurrence in one compiled pass) against the cell's
    `coefficients` in torch and the recurrence written out: outputs and the gradients of the
    preactivations and h0, with preactivations of both signs and exact zeros (g's two pieces)."""
    cell = (MinLSTMCell if lstm else MinGRUCell)(1, hidden, dtype=dtype)
    generator = torch.Generator().manual_seed(seed)
    gates = 3 if lstm else 2
    p = 3 * torch.randn(steps, batch, gates * hidden, dtype=dtype, generator=generator)
    p[0, 0, -1] = 0.0  # g(v) switches pieces at v = 0
    p.requires_grad_()
    h0 = torch.randn(batch, hidden, dtype=dtype, generator=generator).requires_grad_()
    weight = torch.randn(steps, batch, hidden, dtype=dtype, generator=generator)
    results = []
    for fused in (True, False):
        if fused:
            h = kernels.minimal_scan(p, h0, lstm)
        else:
            with mock.patch.object(cell, "preactivations", lambda x: p.chunk(gates, dim=-1)):
                a, b = cell.coefficients(None)
            h = written_out(a, b, h0)
        results.append((h, *torch.autograd.grad((h * weight).sum(), [p, h0])))
    for name, got, want in zip(["h", "dp", "dh0"], *results, strict=True):
        torch.testing.assert_close(got, want, msg=name)
    with torch.no_grad():  # the forward alone, which keeps no sigmoids for a backward pass
        torch.testing.assert_close(kernels.minimal_scan(p, h0, lstm), results[0][0])


@pytest.mark.parametrize("lstm", [False, True])
def test_fused_minimal_scan_passes_gradcheck_and_checks_shapes(lstm):
    generator = torch.Generator().manual_seed(12)
    gates = 3 if lstm else 2
    p = torch.randn(5, 2, gates * 3, dtype=F64, generator=generator).requires_grad_()
    h0 = torch.randn(2, 3, dtype=F64, generator=generator).requires_grad_()
    assert torch.autograd.gradcheck(lambda p, h0: kernels.minimal_scan(p, h0, lstm), (p, h0))
    with pytest.raises(ValueError, match=rf"preactivations \(T, B, {gates}\*H\)"):
        kernels.minimal_scan(p[..., :-1], h0, lstm)


def pair(kind, seed, route="auto", **kwargs):
    """The same minimal layer twice: whole sequences on `route` (the cells' `scan`: "compiled",
    "log" or "auto") and the step loop (reference)."""
    cls = {"gru": MinGRU, "lstm": MinLSTM}[kind]
    torch.manual_seed(seed)
    scan = cls(backend="auto", dtype=F64, **kwargs)
    for cell in scan.cells:
        cell.scan = route
    loop = cls(backend="reference", dtype=F64, **kwargs)
    loop.load_state_dict(scan.state_dict())
    return scan, loop


def outputs_and_grads(layer, x, h0, lengths, weight):
    x = x.clone().requires_grad_(True)
    h0 = h0.clone().requires_grad_(True)
    out, final = layer(x, h0, lengths=lengths)
    layer.zero_grad()
    ((out * weight).sum() + (final * final).sum()).backward()
    return out, final, x.grad, h0.grad, [p.grad for p in layer.parameters()]


@settings(max_examples=30, deadline=None)
@given(
    kind=st.sampled_from(["gru", "lstm"]),
    num_layers=st.integers(1, 2),
    bidirectional=st.booleans(),
    batch=st.integers(1, 4),
    steps=st.integers(1, 8),
    input_size=st.integers(1, 3),
    hidden=st.integers(1, 4),
    use_lengths=st.booleans(),
    chunk=st.sampled_from([2, 3, 128]),  # for the log-space scan
    route=st.sampled_from(["compiled", "log"]),
    seed=st.integers(0, 2**16),
)
def test_scan_equals_the_step_loop(
    kind, num_layers, bidirectional, batch, steps, input_size, hidden, use_lengths, chunk, route,
    seed,
):  # fmt: skip
    """Both whole-sequence routes (the compiled recurrence, the log-space scan) equal the step
    loop, and so each other."""
    scan, loop = pair(
        kind,
        seed,
        route,
        input_size=input_size,
        hidden_size=hidden,
        num_layers=num_layers,
        bidirectional=bidirectional,
    )
    for cell in scan.cells:
        cell.scan_chunk = chunk  # scans over several chunks, or one
    generator = torch.Generator().manual_seed(seed)
    x = 2 * torch.randn(steps, batch, input_size, dtype=F64, generator=generator)
    directions = 2 if bidirectional else 1
    h0 = torch.randn(directions * num_layers, batch, hidden, dtype=F64, generator=generator)
    lengths = torch.randint(1, steps + 1, (batch,), generator=generator) if use_lengths else None
    weight = torch.randn(steps, batch, directions * hidden, dtype=F64, generator=generator)
    expected = outputs_and_grads(loop, x, h0, lengths, weight)
    actual = outputs_and_grads(scan, x, h0, lengths, weight)
    for name, got, want in zip(["output", "final", "dx", "dh0"], actual, expected, strict=False):
        torch.testing.assert_close(got, want, msg=name)
    for got, want in zip(actual[4], expected[4], strict=True):
        torch.testing.assert_close(got, want, msg="parameter gradient")


@pytest.mark.parametrize("kind", ["gru", "lstm"])
def test_scan_is_stable_where_the_product_of_coefficients_underflows(kind):
    """T = 3000 in float32: prod_t a_t underflows to 0 long before the end (a_t ~ 1/2), yet the
    chunked log-space scan matches the float64 step loop closely and its gradients stay
    finite."""
    scan, loop = pair(kind, 3, "log", input_size=2, hidden_size=3)
    scan = scan.float()
    x = torch.randn(3000, 2, 2, dtype=F64)
    with torch.no_grad():
        expected, _ = loop(x)
    coefficients = scan.cells[0].log_coefficients(x.float())[0]
    assert coefficients.sum(0).exp().min() == 0  # the linear-space product underflows
    x32 = x.float().requires_grad_(True)
    out, final = scan(x32)
    torch.testing.assert_close(out.double(), expected, atol=5e-5, rtol=5e-5)
    out.sum().backward()
    assert torch.isfinite(x32.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in scan.parameters())


@pytest.mark.parametrize("cls", [MinGRU, MinLSTM])
def test_step_streams_what_the_scan_computes(cls):
    torch.manual_seed(4)
    layer = cls(3, 4, num_layers=2)
    x = torch.randn(6, 2, 3)
    expected_out, expected_final = layer(x)  # the scan
    state, outputs = None, []
    for t in range(6):
        out, state = layer.step(x[t], state)
        outputs.append(out)
    torch.testing.assert_close(torch.stack(outputs), expected_out)
    torch.testing.assert_close(state, expected_final)


@pytest.mark.parametrize("kind", ["gru", "lstm"])
def test_compiled_recurrence_is_exact_on_long_sequences(kind):
    """T = 3000 in float32 on the default CPU route (the compiled recurrence): within float32
    rounding of the float64 step loop, with finite gradients."""
    fast, loop = pair(kind, 3, "auto", input_size=2, hidden_size=3)
    fast = fast.float()
    x = torch.randn(3000, 2, 2, dtype=F64)
    with torch.no_grad():
        expected, _ = loop(x)
    assert fast.cells[0]._uses_compiled(x.float())
    x32 = x.float().requires_grad_(True)
    out, _ = fast(x32)
    torch.testing.assert_close(out.double(), expected, atol=1e-5, rtol=1e-5)
    out.sum().backward()
    assert torch.isfinite(x32.grad).all()


@pytest.mark.parametrize("cls", [MinGRU, MinLSTM])
@pytest.mark.parametrize("route", ["compiled", "log"])
def test_minimal_layers_pass_gradcheck_through_the_scan(cls, route):
    torch.manual_seed(5)
    module = cls(2, 3, bidirectional=True, batch_first=True, dtype=F64)
    for cell in module.cells:
        cell.scan = route
    x = torch.randn(2, 4, 2, dtype=F64, requires_grad=True)
    h0 = torch.randn(2, 2, 3, dtype=F64, requires_grad=True)
    lengths = torch.tensor([4, 2])
    names = [n for n, _ in module.named_parameters()]

    def fn(x, h0, *params):
        return torch.func.functional_call(
            module, dict(zip(names, params, strict=True)), (x, h0), {"lengths": lengths}
        )

    params = [p.detach().clone().requires_grad_(True) for p in module.parameters()]
    assert torch.autograd.gradcheck(fn, (x, h0, *params))


def test_minimal_layers_names_and_errors():
    layer = MinLSTM(3, 4, num_layers=2, bidirectional=True)
    assert list(layer.state_dict())[:2] == ["weight_ih_l0", "bias_ih_l0"]
    assert layer.weight_ih_l1_reverse.shape == (12, 8)
    assert MinGRU(3, 4, bias=False).cells[0].bias_ih is None
    with pytest.raises(ValueError, match="backend='torch'"):
        MinGRU(3, 4, backend="torch")
    with pytest.raises(ValueError, match="init must be one of"):
        MinGRU(3, 4, init="glorot")
    orthogonal = MinGRU(3, 4, init="orthogonal")
    assert torch.all(orthogonal.bias_ih_l0 == 0)
    assert rnnkit.MinGRUCell is MinGRUCell
