"""The variant cells against their papers' equations, written here with plain tensor ops; gradcheck
through the layers; every option off equals the plain cell; the random draws of recurrent
dropout, weight drop and zoneout happen where the papers put them."""

from __future__ import annotations

import pytest
import torch

import rnnkit
from rnnkit import ElmanCell, GRUCell, LSTMCell, Variant
from rnnkit.variants import SequenceNoise, VariantElmanCell, VariantGRUCell, VariantLSTMCell

F64 = torch.float64
EPS = 1e-5  # torch.nn.LayerNorm's


def randomise(module: torch.nn.Module, seed: int = 0) -> None:
    """Every parameter ~ N(0, 0.5^2), so gains, shifts and peepholes are far from their init."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(0.5 * torch.randn(p.shape, dtype=p.dtype, generator=generator))


def ln(v, gain, shift):
    """Layer normalisation over the last dim (Ba et al. 2016, eq. 4): biased variance."""
    mean = v.mean(-1, keepdim=True)
    var = ((v - mean) ** 2).mean(-1, keepdim=True)
    return gain * (v - mean) / torch.sqrt(var + EPS) + shift


def per_gate(v, gain, shift, gates):
    """LN of each gate's block of H units of v (B, G*H) separately."""
    hidden = v.shape[-1] // gates
    blocks = [slice(k * hidden, (k + 1) * hidden) for k in range(gates)]
    return torch.cat([ln(v[:, b], gain[b], shift[b]) for b in blocks], dim=-1)


def lstm_reference(cell, x, h, c, h_mask=None, weight_mask=None):
    """One LSTM step from the papers: Ba et al. (LN), Gers & Schmidhuber (peepholes), Gal &
    Ghahramani (mask on h_{t-1}), Merity et al. (masked W_hh); no zoneout."""
    w_hh = cell.weight_hh if weight_mask is None else cell.weight_hh * weight_mask
    h_in = h if h_mask is None else h * h_mask
    wx, wh = x @ cell.weight_ih.T, h_in @ w_hh.T
    if cell.variant.layer_norm:
        wx = per_gate(wx, cell.ln_ih_weight, cell.ln_ih_bias, 4)
        wh = per_gate(wh, cell.ln_hh_weight, cell.ln_hh_bias, 4)
    a = wx + wh + cell.bias_ih + cell.bias_hh
    H = cell.hidden_size
    a_i, a_f, a_g, a_o = a[:, :H], a[:, H : 2 * H], a[:, 2 * H : 3 * H], a[:, 3 * H :]
    if cell.variant.peephole:
        a_i, a_f = a_i + cell.weight_ci * c, a_f + cell.weight_cf * c
    i, f, g = torch.sigmoid(a_i), torch.sigmoid(a_f), torch.tanh(a_g)
    c_new = f * c + i * g
    if cell.variant.peephole:
        a_o = a_o + cell.weight_co * c_new
    o = torch.sigmoid(a_o)
    c_out = ln(c_new, cell.ln_c_weight, cell.ln_c_bias) if cell.variant.layer_norm else c_new
    h_new = o * torch.tanh(c_out)
    if cell.weight_hr is not None:
        h_new = h_new @ cell.weight_hr.T
    return h_new, c_new


def gru_reference(cell, x, s, h, h_mask=None, weight_mask=None):
    """One GRU step (torch.nn.GRU's form) with LN per gate group on W_ih x and W_hh s, the
    recurrent input s (= h without projection); returns the full new h (no zoneout)."""
    w_hh = cell.weight_hh if weight_mask is None else cell.weight_hh * weight_mask
    s_in = s if h_mask is None else s * h_mask
    wx, wh = x @ cell.weight_ih.T, s_in @ w_hh.T
    if cell.variant.layer_norm:
        wx = per_gate(wx, cell.ln_ih_weight, cell.ln_ih_bias, 3)
        wh = per_gate(wh, cell.ln_hh_weight, cell.ln_hh_bias, 3)
    ax, ah = wx + cell.bias_ih, wh + cell.bias_hh
    H = cell.hidden_size
    r = torch.sigmoid(ax[:, :H] + ah[:, :H])
    z = torch.sigmoid(ax[:, H : 2 * H] + ah[:, H : 2 * H])
    n = torch.tanh(ax[:, 2 * H :] + r * ah[:, 2 * H :])
    return (1 - z) * n + z * h


