"""rnnkit's layers inside `torch.autocast` (bfloat16 on the CPU), as torch.nn's run there.

Every route runs: the compiled kernels compute in the parameters' float32 with autocast off
around them (so they equal the float32 result exactly), torch's fused kernel and the reference
loop follow autocast (close to float32 at bfloat16's precision). A state that an autocast
region returned in bfloat16 can be fed back, as torch.nn accepts it, to `forward` and `step`,
and gradients reach every parameter. `TrainConfig(precision="bf16")` trains so.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import rnnkit
from rnnkit.data import Batch
from rnnkit.train import Stream, TrainConfig, fit, seed_everything

LAYERS = {
    "lstm_torch": lambda: rnnkit.LSTM(6, 8, num_layers=2),
    "rnn_relu_torch": lambda: rnnkit.RNN(6, 8, nonlinearity="relu", backend="torch"),
    "gru_numba": lambda: rnnkit.GRU(6, 8, num_layers=2, backend="numba"),
    "rnn_tanh_numba": lambda: rnnkit.RNN(6, 8, backend="numba"),
    "lstm_layer_norm_numba": lambda: rnnkit.LSTM(6, 8, layer_norm=True, backend="numba"),
    "gru_zoneout_numba": lambda: rnnkit.GRU(6, 8, zoneout=0.1, backend="numba"),
    "mingru_compiled": lambda: rnnkit.MinGRU(6, 8),
    "minlstm_compiled": lambda: rnnkit.MinLSTM(6, 8, bidirectional=True),
    "gru_reference": lambda: rnnkit.GRU(6, 8, backend="reference"),
    "lstm_peephole_reference": lambda: rnnkit.LSTM(6, 8, peephole=True, backend="reference"),
}
COMPILED = {"gru_numba", "rnn_tanh_numba", "lstm_layer_norm_numba", "gru_zoneout_numba"}
COMPILED |= {"mingru_compiled", "minlstm_compiled"}
AUTOCAST = dict(device_type="cpu", dtype=torch.bfloat16)


def _first(state):
    return state[0] if isinstance(state, tuple) else state


@pytest.mark.parametrize("name", list(LAYERS))
def test_forward_fed_back_state_and_gradients_under_autocast(name):
    torch.manual_seed(0)
    layer = LAYERS[name]().eval()  # eval: zoneout at its expectation, the same in both runs
    x = torch.randn(7, 3, 6)
    with torch.no_grad():
        expected, expected_state = layer(x)
        expected_again, _ = layer(x, expected_state)
    with torch.autocast(**AUTOCAST):
        out, state = layer(x)
        again, _ = layer(x, state)  # a bfloat16 state from torch's kernel is accepted
    (again.float().sum() + _first(state).float().sum()).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in layer.parameters())
    if name in COMPILED:  # computed in float32: autocast is off around the kernels
        assert out.dtype == torch.float32
        torch.testing.assert_close(out, expected, rtol=0, atol=0)
        torch.testing.assert_close(again, expected_again, rtol=0, atol=0)
    else:  # bfloat16 products: three significant digits
        torch.testing.assert_close(out.float(), expected, rtol=0, atol=3e-2)
        torch.testing.assert_close(again.float(), expected_again, rtol=0, atol=3e-2)


@pytest.mark.parametrize("name", ["lstm_torch", "gru_numba", "lstm_layer_norm_numba"])
@pytest.mark.parametrize("training", [False, True])
def test_step_under_autocast_takes_a_lower_precision_state(name, training):
    """step() in eval (the compiled step) and in training (torch's cell kernels or the loop)
    inside autocast, fed a bfloat16 state, follows the float32 steps."""
    torch.manual_seed(1)
    layer = LAYERS[name]().train(training)
    if training:
        layer.dropout = 0.0
    x = torch.randn(5, 2, 6)
    state = expected_state = None
    with torch.no_grad():
        for t in range(5):
            expected, expected_state = layer.step(x[t], expected_state)
            with torch.autocast(**AUTOCAST):
                low = tuple(s.bfloat16() for s in state) if isinstance(state, tuple) else state
                out, state = layer.step(x[t], low if t else None)
    torch.testing.assert_close(out.float(), expected, rtol=0, atol=3e-2)


def test_a_state_of_another_dtype_outside_autocast_is_still_an_error():
    layer = rnnkit.GRU(6, 8)
    state = torch.zeros(1, 3, 8, dtype=torch.bfloat16)
    with pytest.raises(TypeError, match=r"hx must be torch.float32 on cpu like the input"):
        layer(torch.randn(4, 3, 6), state)


# --- training with precision="bf16" ----------------------------------------------------------


class _Recorder(nn.Module):
    """An LSTM classifier that records, at each loss, whether autocast was on and in training."""

    def __init__(self) -> None:
        super().__init__()
        self.rnn = rnnkit.LSTM(3, 8, batch_first=True)
        self.head = nn.Linear(8, 3)
        self.seen: list[tuple[bool, bool]] = []  # (training, autocast on) per loss call

    def logits(self, batch: Batch) -> torch.Tensor:
        outputs, _ = self.rnn(batch.inputs)
        return self.head(outputs[:, -1])

    def loss(self, batch: Batch, state=None):
        self.seen.append((self.training, torch.is_autocast_enabled("cpu")))
        if state is not None or batch.targets.dim() == 2:  # a stream: predict every step
            outputs, state = self.rnn(batch.inputs, state)
            return F.mse_loss(self.head(outputs)[..., 0].float(), batch.targets), state
        return F.cross_entropy(self.logits(batch).float(), batch.targets)

    def predict(self, batch: Batch) -> torch.Tensor:
        return self.logits(batch).argmax(dim=-1)


def _classes(n: int, seed: int) -> Batch:
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(n, 6, 3, generator=generator)
    return Batch(inputs=inputs, lengths=None, targets=inputs.sum(dim=1).argmax(dim=-1))


def _fit(precision: str) -> tuple[_Recorder, list[dict]]:
    seed_everything(0)
    model = _Recorder()
    config = TrainConfig(
        device="cpu", epochs=4, batch_size=16, lr=0.03, precision=precision, progress=False,
        metrics=("accuracy",), num_classes=3,
    )  # fmt: skip
    return model, fit(model, _classes(192, seed=1), _classes(96, seed=2), config)


def test_bf16_training_runs_the_steps_under_autocast_and_evaluates_in_float32():
    model, history = _fit("bf16")
    assert {on for training, on in model.seen if training} == {True}
    assert {on for training, on in model.seen if not training} == {False}
    assert history[-1]["val_accuracy"] > 0.7  # learns (chance: 1/3)
    reference, reference_history = _fit("32")
    assert not any(on for _, on in reference.seen)
    assert reference_history[-1]["val_accuracy"] > 0.7
    assert not torch.equal(model.head.weight, reference.head.weight)  # bfloat16 steps differ


def test_bf16_truncated_bptt_carries_a_bfloat16_state_between_windows():
    seed_everything(0)
    model = _Recorder()
    generator = torch.Generator().manual_seed(0)
    stream = Stream(
        torch.randn(2, 40, 3, generator=generator), torch.randn(2, 40, generator=generator)
    )
    config = TrainConfig(
        device="cpu", epochs=2, bptt_k1=8, bptt_k2=4, precision="bf16", progress=False
    )
    history = fit(model, stream, config=config)
    assert all(math.isfinite(row["train_loss"]) for row in history)
    assert {on for training, on in model.seen if training} == {True}  # every window's pieces


def test_an_unknown_precision_is_a_clear_error():
    with pytest.raises(ValueError, match=r"precision must be one of \('32', 'bf16'\), got 'fp8'"):
        TrainConfig(precision="fp8")
