"""The variant options of rnnkit.RNN/LSTM/GRU: lengths, two directions, stacked layers, step(),
state_dicts, the generic Recurrent, and the errors for bad options."""

from __future__ import annotations

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

import rnnkit
from rnnkit import Variant, VariantElmanCell, VariantGRUCell, VariantLSTMCell
from variant_layers import VARIANT_LAYERS

F64 = torch.float64


def one_sequence_state(final, b):
    return (
        tuple(s[:, b : b + 1] for s in final) if isinstance(final, tuple) else final[:, b : b + 1]
    )


@pytest.mark.parametrize("name", list(VARIANT_LAYERS))
def test_lengths_bidirectional_stacked_equal_each_sequence_alone(name):
    """Padded with lengths, each sequence gives what it gives on its own, unpadded; past its
    length the output is zero."""
    torch.manual_seed(0)
    layer = VARIANT_LAYERS[name](
        3, 4, num_layers=2, bidirectional=True, batch_first=True, dtype=F64
    ).eval()
    x = torch.randn(3, 6, 3, dtype=F64)
    lengths = torch.tensor([4, 6, 1])
    out, final = layer(x, lengths=lengths)
    for b, n in enumerate(lengths.tolist()):
        alone, alone_final = layer(x[b : b + 1, :n])
        torch.testing.assert_close(out[b : b + 1, :n], alone)
        torch.testing.assert_close(one_sequence_state(final, b), alone_final)
        assert torch.all(out[b, n:] == 0)
    packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    packed_out, packed_final = layer(packed)
    torch.testing.assert_close(packed_final, final)
    torch.testing.assert_close(
        packed_out.data,
        pack_padded_sequence(out, lengths, batch_first=True, enforce_sorted=False).data,
    )


@pytest.mark.parametrize("name", list(VARIANT_LAYERS))
def test_step_reproduces_forward_in_eval(name):
    torch.manual_seed(1)
    layer = VARIANT_LAYERS[name](3, 4, num_layers=2).eval()
    x = torch.randn(5, 2, 3)
    expected_out, expected_final = layer(x)
    state, outputs = None, []
    for t in range(5):
        out, state = layer.step(x[t], state)
        outputs.append(out)
    torch.testing.assert_close(torch.stack(outputs), expected_out)
    torch.testing.assert_close(state, expected_final)


@pytest.mark.parametrize(
    "make",
    [
        lambda: rnnkit.LSTM(3, 4, recurrent_dropout=0.5, weight_drop=0.5, zoneout=0.3),
        lambda: rnnkit.GRU(3, 4, proj_size=2, recurrent_dropout=0.5, zoneout=0.3),
        lambda: rnnkit.LSTM(3, 4, num_layers=3, recurrent_dropout=0.5, weight_drop=0.5),
    ],
)
def test_step_in_training_holds_the_sequence_draws(make):
    """In training, step() draws recurrent dropout and weight drop when the stream starts and
    keeps them: with the same seed it reproduces forward (zoneout, drawn per step, lines up too
    in a one-layer stack, where both draw in the same order)."""
    layer = make().train()
    x = torch.randn(6, 2, 3)
    torch.manual_seed(2)
    expected_out, expected_final = layer(x)
    torch.manual_seed(2)
    state, outputs = None, []
    for t in range(6):
        out, state = layer.step(x[t], state)
        outputs.append(out)
    torch.testing.assert_close(torch.stack(outputs), expected_out)
    torch.testing.assert_close(state, expected_final)
    torch.manual_seed(3)
    state = None
    for t in range(2):
        out, state = layer.step(x[t], state)  # a new stream (state=None) draws again
    assert not torch.allclose(out, outputs[1])


def test_step_resets_chosen_samples_with_variants():
    torch.manual_seed(4)
    layer = rnnkit.GRU(3, 4, num_layers=2, proj_size=2, layer_norm=True).eval()
    x = torch.randn(6, 3, 3)
    _, state = layer(x[:3])
    reset = torch.tensor([True, False, True])
    out, _ = layer.step(x[3], state, reset=reset)
    fresh, _ = layer(x[3:4, reset])
    torch.testing.assert_close(out[reset], fresh[0])


def test_variant_state_dict_round_trip_and_torch_names():
    torch.manual_seed(5)
    layer = rnnkit.LSTM(3, 4, 2, bidirectional=True, layer_norm=True, peephole=True)
    keys = list(layer.state_dict())
    assert "ln_c_weight_l1_reverse" in keys and "weight_ci_l0" in keys and "weight_ih_l1" in keys
    assert all(k.count(".") == 0 for k in keys)
    assert layer.ln_hh_bias_l1 is layer.cells[2].ln_hh_bias
    other = rnnkit.LSTM(3, 4, 2, bidirectional=True, layer_norm=True, peephole=True)
    other.load_state_dict(layer.state_dict())
    x = torch.randn(5, 2, 3)
    torch.testing.assert_close(other(x), layer(x))
    plain = torch.nn.LSTM(3, 4, 2, bidirectional=True)
    result = layer.load_state_dict(plain.state_dict(), strict=False)
    new = {"ln_ih_weight", "ln_ih_bias", "ln_hh_weight", "ln_hh_bias", "ln_c_weight", "ln_c_bias"}
    new |= {"weight_ci", "weight_cf", "weight_co"}
    assert sorted(result.missing_keys) == sorted(set(keys) - set(plain.state_dict()))
    assert "ln_c_weight_l1_reverse" in result.missing_keys  # the names state_dict() uses
    assert not result.unexpected_keys
    torch.testing.assert_close(layer.weight_hh_l1_reverse, plain.weight_hh_l1_reverse)
    nested = torch.nn.Sequential(rnnkit.GRU(3, 4, layer_norm=True))
    with pytest.raises(RuntimeError, match='Missing key.*"0.ln_ih_weight_l0"'):
        nested.load_state_dict({f"0.{k}": v for k, v in torch.nn.GRU(3, 4).state_dict().items()})
    plain_layer = rnnkit.LSTM(3, 4, 2, bidirectional=True)
    unexpected = plain_layer.load_state_dict(layer.state_dict(), strict=False).unexpected_keys
    assert sorted(unexpected) == sorted(set(keys) - set(plain.state_dict()))