# ---- the papers' equations, three steps by hand -------------------------------------------


@pytest.mark.parametrize(
    "variant,proj",
    [
        (Variant(layer_norm=True), 0),
        (Variant(peephole=True), 0),
        (Variant(layer_norm=True, peephole=True), 2),
    ],
)
def test_lstm_variants_follow_the_equations(variant, proj):
    torch.manual_seed(0)
    layer = rnnkit.LSTM(
        2,
        3,
        proj_size=proj,
        dtype=F64,
        layer_norm=variant.layer_norm,
        peephole=variant.peephole,
    )
    cell = layer.cells[0]
    randomise(cell)
    x = torch.randn(3, 2, 2, dtype=F64)
    h, c = torch.randn(2, proj or 3, dtype=F64), torch.randn(2, 3, dtype=F64)
    out, (h_n, c_n) = layer(x, (h[None], c[None]))
    for t in range(3):
        h, c = lstm_reference(cell, x[t], h, c)
        torch.testing.assert_close(out[t], h)
    torch.testing.assert_close(h_n[0], h)
    torch.testing.assert_close(c_n[0], c)


def test_layer_norm_lstm_on_one_worked_number():
    """H = 2 per gate, so LN maps each gate block [u, v] to gain * [-1, 1] * sign(v - u) (up to
    eps): with W_hh = 0, h_0 = c_0 = 0 and unit gains every gate sits at +-1."""
    cell = VariantLSTMCell(1, 2, variant=Variant(layer_norm=True), dtype=F64)
    with torch.no_grad():
        cell.weight_ih.copy_(torch.tensor([[1.0], [2.0]] * 4, dtype=F64))  # each gate: [x, 2x]
        cell.weight_hh.zero_()
        cell.bias_ih.zero_()
        cell.bias_hh.zero_()
    zeros = torch.zeros(1, 2, dtype=F64)
    h, c = cell(torch.tensor([[3.0]], dtype=F64), (zeros, zeros))
    unit = 1.5 / (1.5**2 + EPS) ** 0.5  # (v - mean) / sqrt(var + eps) for [3, 6]: mean 4.5
    s = torch.sigmoid(torch.tensor([-unit, unit], dtype=F64))
    g = torch.tanh(torch.tensor([-unit, unit], dtype=F64))
    c_expected = s * g  # f * 0 + i * g
    c_unit = (c_expected[1] - c_expected[0]) / 2  # LN of the two cell units
    c_norm = torch.stack([-c_unit, c_unit]) / (c_unit**2 + EPS) ** 0.5
    torch.testing.assert_close(c[0], c_expected)
    torch.testing.assert_close(h[0], s * torch.tanh(c_norm))


@pytest.mark.parametrize("layer_norm,proj", [(True, 0), (False, 2), (True, 2)])
def test_gru_variants_follow_the_equations(layer_norm, proj):
    torch.manual_seed(1)
    layer = rnnkit.GRU(2, 3, proj_size=proj, layer_norm=layer_norm, dtype=F64)
    cell = layer.cells[0]
    randomise(cell)
    x = torch.randn(3, 2, 2, dtype=F64)
    h = torch.randn(2, 3, dtype=F64)
    s = h @ cell.weight_hr.T if proj else h
    state = (s[None], h[None]) if proj else h[None]
    out, final = layer(x, state)
    for t in range(3):
        h = gru_reference(cell, x[t], s, h)
        s = h @ cell.weight_hr.T if proj else h
        torch.testing.assert_close(out[t], s)
    if proj:
        torch.testing.assert_close(final[0][0], s)
        torch.testing.assert_close(final[1][0], h)
    else:
        torch.testing.assert_close(final[0], h)


def test_projected_elman_follows_the_equation():
    torch.manual_seed(2)
    layer = rnnkit.RNN(2, 4, nonlinearity="relu", proj_size=2, dtype=F64)
    cell = layer.cells[0]
    randomise(cell)
    x = torch.randn(3, 2, 2, dtype=F64)
    h = torch.randn(2, 2, dtype=F64)
    out, h_n = layer(x, h[None])
    for t in range(3):
        pre = x[t] @ cell.weight_ih.T + cell.bias_ih + h @ cell.weight_hh.T + cell.bias_hh
        h = torch.relu(pre) @ cell.weight_hr.T  # h_t = W_hr f(...), (B, P)
        torch.testing.assert_close(out[t], h)
    torch.testing.assert_close(h_n[0], h)


