"""Truncated BPTT: where gradients stop, that carried state equals one unbroken pass, resets."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from rnnkit import LSTM
from rnnkit.data import Batch
from rnnkit.train import Stream, TrainConfig, evaluate, fit, seed_everything
from rnnkit.train.distributed import Objective
from rnnkit.train.tbptt import window_loss, windows

torch.set_num_threads(1)


class StreamRegressor(nn.Module):
    """The stream contract: loss(batch, state) -> (loss, state), predict likewise.

    Every call records its predictions, so a test can put a windowed pass back together.
    """

    def __init__(self, input_size: int = 2, hidden_size: int = 6) -> None:
        super().__init__()
        self.rnn = LSTM(input_size, hidden_size, batch_first=True)
        self.head = nn.Linear(hidden_size, 1)
        self.calls: list[torch.Tensor] = []  # predictions (S, T_w) of every call, in order

    def run(self, batch: Batch, state):
        outputs, state = self.rnn(batch.inputs, state)  # (S, T_w, H); state (h, c): (1, S, H)
        preds = self.head(outputs).squeeze(-1)  # (S, T_w)
        self.calls.append(preds.detach())
        return preds, state

    def loss(self, batch: Batch, state):
        preds, state = self.run(batch, state)
        return F.mse_loss(preds, batch.targets), state

    def predict(self, batch: Batch, state):
        return self.run(batch, state)


def _stream(rows: int = 3, length: int = 20, requires_grad: bool = False, starts=None) -> Stream:
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(rows, length, 2, generator=generator).requires_grad_(requires_grad)
    return Stream(inputs, torch.randn(rows, length, generator=generator), starts)


@pytest.mark.parametrize(("k1", "k2"), [(6, 6), (6, 2), (5, 1)])
def test_no_gradient_reaches_inputs_older_than_k2(k1, k2):
    torch.manual_seed(0)
    model = StreamRegressor()
    stream = _stream(requires_grad=True)
    objective = Objective(model)
    _, state = window_loss(objective, model, stream, None, 0, k1, k2)  # state still in the graph
    loss, _ = window_loss(objective, model, stream, state, k1, 2 * k1, k2)
    loss.backward()

    per_step = stream.inputs.grad.abs().sum(dim=(0, 2))  # (L,)
    update_at = 2 * k1
    assert torch.all(per_step[: update_at - k2] == 0)  # older than k2 steps: exactly zero
    assert torch.all(per_step[update_at - k2 : update_at] > 0)  # the last k2 steps: reached
    assert torch.all(per_step[update_at:] == 0)


def test_fit_backpropagates_only_the_last_k2_steps_of_every_window():
    torch.manual_seed(0)
    stream = _stream(rows=2, length=20, requires_grad=True)  # fit accumulates .grad on inputs
    config = TrainConfig(device="cpu", epochs=1, bptt_k1=5, bptt_k2=2, progress=False)
    fit(StreamRegressor(), stream, config=config)
    reached = stream.inputs.grad.abs().sum(dim=(0, 2)) > 0  # (L,)
    expected = torch.tensor([t % 5 >= 3 for t in range(20)])
    assert torch.equal(reached, expected)


@pytest.mark.parametrize(("k1", "k2"), [(7, 7), (7, 3)])
def test_carried_state_gives_the_outputs_of_one_unbroken_pass(k1, k2):
    torch.manual_seed(0)
    model = StreamRegressor()
    stream = _stream(length=30)
    objective = Objective(model)
    state = None
    for t0, t1 in windows(stream.length, k1):
        _, state = window_loss(objective, model, stream, state, t0, t1, k2)
    windowed = torch.cat(model.calls, dim=1)  # (S, L): no-grad prefixes and k2 parts in order

    unbroken, _ = model.run(stream.as_batch(), None)
    torch.testing.assert_close(windowed, unbroken.detach())


def test_state_resets_where_documents_start():
    torch.manual_seed(0)
    starts = torch.zeros(3, 30, dtype=torch.bool)
    starts[0, 9] = True  # row 0: documents [0, 9) and [9, 30), a start inside a window
    starts[1, [7, 14, 22]] = True  # row 1: starts on window edges and inside
    model = StreamRegressor()
    stream = _stream(length=30, starts=starts)
    objective = Objective(model)
    state = None
    for t0, t1 in windows(stream.length, 7):
        _, state = window_loss(objective, model, stream, state, t0, t1, 4)
    windowed = torch.cat(model.calls, dim=1)

    for row, bounds in ((0, [0, 9, 30]), (1, [0, 7, 14, 22, 30]), (2, [0, 30])):
        documents = [
            model.run(Batch(stream.inputs[row : row + 1, a:b]), None)[0]
            for a, b in zip(bounds[:-1], bounds[1:], strict=True)
        ]  # each document alone, from a zero state
        torch.testing.assert_close(windowed[row : row + 1], torch.cat(documents, dim=1).detach())


def test_evaluate_on_a_stream_equals_the_unbroken_pass():
    torch.manual_seed(0)
    model = StreamRegressor()
    stream = _stream(length=30)
    scores = evaluate(model, stream, ("mae",), TrainConfig(device="cpu", bptt_k1=4))
    preds, _ = model.run(stream.as_batch(), None)
    assert scores["loss"] == pytest.approx(F.mse_loss(preds, stream.targets).item(), rel=1e-5)
    assert scores["mae"] == pytest.approx(F.l1_loss(preds, stream.targets).item(), rel=1e-5)


def _delay_stream(rows: int, length: int, delay: int, seed: int) -> Stream:
    """targets[t] = inputs[t - delay]: a window needs what the previous window saw."""
    generator = torch.Generator().manual_seed(seed)
    signal = torch.randn(rows, length + delay, generator=generator)
    return Stream(signal[:, delay:, None], signal[:, :length])


def test_fit_on_a_stream_learns_what_crosses_window_boundaries():
    seed_everything(0)
    model = StreamRegressor(input_size=1, hidden_size=16)
    train, val = _delay_stream(8, 400, delay=3, seed=1), _delay_stream(4, 200, delay=3, seed=2)
    config = TrainConfig(device="cpu", epochs=6, bptt_k1=8, bptt_k2=8, lr=0.02, progress=False)
    history = fit(model, train, val, config)
    # without the carried state, 3 steps in 8 of every window are unpredictable: MSE >= 0.3
    assert history[-1]["train_loss"] < 0.05, history[-1]
    assert history[-1]["val_loss"] < 0.05, history[-1]


class Crash(RuntimeError):
    pass


def _stream_run(run_dir, crash_at: int | None = None) -> StreamRegressor:
    seed_everything(0)
    model = StreamRegressor(input_size=1, hidden_size=8)
    if crash_at is not None:
        loss = model.loss

        def crashing_loss(batch, state):
            if model.training and len(model.calls) == crash_at:
                raise Crash
            return loss(batch, state)

        model.loss = crashing_loss
    config = TrainConfig(
        device="cpu",
        epochs=2,
        bptt_k1=6,
        bptt_k2=4,
        lr=0.02,
        run_dir=str(run_dir),
        checkpoint_every=3,
    )
    fit(model, _delay_stream(4, 60, delay=2, seed=1), config=config)
    return model


def test_a_stream_run_resumes_mid_epoch_with_its_carried_state(tmp_path):
    reference = _stream_run(tmp_path / "reference")
    with pytest.raises(Crash):
        _stream_run(tmp_path / "crashed", crash_at=25)  # calls 0-24: 12 windows, mid epoch 2
    seed_everything(123)  # the checkpoint's RNG state, not this, must count
    model = StreamRegressor(input_size=1, hidden_size=8)
    config = TrainConfig(
        device="cpu",
        epochs=2,
        bptt_k1=6,
        bptt_k2=4,
        lr=0.02,
        run_dir=str(tmp_path / "crashed"),
        checkpoint_every=3,
        resume=True,
    )
    fit(model, _delay_stream(4, 60, delay=2, seed=1), config=config)
    for name, value in reference.state_dict().items():
        assert torch.equal(model.state_dict()[name], value), name
    saved = load_file(tmp_path / "crashed" / "model.safetensors")
    assert torch.equal(saved["head.weight"], reference.head.weight)
    history = [(tmp_path / d / "history.csv").read_text() for d in ("reference", "crashed")]
    assert history[0] == history[1]
