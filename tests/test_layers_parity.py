"""rnnkit.RNN/LSTM/GRU against torch.nn.RNN/LSTM/GRU: outputs, final states and gradients.

Every configuration runs both routes (the reference loop and the fused torch kernels) on the
three input forms (padded tensor, PackedSequence, lengths=), in float32 and float64, with
state_dicts moved from torch.nn to rnnkit and back.
"""

from __future__ import annotations

import itertools

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import rnnkit

INPUT, HIDDEN, PROJ, BATCH, STEPS = 3, 5, 2, 4, 6

KINDS = {
    "rnn_tanh": (torch.nn.RNN, rnnkit.RNN, {"nonlinearity": "tanh"}),
    "rnn_relu": (torch.nn.RNN, rnnkit.RNN, {"nonlinearity": "relu"}),
    "lstm": (torch.nn.LSTM, rnnkit.LSTM, {}),
    "lstm_proj": (torch.nn.LSTM, rnnkit.LSTM, {"proj_size": PROJ}),
    "gru": (torch.nn.GRU, rnnkit.GRU, {}),
}

BACKENDS = {
    "rnn_tanh": ["reference", "torch", "numba"],
    "rnn_relu": ["reference", "torch", "numba"],
    "lstm": ["reference", "torch"],
    "lstm_proj": ["reference", "torch"],
    "gru": ["reference", "torch", "numba"],
}

CONFIGS = [
    (kind, *rest, backend)
    for kind, *rest in itertools.product(
        KINDS,
        [1, 2, 3],
        [False, True],
        [False, True],
        [True, False],
        [torch.float32, torch.float64],
    )
    for backend in BACKENDS[kind]
]


def make_pair(kind, num_layers, bidirectional, batch_first, bias, dtype, backend):
    torch_cls, ours_cls, extra = KINDS[kind]
    kwargs = dict(
        num_layers=num_layers,
        bias=bias,
        batch_first=batch_first,
        bidirectional=bidirectional,
        dtype=dtype,
        **extra,
    )
    reference = torch_cls(INPUT, HIDDEN, **kwargs)
    ours = ours_cls(INPUT, HIDDEN, backend=backend, **kwargs)
    ours.load_state_dict(reference.state_dict())
    return reference, ours


def random_state(module, dtype, generator):
    directions = 2 if module.bidirectional else 1
    out_size = module.proj_size or module.hidden_size
    h = torch.randn(
        directions * module.num_layers, BATCH, out_size, dtype=dtype, generator=generator
    )
    if isinstance(module, torch.nn.LSTM):
        c = torch.randn(
            directions * module.num_layers, BATCH, HIDDEN, dtype=dtype, generator=generator
        )
        return h, c
    return h


def flat_state(state):
    return torch.cat([s.flatten() for s in state]) if isinstance(state, tuple) else state.flatten()


def run(module, x, state, lengths, form, batch_first):
    """Run `module` on one input form; returns (padded output, final state)."""
    if form == "padded":
        return module(x, state)
    packed = pack_padded_sequence(x, lengths, batch_first=batch_first, enforce_sorted=False)
    if form == "packed":
        out, final = module(packed, state)
        assert isinstance(out, torch.nn.utils.rnn.PackedSequence)
        torch.testing.assert_close(out.sorted_indices, packed.sorted_indices)
    elif isinstance(module, torch.nn.RNNBase):  # torch.nn's answer to lengths=: packing
        out, final = module(packed, state)
    else:
        return module(x, state, lengths=lengths)
    out, _ = pad_packed_sequence(out, batch_first=batch_first, total_length=STEPS)
    return out, final


def grads_after(module, x, state, lengths, form, batch_first, weight_out, weight_state):
    x = x.clone().requires_grad_(True)
    out, final = run(module, x, state, lengths, form, batch_first)
    loss = (out * weight_out).sum() + (flat_state(final) * weight_state).sum()
    module.zero_grad()
    loss.backward()
    return out.detach(), final, x.grad, [w.grad for w in module._flat_weights]


