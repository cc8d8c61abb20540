"""fit() end to end: an LSTM learns the adding problem; same seed, same history; the run directory.

The model here is also the one the resume and torchrun tests run in subprocesses (they import
this module by name), so it stays tiny and deterministic.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from rnnkit import LSTM
from rnnkit.data import Batch
from rnnkit.data.synthetic import ADDING_BASELINE_MSE, adding_problem
from rnnkit.train import TrainConfig, evaluate, fit, read_csv, seed_everything

torch.set_num_threads(1)


class AddingRegressor(nn.Module):
    """LSTM over (B, T, 2) inputs; a linear head on the last output predicts the sum (B,)."""

    def __init__(self, hidden_size: int = 32, dropout: float = 0.0) -> None:
        super().__init__()
        self.rnn = LSTM(2, hidden_size, batch_first=True)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden_size, 1)

    def forward(self, batch: Batch) -> torch.Tensor:
        outputs, _ = self.rnn(batch.inputs)  # (B, T, H)
        return self.head(self.dropout(outputs[:, -1])).squeeze(-1)  # (B,)

    def loss(self, batch: Batch) -> torch.Tensor:
        return F.mse_loss(self(batch), batch.targets)

    def predict(self, batch: Batch) -> torch.Tensor:
        return self(batch)


@pytest.mark.slow
def test_lstm_learns_the_adding_problem_far_below_the_baseline(tmp_path):
    seed_everything(0)
    model = AddingRegressor(hidden_size=32)
    train, val = adding_problem(2000, 50, seed=1), adding_problem(500, 50, seed=2)
    config = TrainConfig(epochs=14, batch_size=32, lr=0.01, metrics=("mse", "mae"), progress=False)

    history = fit(model, train, val, config)

    assert history[0]["val_loss"] > 0.5 * ADDING_BASELINE_MSE  # it starts near the baseline
    scores = evaluate(model, val, ("mse",))
    assert scores["mse"] < ADDING_BASELINE_MSE / 20, history[-1]
    assert scores["loss"] == pytest.approx(scores["mse"], rel=1e-5)  # loss is the MSE here
    assert history[-1]["val_mse"] == pytest.approx(scores["mse"], rel=1e-5)


def _small_run(run_dir, seed: int) -> list[dict]:
    seed_everything(seed)
    model = AddingRegressor(hidden_size=8, dropout=0.3)  # dropout: the torch RNG matters
    config = TrainConfig(
        epochs=2,
        batch_size=16,
        lr=0.01,
        metrics=("mae", "rmse"),
        schedule="cosine",
        warmup_steps=3,
        seed=seed,
        run_dir=str(run_dir),
        progress=False,
    )
    return fit(model, adding_problem(96, 12, seed=1), adding_problem(40, 12, seed=2), config)


def test_same_seed_gives_bit_identical_history_and_weights(tmp_path):
    _small_run(tmp_path / "a", seed=3)
    _small_run(tmp_path / "b", seed=3)
    _small_run(tmp_path / "c", seed=4)
    history = {name: (tmp_path / name / "history.csv").read_text() for name in "abc"}
    assert history["a"] == history["b"]
    assert history["a"] != history["c"]  # the seed does reach the run
    weights_a = load_file(tmp_path / "a" / "model.safetensors")
    weights_b = load_file(tmp_path / "b" / "model.safetensors")
    assert weights_a.keys() == weights_b.keys()
    for name in weights_a:
        assert torch.equal(weights_a[name], weights_b[name]), name


def test_run_directory_holds_config_weights_history_metrics_and_plots(tmp_path):
    history = _small_run(tmp_path, seed=0)

    config = json.loads((tmp_path / "config.json").read_text())
    assert config["train"]["metrics"] == ["mae", "rmse"]
    assert config["model_class"].endswith("AddingRegressor")
    assert TrainConfig.from_json(config["train"]).metrics == ("mae", "rmse")

    rows = read_csv(tmp_path / "history.csv")
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    for row, returned in zip(rows, history, strict=True):
        assert float(row["val_rmse"]) == returned["val_rmse"]  # exact round trip through CSV
        assert math.isclose(float(row["val_rmse"]) ** 2, float(row["val_loss"]), rel_tol=1e-4)

    summary = json.loads((tmp_path / "metrics.json").read_text())
    assert summary["last"] == history[-1]
    assert summary["best_epoch"] in (1, 2)

    model = AddingRegressor(hidden_size=8)
    model.load_state_dict(load_file(tmp_path / "model.safetensors"))
    for name in ("loss.png", "metrics.png"):
        assert (tmp_path / "plots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.rglob("*.tmp"))  # every temporary file was moved into place
