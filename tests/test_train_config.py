"""Bad configurations fail before training starts; checkpoint storage round-trips exactly."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from rnnkit.data import Batch
from rnnkit.train import Stream, TrainConfig, evaluate, fit
from rnnkit.train.checkpoint import (
    join_tensors,
    load_checkpoint,
    save_checkpoint,
    split_tensors,
    write_text,
)
from rnnkit.train.optim import cosine_factor

torch.set_num_threads(1)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"lr": -0.1}, r"lr must be a finite number > 0, got -0.1"),
        ({"lr": float("nan")}, r"lr must be a finite number > 0"),
        ({"bptt_k1": 10, "bptt_k2": 20}, r"bptt_k2 \(20\) must be <= bptt_k1 \(10\)"),
        ({"bptt_k2": 5}, r"bptt_k2 is set but bptt_k1 is not"),
        ({"metrics": ("acuracy",)}, r"unknown metric 'acuracy'; known metrics: accuracy, f1"),
        ({"metrics": ("f1",)}, r"metric 'f1' needs num_classes"),
        ({"monitor": "val_mae"}, r"monitor must be one of .*listed in `metrics`"),
        ({"optimizer": "adam"}, r"optimizer must be one of \('adamw', 'sgd'\)"),
        ({"schedule": "step"}, r"schedule must be None or one of"),
        ({"batch_size": 0}, r"batch_size must be > 0"),
        ({"clip_norm": -1.0}, r"clip_norm must be > 0"),
        ({"patience": 0}, r"patience must be > 0"),
        ({"momentum": 1.0}, r"momentum must be in \[0, 1\)"),
        ({"device": "tpu"}, r"device must name a torch device .*got 'tpu'"),
        ({"device": "cuda:x"}, r"device must name a torch device .*got 'cuda:x'"),
        ({"device": "meta"}, r"device must name a torch device .*got 'meta'"),
    ],
)
def test_bad_config_fields_raise_when_the_config_is_made(fields, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**fields)


class CountingModel(nn.Module):
    """Counts loss() calls, so a test can tell that nothing was trained."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))
        self.calls = 0

    def loss(self, batch, state=None):
        self.calls += 1
        return (self.w - 1).pow(2).sum()


def _data() -> Batch:
    return Batch(inputs=torch.zeros(8, 3, 1), lengths=None, targets=torch.zeros(8))


@pytest.mark.parametrize(
    ("val", "fields", "message"),
    [
        (None, {"patience": 3}, r"early stopping \(patience\) monitors val_loss: pass val_data"),
        (None, {"schedule": "plateau"}, r"schedule 'plateau' monitors val_loss: pass val_data"),
        (None, {"metrics": ("perplexity",)}, r"computed on val_data"),
        (None, {"bptt_k1": 4}, r"bptt_k1 is set, so train_data must be a Stream"),
        (None, {"resume": True}, r"resume=True needs run_dir"),
        (_data(), {"metrics": ("mae",)}, r"need CountingModel.predict"),
    ],
)
def test_bad_fit_calls_raise_before_the_first_step(val, fields, message):
    model = CountingModel()
    with pytest.raises((ValueError, TypeError), match=message):
        fit(model, _data(), val, TrainConfig(progress=False, **fields))
    assert model.calls == 0


def test_a_device_this_machine_lacks_is_a_clear_error_before_training():
    """A device torch knows but this machine has not (a CUDA index past the last, or CUDA on
    a torch without it): one clear error, not torch's assertion from inside."""
    model = CountingModel()
    with pytest.raises(ValueError, match=r"device 'cuda:99' is not available here"):
        fit(model, _data(), None, TrainConfig(progress=False, device="cuda:99"))
    assert model.calls == 0


def test_stream_data_needs_bptt_and_samples_need_collate():
    model = CountingModel()
    stream = Stream(inputs=torch.zeros(2, 10, 1), targets=torch.zeros(2, 10))
    with pytest.raises(ValueError, match="set bptt_k1"):
        fit(model, stream, config=TrainConfig(progress=False))
    with pytest.raises(TypeError, match="pass collate="):
        fit(model, [1, 2, 3], config=TrainConfig(progress=False))
    with pytest.raises(ValueError, match="unknown metric 'nope'"):
        evaluate(model, _data(), ("nope",))
    assert model.calls == 0


def test_early_stopping_may_monitor_the_training_loss_without_val_data():
    history = fit(
        CountingModel(), _data(), config=TrainConfig(epochs=3, patience=1, monitor="train_loss")
    )
    assert len(history) == 3


def test_resuming_with_a_different_config_is_refused(tmp_path):
    fit(CountingModel(), _data(), config=TrainConfig(epochs=1, run_dir=str(tmp_path)))
    changed = TrainConfig(epochs=2, lr=0.5, run_dir=str(tmp_path), resume=True)
    with pytest.raises(ValueError, match=r"differs in \['lr'\]"):
        fit(CountingModel(), _data(), config=changed)
    more_epochs = TrainConfig(epochs=2, run_dir=str(tmp_path), resume=True)
    assert len(fit(CountingModel(), _data(), config=more_epochs)) == 2


def test_optimizer_state_round_trips_through_safetensors_and_json(tmp_path):
    torch.manual_seed(0)
    model = nn.LSTM(3, 4)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.01)
    for _ in range(2):
        optimizer.zero_grad()
        model(torch.randn(5, 2, 3))[0].sum().backward()
        optimizer.step()

    save_checkpoint(tmp_path, {"optimizer": optimizer.state_dict(), "extra": (1, None, "x")})
    saved = load_checkpoint(tmp_path)
    assert saved["extra"] == (1, None, "x")
    twin = nn.LSTM(3, 4)
    twin.load_state_dict(model.state_dict())
    twin_optimizer = torch.optim.AdamW(twin.parameters(), lr=0.01)
    twin_optimizer.load_state_dict(saved["optimizer"])
    x = torch.randn(5, 2, 3)
    for m, opt in ((model, optimizer), (twin, twin_optimizer)):
        opt.zero_grad()
        m(x)[0].sum().backward()
        opt.step()
    for a, b in zip(model.parameters(), twin.parameters(), strict=True):
        assert torch.equal(a, b)


def test_split_and_join_tensors_keep_keys_types_and_values():
    value = {0: {"step": torch.tensor(3.0)}, "groups": [{"betas": (0.9, 0.99), "params": [0]}]}
    tensors: dict[str, torch.Tensor] = {}
    stored = split_tensors(value, "opt", tensors)
    back = join_tensors(stored, tensors)
    assert list(back) == [0, "groups"] and back["groups"][0]["betas"] == (0.9, 0.99)
    assert torch.equal(back[0]["step"], torch.tensor(3.0))


def test_a_failed_atomic_write_leaves_the_old_file(tmp_path):
    path = tmp_path / "history.csv"
    write_text(path, "old\n")

    class Unwritable:
        def __str__(self):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        write_text(path, f"{Unwritable()}")
    assert path.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["history.csv"]


def test_cosine_schedule_warms_up_then_decays_to_min_lr():
    factors = [cosine_factor(s, warmup_steps=4, total_steps=14, min_ratio=0.1) for s in range(16)]
    assert factors[:4] == [0.25, 0.5, 0.75, 1.0]
    assert factors[4] == 1.0 and factors[9] == pytest.approx(0.55)
    assert factors[14] == pytest.approx(0.1) and factors[15] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(factors[4:], factors[5:], strict=False))