@pytest.mark.parametrize("kind,num_layers,bidirectional,batch_first,bias,dtype,backend", CONFIGS)
def test_matches_torch_nn(kind, num_layers, bidirectional, batch_first, bias, dtype, backend):
    generator = torch.Generator().manual_seed(hash((kind, num_layers, bidirectional)) % 1000)
    reference, ours = make_pair(kind, num_layers, bidirectional, batch_first, bias, dtype, backend)
    shape = (BATCH, STEPS, INPUT) if batch_first else (STEPS, BATCH, INPUT)
    x = torch.randn(*shape, dtype=dtype, generator=generator)
    state = random_state(reference, dtype, generator)
    lengths = torch.tensor([STEPS, 2, 5, 1])
    out_size = (2 if bidirectional else 1) * (reference.proj_size or HIDDEN)
    weight_out = torch.randn(*shape[:2], out_size, dtype=dtype, generator=generator)
    weight_state = torch.randn(flat_state(state).numel(), dtype=dtype, generator=generator)
    for form in ("padded", "packed", "lengths"):
        for s in (state, None):
            expected = grads_after(
                reference, x, s, lengths, form, batch_first, weight_out, weight_state
            )
            actual = grads_after(ours, x, s, lengths, form, batch_first, weight_out, weight_state)
            torch.testing.assert_close(actual[0], expected[0], msg=f"output, {form}")
            torch.testing.assert_close(actual[1], expected[1], msg=f"final state, {form}")
            torch.testing.assert_close(actual[2], expected[2], msg=f"input gradient, {form}")
            for got, want in zip(actual[3], expected[3], strict=True):
                torch.testing.assert_close(got, want, msg=f"parameter gradient, {form}")


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("backend", ["auto", "reference", "torch"])
@pytest.mark.parametrize("batch_first", [False, True])
def test_an_empty_batch_gives_torch_nns_shapes(kind, backend, batch_first):
    """No sequence at all (batch 0, as an uneven split can leave a process): outputs and
    states of torch.nn's shapes, a state given or not, `lengths=` of none, and a backward."""
    reference, ours = make_pair(kind, 2, True, batch_first, True, torch.float32, backend)
    x = torch.randn(0, STEPS, INPUT) if batch_first else torch.randn(STEPS, 0, INPUT)
    state = random_state(reference, torch.float32, torch.Generator().manual_seed(1))
    state = tuple(s[:, :0] for s in state) if isinstance(state, tuple) else state[:, :0]
    for s in (None, state):
        out_ours, final_ours = ours(x, s)
        out_ref, final_ref = reference(x, s)
        torch.testing.assert_close((out_ours, final_ours), (out_ref, final_ref))
    out, _ = ours(x, lengths=torch.zeros(0, dtype=torch.int64))
    assert out.shape == out_ref.shape
    out.sum().backward()


@pytest.mark.parametrize("kind", list(KINDS))
def test_torch_nn_loads_our_state_dict(kind):
    torch_cls, ours_cls, extra = KINDS[kind]
    ours = ours_cls(INPUT, HIDDEN, num_layers=2, bidirectional=True, **extra)
    reference = torch_cls(INPUT, HIDDEN, num_layers=2, bidirectional=True, **extra)
    assert list(ours.state_dict()) == list(reference.state_dict())
    reference.load_state_dict(ours.state_dict())
    x = torch.randn(STEPS, BATCH, INPUT)
    out_ours, final_ours = ours(x)
    out_ref, final_ref = reference(x)
    torch.testing.assert_close(out_ours, out_ref)
    torch.testing.assert_close(final_ours, final_ref)


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("backend", ["reference", "torch"])
def test_unbatched_input(kind, backend):
    reference, ours = make_pair(kind, 2, True, False, True, torch.float32, backend)
    x = torch.randn(STEPS, INPUT)
    state = random_state(reference, torch.float32, torch.Generator().manual_seed(1))
    state = tuple(s[:, 0] for s in state) if isinstance(state, tuple) else state[:, 0]
    for s in (None, state):
        out_ours, final_ours = ours(x, s)
        out_ref, final_ref = reference(x, s)
        torch.testing.assert_close(out_ours, out_ref)
        torch.testing.assert_close(final_ours, final_ref)


@pytest.mark.parametrize("kind", list(KINDS))
def test_same_seed_same_initial_weights_as_torch_nn(kind):
    torch_cls, ours_cls, extra = KINDS[kind]
    torch.manual_seed(7)
    reference = torch_cls(INPUT, HIDDEN, num_layers=2, bidirectional=True, **extra)
    torch.manual_seed(7)
    ours = ours_cls(INPUT, HIDDEN, num_layers=2, bidirectional=True, **extra)
    for (name, want), got in zip(
        reference.state_dict().items(), ours.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(got, want, msg=name)


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("bias", [True, False])
def test_flat_weights_and_their_names_follow_torch_nn(kind, bias):
    reference, ours = make_pair(kind, 2, True, False, bias, torch.float32, "auto")
    assert ours._flat_weights_names == reference._flat_weights_names
    for name, weight in zip(ours._flat_weights_names, ours._flat_weights, strict=True):
        assert getattr(ours, name) is weight


def test_a_size_mismatch_names_torch_nns_key_even_inside_a_model():
    """load_state_dict's error names the checkpoint's key (`rnn.weight_hh_l0`), as torch.nn's
    does, not the cell's parameter (`rnn.cells.0.weight_hh`)."""
    model = torch.nn.Sequential(rnnkit.LSTM(3, 4, 2, bidirectional=True))
    checkpoint = torch.nn.Sequential(torch.nn.LSTM(3, 5, 2, bidirectional=True)).state_dict()
    with pytest.raises(RuntimeError) as error:
        model.load_state_dict(checkpoint)
    message = str(error.value)
    assert "size mismatch for 0.weight_hh_l1_reverse: copying a param" in message
    assert "cells." not in message


def test_torch_attribute_names_reach_the_cells():
    lstm = rnnkit.LSTM(INPUT, HIDDEN, num_layers=2, bidirectional=True)
    assert lstm.weight_hh_l1_reverse is lstm.cells[3].weight_hh
    assert lstm.bias_ih_l0 is lstm.cells[0].bias_ih
    assert [len(w) for w in lstm.all_weights] == [4, 4, 4, 4]
    with pytest.raises(AttributeError):
        _ = lstm.weight_hh_l2
