"""The same program under `torchrun --nproc_per_node=2` (CPU, gloo) trains like one process,
also where a global batch does not divide between the processes.

This file is also the program torchrun starts: `python -m torch.distributed.run --standalone
--nproc_per_node=2 test_train_distributed.py OUT`. It calls `fit` exactly as a single process
would; fit finds the torchrun environment, wraps the model in DDP and shards the data. Each rank
then leaves its weights and a count of its file replacements in OUT for the test to compare.
"""

from __future__ import annotations

import faulthandler
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from rnnkit import LSTM
from rnnkit.data import Batch, collate
from rnnkit.data.synthetic import adding_problem
from rnnkit.train import Stream, TrainConfig, fit, seed_everything
from rnnkit.train.batches import train_order

torch.set_num_threads(1)


class Crash(RuntimeError):
    """Raised by a Regressor at a scripted training call, on every process at the same point."""


class Regressor(nn.Module):
    """LSTM + linear head. Batches: predict the sum (B,); streams: predict every step (S, T)."""

    def __init__(self, crash_at: int | None = None) -> None:
        super().__init__()
        self.rnn = LSTM(2, 8, batch_first=True)
        self.head = nn.Linear(8, 1)
        self.crash_at, self.calls = crash_at, 0

    def loss(self, batch: Batch, state=None):
        if self.training:
            if self.calls == self.crash_at:
                raise Crash
            self.calls += 1
        outputs, new_state = self.rnn(batch.inputs, state)  # (B, T, 8)
        if state is None and batch.targets.dim() == 1:  # the adding problem
            return F.mse_loss(self.head(outputs[:, -1]).squeeze(-1), batch.targets)
        return F.mse_loss(self.head(outputs).squeeze(-1), batch.targets), new_state

    def predict(self, batch: Batch) -> torch.Tensor:
        outputs, _ = self.rnn(batch.inputs)
        return self.head(outputs[:, -1]).squeeze(-1)


class Tagger(nn.Module):
    """A tag per step of a variable-length sequence: the mean loss over the tagged steps, with
    `loss_weight` counting them (as rnnkit's tagger, translator and music model do)."""

    def __init__(self) -> None:
        super().__init__()
        self.rnn = LSTM(2, 6, batch_first=True)
        self.head = nn.Linear(6, 3)

    def loss(self, batch: Batch) -> torch.Tensor:
        outputs, _ = self.rnn(batch.inputs, lengths=batch.lengths)  # (B, T, 6)
        logits = self.head(outputs).flatten(0, 1)
        return F.cross_entropy(logits, batch.targets.flatten(), ignore_index=-100)

    def loss_weight(self, batch: Batch) -> int:
        return int((batch.targets != -100).sum())


def _tagged(count: int) -> list:
    """Samples of 1-9 steps: (inputs (T, 2), tags (T,)); processes hold unequal step counts,
    and every third sample is untagged (-100), so that a process's share of a step may hold no
    tag at all (its mean loss 0/0)."""
    generator = torch.Generator().manual_seed(7)
    samples = []
    for i in range(count):
        steps = int(torch.randint(1, 10, (1,), generator=generator))
        inputs = torch.randn(steps, 2, generator=generator)
        tags = (inputs[:, 0] > 0).long() + (inputs[:, 1] > 1).long()
        samples.append((inputs, tags if i % 3 else torch.full_like(tags, -100)))
    return samples


def _stream() -> Stream:
    generator = torch.Generator().manual_seed(5)
    inputs = torch.randn(4, 30, 2, generator=generator)  # 4 rows: 2 per process
    return Stream(inputs, inputs[..., 0].roll(1, dims=1))