def test_unbatched_input_and_batch_first_with_variants():
    torch.manual_seed(6)
    layer = rnnkit.GRU(3, 4, proj_size=2, zoneout=0.2, batch_first=True).eval()
    x = torch.randn(5, 3)
    out, (s, h) = layer(x)
    batched, (s_b, h_b) = layer(x[None])
    torch.testing.assert_close(out, batched[0])
    torch.testing.assert_close((s, h), (s_b[:, 0], h_b[:, 0]))
    assert out.shape == (5, 2) and s.shape == (1, 2) and h.shape == (1, 4)


def test_recurrent_runs_variant_cells():
    """The generic time loop honours `begin`: one recurrent-dropout mask per sequence."""
    torch.manual_seed(7)
    cell = VariantElmanCell(
        4, 4, nonlinearity="relu", bias=False, variant=Variant(recurrent_dropout=0.5)
    )
    with torch.no_grad():
        cell.weight_ih.copy_(torch.eye(4))
        cell.weight_hh.copy_(torch.eye(4))
    layer = rnnkit.Recurrent(cell).train()
    x = torch.zeros(4, 16, 4)
    x[0] = 1.0
    out, _ = layer(x)
    torch.testing.assert_close(out[3], out[1] ** 3)
    assert rnnkit.Recurrent(lambda n: VariantGRUCell(n, 4), input_size=3, num_layers=2)(
        torch.randn(5, 2, 3)
    )[0].shape == (5, 2, 4)


def test_dropout_between_layers_and_variants_together():
    torch.manual_seed(8)
    layer = rnnkit.LSTM(3, 4, 2, dropout=0.5, layer_norm=True).train()
    x = torch.randn(5, 2, 3)
    assert not torch.allclose(layer(x)[0], layer(x)[0])
    layer.eval()
    torch.testing.assert_close(layer(x)[0], layer(x)[0])


@pytest.mark.parametrize(
    "make,error,match",
    [
        (lambda: rnnkit.LSTM(3, 4, zoneout=1.0), ValueError, r"zoneout must be .* \[0, 1\)"),
        (lambda: rnnkit.GRU(3, 4, recurrent_dropout=-0.1), ValueError, "recurrent_dropout"),
        (lambda: rnnkit.RNN(3, 4, weight_drop=True), ValueError, "weight_drop"),
        (lambda: rnnkit.LSTM(3, 4, zoneout_cell=1.5), ValueError, "zoneout_cell"),
        (lambda: rnnkit.LSTM(3, 4, layer_norm=1), ValueError, "layer_norm must be True or False"),
        (lambda: rnnkit.GRU(3, 4, proj_size=4), ValueError, r"proj_size must be an int in \[0"),
        (lambda: rnnkit.RNN(3, 4, proj_size=-1), ValueError, "proj_size"),
        (lambda: rnnkit.GRU(3, 4, peephole=True), TypeError, "peephole"),
        (lambda: VariantGRUCell(3, 4, variant=Variant(peephole=True)), ValueError, "LSTM variant"),
        (lambda: VariantGRUCell(3, 4, variant=Variant(zoneout_cell=0.1)), ValueError, "LSTM"),
        (lambda: VariantElmanCell(3, 4, variant=Variant(layer_norm=True)), ValueError, "Elman"),
        (lambda: VariantLSTMCell(3, 4, variant={"zoneout": 0.1}), TypeError, "rnnkit.Variant"),
        (
            lambda: rnnkit.LSTM(3, 4, layer_norm=True, backend="torch"),
            ValueError,
            r"backend='torch' .*layer_norm run with backend='auto' or 'reference'",
        ),
        (lambda: rnnkit.GRU(3, 4, proj_size=2, backend="torch"), ValueError, "proj_size"),
    ],
)
def test_bad_variant_options(make, error, match):
    with pytest.raises(error, match=match):
        make()


@pytest.mark.parametrize(
    "make",
    [
        lambda: rnnkit.LSTM(3, 4, 2, layer_norm=True, zoneout=0.1, proj_size=2),
        lambda: rnnkit.GRU(3, 4, recurrent_dropout=0.2, bidirectional=True),
        lambda: rnnkit.MinLSTM(3, 4, bidirectional=True),
    ],
)
def test_an_empty_batch_gives_empty_outputs_and_states(make):
    layer = make()
    out, state = layer(torch.randn(5, 0, 3))
    assert out.shape == (5, 0, layer.num_directions * (layer.proj_size or 4))
    for part in state if isinstance(state, tuple) else (state,):
        assert part.shape[:2] == (layer.num_layers * layer.num_directions, 0)
