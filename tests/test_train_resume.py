"""A run killed with SIGKILL and resumed ends bit-identical to one that was never interrupted.

The training runs in subprocesses (CPU, one thread, same seed) started from this file:
`python test_train_resume.py RUN_DIR [--resume] [--kill-at-step N | --kill-in-checkpoint N]`.
The child kills itself with SIGKILL at a scripted point, so the kill lands at a known place:
in the middle of an epoch, or between writing a checkpoint's tensors and its state.json.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from rnnkit import LSTM
from rnnkit.data import Batch
from rnnkit.data.synthetic import adding_problem
from rnnkit.train import TrainConfig, fit, seed_everything

EPOCHS, BATCHES_PER_EPOCH = 4, 6  # 24 steps; checkpoints every 4 steps and at each epoch end


class DropoutRegressor(nn.Module):
    """A small LSTM regressor with dropout, so the restored torch RNG state matters."""

    def __init__(self) -> None:
        super().__init__()
        self.rnn = LSTM(2, 8, batch_first=True)
        self.dropout = nn.Dropout(0.3)
        self.head = nn.Linear(8, 1)
        self.kill_at_call: int | None = None  # SIGKILL this process at that training call
        self.calls = 0

    def loss(self, batch: Batch) -> torch.Tensor:
        if self.training:
            if self.calls == self.kill_at_call:
                os.kill(os.getpid(), signal.SIGKILL)
            self.calls += 1
        outputs, _ = self.rnn(batch.inputs)  # (B, T, 8)
        return F.mse_loss(self.head(self.dropout(outputs[:, -1])).squeeze(-1), batch.targets)

    def predict(self, batch: Batch) -> torch.Tensor:
        outputs, _ = self.rnn(batch.inputs)
        return self.head(outputs[:, -1]).squeeze(-1)


def _kill_before_state_json(nth: int) -> None:
    """SIGKILL this process just before the nth checkpoint's state.json is moved into place."""
    replace, seen = os.replace, []

    def replace_or_die(src, dst):
        if Path(dst).name == "state.json":
            seen.append(dst)
            if len(seen) == nth:
                os.kill(os.getpid(), signal.SIGKILL)
        replace(src, dst)

    os.replace = replace_or_die  # rnnkit.data.files.atomic_write's rename


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run_dir")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--kill-at-step", type=int)
    parser.add_argument("--kill-in-checkpoint", type=int)
    args = parser.parse_args()
    torch.set_num_threads(1)
    seed_everything(7)
    model = DropoutRegressor()
    model.kill_at_call = None if args.kill_at_step is None else args.kill_at_step - 1
    if args.kill_in_checkpoint is not None:
        _kill_before_state_json(args.kill_in_checkpoint)
    config = TrainConfig(
        epochs=EPOCHS,
        batch_size=16,
        lr=0.01,
        schedule="cosine",
        warmup_steps=5,
        seed=7,
        run_dir=args.run_dir,
        checkpoint_every=4,
        resume=args.resume,
        progress=False,
    )
    train = adding_problem(16 * BATCHES_PER_EPOCH, 10, seed=1)
    fit(model, train, adding_problem(32, 10, seed=2), config)
    print(json.dumps({"training_calls": model.calls}))


def _start(run_dir: Path, *flags: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    command = [sys.executable, __file__, str(run_dir), *flags]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)


def _finish(process: subprocess.Popen) -> tuple[int, str]:
    out, err = process.communicate(timeout=240)
    assert process.returncode in (0, -signal.SIGKILL), err.decode()[-3000:]
    return process.returncode, out.decode()


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory) -> Path:
    """One uninterrupted run, shared by both kinds of kill."""
    run_dir = tmp_path_factory.mktemp("reference")
    assert _finish(_start(run_dir))[0] == 0
    return run_dir


@pytest.mark.slow
@pytest.mark.parametrize(
    ("kill", "steps_redone"),
    [
        (("--kill-at-step", "11"), 16),  # steps 9, 10 were done after the step-8 checkpoint
        (("--kill-in-checkpoint", "4"), 16),  # the 4th (step 12) checkpoint never lands
    ],
    ids=["mid-epoch", "mid-checkpoint"],
)
def test_sigkill_then_resume_ends_equal_to_an_uninterrupted_run(
    tmp_path, reference_run, kill, steps_redone
):
    assert _finish(_start(tmp_path / "killed", *kill))[0] == -signal.SIGKILL
    assert (tmp_path / "killed" / "checkpoint" / "state.json").exists()
    assert not (tmp_path / "killed" / "model.safetensors").exists()  # it really did not finish

    code, out = _finish(_start(tmp_path / "killed", "--resume"))
    assert code == 0
    assert json.loads(out.splitlines()[-1])["training_calls"] == steps_redone

    expected = load_file(reference_run / "model.safetensors")
    actual = load_file(tmp_path / "killed" / "model.safetensors")
    assert expected.keys() == actual.keys()
    for name in expected:
        assert torch.equal(actual[name], expected[name]), name
    history = (tmp_path / "killed" / "history.csv").read_text()
    assert history == (reference_run / "history.csv").read_text()
    assert len(list((tmp_path / "killed" / "checkpoint").glob("tensors-*"))) == 1
    assert not list((tmp_path / "killed").rglob("*.tmp"))  # what the kill left is gone


if __name__ == "__main__":
    main()