def train_both(out: Path) -> dict:
    """Fit a batch model and a stream model; the same code for one process and for torchrun."""
    seed_everything(0)
    model = Regressor()
    config = TrainConfig(
        device="cpu",
        epochs=2,
        batch_size=16,
        lr=0.01,
        metrics=("mae",),
        run_dir=str(out / "run"),
        progress=False,
    )
    train = adding_problem(67, 10, seed=1)  # the last global batch: 3 rows, 2 and 1 a process
    history = fit(model, train, adding_problem(30, 10, seed=2), config)

    seed_everything(1)
    stream_model = Regressor()
    stream_config = TrainConfig(
        device="cpu", epochs=2, bptt_k1=5, bptt_k2=3, lr=0.01, progress=False
    )
    stream_history = fit(stream_model, _stream(), _stream(), stream_config)

    # the same stream run, crashed mid-epoch 2 (12 calls an epoch) and resumed from step 8
    seed_everything(1)
    crash_config = replace(stream_config, run_dir=str(out / "stream"), checkpoint_every=2)
    try:
        fit(Regressor(crash_at=17), _stream(), _stream(), crash_config)
    except Crash:
        pass
    resumed = Regressor()
    fit(resumed, _stream(), _stream(), replace(crash_config, resume=True))
    assert resumed.calls == 2 * 12 - 2 * 8, resumed.calls  # only the windows after step 8

    seed_everything(2)  # a mean over tokens: each process's share weighted by its tokens
    tagger = Tagger()
    tag_config = TrainConfig(device="cpu", epochs=2, batch_size=4, lr=0.02, progress=False)
    tag_history = fit(tagger, _tagged(14), None, tag_config, collate=collate)

    weights = {f"batch.{k}": v for k, v in model.state_dict().items()}
    weights |= {f"tagger.{k}": v for k, v in tagger.state_dict().items()}
    weights |= {f"stream.{k}": v for k, v in stream_model.state_dict().items()}
    weights |= {f"resumed.{k}": v for k, v in resumed.state_dict().items()}
    histories = {"history": history, "stream_history": stream_history, "tag_history": tag_history}
    return {**histories, "weights": weights}


def main(out: Path) -> None:
    faulthandler.dump_traceback_later(240, exit=True)  # a deadlock fails the test with stacks
    rank = int(os.environ["RANK"])
    replaced = []
    os_replace = os.replace

    def counting_replace(src, dst):
        replaced.append(str(dst))
        os_replace(src, dst)

    os.replace = counting_replace  # every file rnnkit writes lands through os.replace
    result = train_both(out)
    os.replace = os_replace
    save_file({k: v.contiguous() for k, v in result.pop("weights").items()}, out / f"{rank}.st")
    (out / f"{rank}.json").write_text(json.dumps({**result, "replaced": replaced}))


@pytest.mark.slow
def test_torchrun_two_processes_train_like_one(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    done = subprocess.run(
        [*command, __file__, str(tmp_path / "ddp")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    single = train_both(tmp_path / "single")

    untagged = {i for i, (_, tags) in enumerate(_tagged(14)) if (tags == -100).all()}
    shares = [s for epoch in (0, 1) for r in (0, 1) for s in train_order(14, 4, 0, epoch, r, 2)]
    assert any(set(share.rows) <= untagged for share in shares)  # the case the weights must meet
    ranks = [load_file(tmp_path / "ddp" / f"{rank}.st") for rank in (0, 1)]
    reports = [json.loads((tmp_path / "ddp" / f"{rank}.json").read_text()) for rank in (0, 1)]
    for name, expected in single["weights"].items():
        assert torch.equal(ranks[0][name], ranks[1][name]), name  # every rank holds the same
        torch.testing.assert_close(ranks[0][name], expected, rtol=1e-4, atol=1e-5)
        if name.startswith("stream."):  # a resumed stream run ends exactly where it would have
            resumed = name.replace("stream.", "resumed.")
            assert torch.equal(ranks[0][resumed], ranks[0][name]), resumed
            assert torch.equal(single["weights"][resumed], expected), resumed
    assert not torch.equal(ranks[0]["batch.head.weight"], Regressor().head.weight)  # it trained

    for key in ("history", "stream_history", "tag_history"):
        assert reports[0][key] == reports[1][key]  # metrics reduced: both ranks log the same
        for ddp_row, row in zip(reports[0][key], single[key], strict=True):
            for column in ("train_loss", "val_loss", "val_mae"):
                if column in row:
                    assert ddp_row[column] == pytest.approx(row[column], rel=1e-4), column

    assert reports[1]["replaced"] == []  # only rank 0 writes
    written = {Path(p).name for p in reports[0]["replaced"]}
    assert {"config.json", "history.csv", "model.safetensors", "metrics.json"} <= written
    assert (tmp_path / "ddp" / "run" / "plots" / "loss.png").exists()


if __name__ == "__main__":
    main(Path(sys.argv[1]))


def test_more_processes_than_cuda_devices_is_a_clear_error(monkeypatch):
    """torchrun with two processes on a one-GPU machine: the second process has no device of
    its own; it says so (and how to fix it) instead of CUDA's 'invalid device ordinal'."""
    from rnnkit.train import distributed

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    with pytest.raises(ValueError, match=r"1 CUDA device\(s\) for 2 processes.*--device cpu"):
        distributed.setup(None)
    with pytest.raises(ValueError, match="nproc_per_node=1"):
        distributed.setup("cuda")
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert distributed.setup("cpu").device == torch.device("cpu")  # the CPU needs no device