def test_recurrent_dropout_and_weight_drop_equations_with_given_masks():
    """With the masks fixed: the LSTM sees m * h_{t-1} and M * W_hh, nothing else changes."""
    torch.manual_seed(3)
    variant = Variant(recurrent_dropout=0.5, weight_drop=0.5)
    x, h, c = (
        torch.randn(4, 2, dtype=F64),
        torch.randn(4, 3, dtype=F64),
        torch.randn(4, 3, dtype=F64),
    )
    h_mask = torch.bernoulli(torch.full((4, 3), 0.5, dtype=F64)) * 2
    weight_mask = torch.bernoulli(torch.full((12, 3), 0.5, dtype=F64)) * 2
    noise = SequenceNoise(h_mask=h_mask, weight_mask=weight_mask)
    lstm = VariantLSTMCell(2, 3, variant=variant, dtype=F64)
    torch.testing.assert_close(
        lstm(x, (h, c), noise), lstm_reference(lstm, x, h, c, h_mask, weight_mask)
    )
    gru = VariantGRUCell(2, 3, variant=variant, dtype=F64)
    weight_mask = weight_mask[:9]
    noise = SequenceNoise(h_mask=h_mask, weight_mask=weight_mask)
    torch.testing.assert_close(gru(x, h, noise), gru_reference(gru, x, h, h, h_mask, weight_mask))
    elman = VariantElmanCell(2, 3, variant=variant, dtype=F64)
    noise = SequenceNoise(h_mask=h_mask, weight_mask=weight_mask[:3])
    pre = (
        x @ elman.weight_ih.T + elman.bias_ih + (h * h_mask) @ (elman.weight_hh * weight_mask[:3]).T
    )
    torch.testing.assert_close(elman(x, h, noise), torch.tanh(pre + elman.bias_hh))


# ---- zoneout -------------------------------------------------------------------------------


def test_zoneout_in_eval_is_the_expectation():
    """Krueger et al.: at test time h_t = p h_{t-1} + (1 - p) h_new (and c with its own rate)."""
    torch.manual_seed(4)
    layer = rnnkit.LSTM(2, 3, dtype=F64, zoneout=0.3, zoneout_cell=0.6).eval()
    cell = layer.cells[0]
    x = torch.randn(4, 2, 2, dtype=F64)
    h, c = torch.randn(2, 3, dtype=F64), torch.randn(2, 3, dtype=F64)
    out, (h_n, c_n) = layer(x, (h[None], c[None]))
    for t in range(4):
        h_new, c_new = lstm_reference(cell, x[t], h, c)  # h_new from the un-zoned c_new
        h, c = 0.3 * h + 0.7 * h_new, 0.6 * c + 0.4 * c_new
        torch.testing.assert_close(out[t], h)
    torch.testing.assert_close((h_n[0], c_n[0]), (h, c))
    gru = rnnkit.GRU(2, 3, dtype=F64, zoneout=0.25).eval()
    h = torch.randn(2, 3, dtype=F64)
    out, _ = gru(x, h[None])
    for t in range(4):
        h = 0.25 * h + 0.75 * gru_reference(gru.cells[0], x[t], h, h)
        torch.testing.assert_close(out[t], h)


def test_zoneout_in_training_keeps_or_updates_each_unit():
    """Each unit of h and c is either its previous value (probability p) or the new one, drawn
    afresh at every step."""
    torch.manual_seed(5)
    cell = VariantLSTMCell(3, 64, variant=Variant(zoneout=0.3, zoneout_cell=0.6), dtype=F64)
    x = torch.randn(256, 3, dtype=F64)
    h, c = torch.randn(256, 64, dtype=F64), torch.randn(256, 64, dtype=F64)
    h_new, c_new = lstm_reference(cell, x, h, c)
    draws = []
    for _ in range(2):
        h_z, c_z = cell(x, (h, c))
        kept_h, kept_c = h_z == h, c_z == c
        assert torch.all(kept_h | torch.isclose(h_z, h_new))
        assert torch.all(kept_c | torch.isclose(c_z, c_new))
        assert abs(kept_h.double().mean() - 0.3) < 0.02
        assert abs(kept_c.double().mean() - 0.6) < 0.02
        draws.append(kept_h)
    assert not torch.equal(draws[0], draws[1])  # a new draw per step


