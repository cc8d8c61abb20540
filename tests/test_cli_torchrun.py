"""`torchrun --nproc_per_node=2 -m rnnkit train classify` (CPU, gloo) makes one run, prints once.

Both processes must agree on the default run directory (named by the launcher's start time),
only rank 0 prints and writes, and the run loads and evaluates like a single-process one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from rnnkit.tasks import load_run


@pytest.mark.slow
def test_torchrun_trains_one_run_and_prints_once(tmp_path):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    command += ["-m", "rnnkit", "train", "classify", "--train-size", "96", "--hidden-size", "8"]
    command += ["--embedding-dim", "8", "--epochs", "1", "--no-progress", "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("test metrics") == 1, done.stdout  # rank 0 only
    runs = list((tmp_path / "runs").iterdir())
    assert len(runs) == 1 and runs[0].name.startswith("classify-")
    recorded = json.loads((runs[0] / "metrics.json").read_text())["test"]
    run = load_run(runs[0])
    torch.set_num_threads(1)
    again = run.task.evaluate(run, None)  # one process; the two ranks summed in another order
    assert again["accuracy"] == pytest.approx(recorded["accuracy"], abs=1e-6)
    assert again["loss"] == pytest.approx(recorded["loss"], rel=1e-5)