# ---- the random draws of recurrent dropout and weight drop ---------------------------------


def identity_relu_rnn(hidden: int, **options) -> rnnkit.RNN:
    """h_t = relu(x_t + W h_{t-1}) with W_ih = W_hh = I: from x_0 = 1 and x_t = 0 after, h_t is
    the product of the masks that acted on h, so the masks can be read off the outputs."""
    layer = rnnkit.RNN(hidden, hidden, nonlinearity="relu", bias=False, dtype=F64, **options)
    with torch.no_grad():
        layer.weight_ih_l0.copy_(torch.eye(hidden))
        layer.weight_hh_l0.copy_(torch.eye(hidden))
    return layer


def impulse(steps: int, batch: int, hidden: int) -> torch.Tensor:
    x = torch.zeros(steps, batch, hidden, dtype=F64)
    x[0] = 1.0
    return x


def test_recurrent_dropout_uses_one_mask_per_sequence():
    torch.manual_seed(6)
    layer = identity_relu_rnn(32, recurrent_dropout=0.5).train()
    out, _ = layer(impulse(5, 8, 32))
    mask = out[1]  # h_0 = 1, so h_1 = m * h_0 = m: values 0 or 1 / (1 - p)
    assert set(mask.unique().tolist()) == {0.0, 2.0}
    for t in range(2, 5):
        torch.testing.assert_close(out[t], mask**t)  # the same m at every step
    assert not all(torch.equal(mask[0], mask[b]) for b in range(1, 8))  # one mask per sequence
    layer.eval()
    torch.testing.assert_close(layer(impulse(5, 8, 32))[0], torch.ones(5, 8, 32, dtype=F64))


def test_weight_drop_draws_once_per_forward_not_per_step():
    torch.manual_seed(7)
    layer = identity_relu_rnn(32, weight_drop=0.5).train()
    first, _ = layer(impulse(4, 3, 32))
    diagonal = first[1, 0]  # h_1 = diag(M) / (1 - p): the dropped identity's diagonal
    assert set(diagonal.unique().tolist()) == {0.0, 2.0}
    for t in range(1, 4):
        torch.testing.assert_close(first[t], (diagonal**t).expand(3, 32))  # same M: every step
    second, _ = layer(impulse(4, 3, 32))  # and every sample; a new M per forward
    assert not torch.equal(second[1, 0], diagonal)
    layer.eval()
    torch.testing.assert_close(layer(impulse(4, 3, 32))[0], torch.ones(4, 3, 32, dtype=F64))


# ---- every option off is the plain cell ----------------------------------------------------


@pytest.mark.parametrize("proj", [0, 2])
def test_variant_cells_with_options_off_are_the_plain_cells(proj):
    torch.manual_seed(8)
    x = torch.randn(4, 2)
    lstm = VariantLSTMCell(2, 3, proj_size=proj)
    plain_lstm = LSTMCell(2, 3, proj_size=proj)
    plain_lstm.load_state_dict(lstm.state_dict())
    state = (torch.randn(4, proj or 3), torch.randn(4, 3))
    torch.testing.assert_close(lstm(x, state), plain_lstm(x, state))
    h = torch.randn(4, 3)
    gru, plain_gru = VariantGRUCell(2, 3), GRUCell(2, 3)
    plain_gru.load_state_dict(gru.state_dict())
    torch.testing.assert_close(gru(x, h), plain_gru(x, h))
    elman, plain_elman = VariantElmanCell(2, 3, nonlinearity="relu"), ElmanCell(2, 3, True, "relu")
    plain_elman.load_state_dict(elman.state_dict())
    torch.testing.assert_close(elman(x, h), plain_elman(x, h))


def test_zero_peepholes_equal_the_plain_lstm():
    torch.manual_seed(9)
    layer = rnnkit.LSTM(2, 3, 2, bidirectional=True, peephole=True)
    reference = torch.nn.LSTM(2, 3, 2, bidirectional=True)
    with torch.no_grad():
        for cell in layer.cells:
            for w in (cell.weight_ci, cell.weight_cf, cell.weight_co):
                w.zero_()
    extra = reference.load_state_dict(layer.state_dict(), strict=False).unexpected_keys
    assert sorted(extra) == sorted(k for k in layer.state_dict() if "weight_c" in k)
    x = torch.randn(5, 2, 2)
    torch.testing.assert_close(layer(x), reference(x))


@pytest.mark.parametrize(
    "make",
    [
        lambda: (rnnkit.LSTM(2, 3, 2, recurrent_dropout=0.5, weight_drop=0.5), torch.nn.LSTM),
        lambda: (rnnkit.GRU(2, 3, 2, recurrent_dropout=0.5, weight_drop=0.5), torch.nn.GRU),
        lambda: (rnnkit.RNN(2, 3, 2, recurrent_dropout=0.5, weight_drop=0.5), torch.nn.RNN),
    ],
)
def test_dropout_variants_in_eval_equal_torch_nn(make):
    torch.manual_seed(10)
    layer, torch_cls = make()
    assert layer.fused_mode is None
    reference = torch_cls(2, 3, 2)
    reference.load_state_dict(layer.state_dict())  # no new parameters: strict
    layer.eval()
    x = torch.randn(5, 4, 2)
    torch.testing.assert_close(layer(x), reference(x))


def test_rates_of_zero_keep_the_plain_cells_and_the_fused_route():
    for layer in (
        rnnkit.LSTM(2, 3, recurrent_dropout=0.0, zoneout=0.0, weight_drop=0.0, layer_norm=False),
        rnnkit.GRU(2, 3, recurrent_dropout=0.0, zoneout=0.0, proj_size=0),
        rnnkit.RNN(2, 3, weight_drop=0.0, proj_size=0),
    ):
        assert layer.fused_mode is not None
        assert type(layer.cells[0]) in (LSTMCell, GRUCell, ElmanCell)


# ---- gradcheck through the layers (reference loop, float64) --------------------------------

GRADCHECK = {
    "lstm_layer_norm": lambda: rnnkit.LSTM(2, 3, layer_norm=True, dtype=F64),
    "lstm_peephole": lambda: rnnkit.LSTM(2, 3, peephole=True, bidirectional=True, dtype=F64),
    "lstm_recurrent_dropout": lambda: rnnkit.LSTM(2, 3, recurrent_dropout=0.4, dtype=F64),
    "lstm_zoneout": lambda: rnnkit.LSTM(2, 3, zoneout=0.3, zoneout_cell=0.5, dtype=F64),
    "lstm_weight_drop": lambda: rnnkit.LSTM(2, 3, weight_drop=0.4, dtype=F64),
    "lstm_all_proj": lambda: rnnkit.LSTM(
        2,
        3,
        proj_size=2,
        layer_norm=True,
        peephole=True,
        recurrent_dropout=0.3,
        zoneout=0.2,
        weight_drop=0.3,
        dtype=F64,
    ),
    "gru_layer_norm": lambda: rnnkit.GRU(2, 3, layer_norm=True, bidirectional=True, dtype=F64),
    "gru_recurrent_dropout": lambda: rnnkit.GRU(2, 3, recurrent_dropout=0.4, dtype=F64),
    "gru_zoneout": lambda: rnnkit.GRU(2, 3, zoneout=0.3, dtype=F64),
    "gru_weight_drop": lambda: rnnkit.GRU(2, 3, weight_drop=0.4, dtype=F64),
    "gru_proj": lambda: rnnkit.GRU(2, 3, proj_size=2, bidirectional=True, dtype=F64),
    "rnn_proj": lambda: rnnkit.RNN(2, 3, proj_size=2, bidirectional=True, dtype=F64),
    "rnn_dropouts_zoneout": lambda: rnnkit.RNN(
        2, 3, recurrent_dropout=0.3, zoneout=0.3, weight_drop=0.3, dtype=F64
    ),
}


@pytest.mark.parametrize("name", list(GRADCHECK))
def test_variant_layers_pass_gradcheck(name):
    torch.manual_seed(11)
    module = GRADCHECK[name]().train()
    randomise(module)
    x = torch.randn(3, 2, 2, dtype=F64, requires_grad=True)
    lengths = torch.tensor([3, 2])
    names = [n for n, _ in module.named_parameters()]

    def fn(x, *params):
        torch.manual_seed(0)  # the same draws at every evaluation
        out, final = torch.func.functional_call(
            module, dict(zip(names, params, strict=True)), (x,), {"lengths": lengths}
        )
        final = torch.cat([s.flatten() for s in final]) if isinstance(final, tuple) else final
        return out, final

    params = [p.detach().clone().requires_grad_(True) for p in module.parameters()]
    assert torch.autograd.gradcheck(fn, (x, *params))
