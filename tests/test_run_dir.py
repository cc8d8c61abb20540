"""The run directory: a new run replaces an old one (a killed new run is never taken for it),
resuming refuses other options, models or data, damaged files are one-line errors naming the
file, every file is written with fsync and the umask's permissions, and what a killed write left
behind is removed.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rnnkit.cli import main
from rnnkit.data import Batch
from rnnkit.data import files as data_files
from rnnkit.tasks import base, load_run
from rnnkit.train import TrainConfig, checkpoint, fit, loop

torch.set_num_threads(1)

LM = ["--limit", "20000", "--batch-size", "8", "--bptt-k1", "25", "--hidden-size", "16"]
LM += ["--sample-length", "0", "--no-progress", "--device", "cpu"]
MUSIC = ["jsb_chorales", "--limit", "12", "--batch-size", "4", "--hidden-size", "16"]
MUSIC += ["--sample-length", "0", "--no-progress", "--device", "cpu"]
OLD_RUN = {"model.safetensors", "metrics.json", "history.csv", "plots", "tokenizer.json"}


@pytest.fixture(autouse=True)
def _in_tmp_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("rnnkit: error: "), err
    assert "Traceback" not in err
    return err


class Killed(Exception):
    """Stands for a SIGKILL: main() does not catch it, and nothing after it runs."""


def _die_in_training(monkeypatch) -> None:
    """Make the next run stop at its first training epoch, as a SIGKILL would."""

    def killed(*args, **kwargs):
        raise Killed

    monkeypatch.setattr(loop, "_train_epoch", killed)
    monkeypatch.setattr(loop, "_train_stream_epoch", killed)


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory) -> Path:
    """A finished tiny text lm run with a checkpoint; tests copy it before changing it."""
    run_dir = tmp_path_factory.mktemp("lm") / "run"
    assert main(["train", "lm", *LM, "--epochs", "1", "--run-dir", str(run_dir)]) == 0
    assert OLD_RUN | {"config.json", "checkpoint"} <= {p.name for p in run_dir.iterdir()}
    return run_dir


def _copy(run: Path) -> Path:
    """A copy of `run` in the test's folder, as if trained there."""
    run_dir = Path(shutil.copytree(run, Path.cwd() / "run"))
    info = json.loads((run_dir / "config.json").read_text())
    info["train"]["run_dir"] = str(run_dir)
    (run_dir / "config.json").write_text(json.dumps(info))
    return run_dir


# --- a new run replaces the old one -----------------------------------------------------------


def test_a_killed_new_run_is_reported_unfinished_not_as_the_old_run(lm_run, monkeypatch, capsys):
    run_dir = _copy(lm_run)
    (run_dir / "notes.txt").write_text("mine\n")
    _die_in_training(monkeypatch)
    with pytest.raises(Killed):
        main(["train", "lm", *LM, "--epochs", "3", "--lr", "1e-4", "--run-dir", str(run_dir)])
    assert main(["evaluate", str(run_dir)]) == 2
    assert "training did not finish" in _one_line_error(capsys)
    left = {p.name for p in run_dir.iterdir()}
    assert not left & OLD_RUN, left
    assert (run_dir / "notes.txt").read_text() == "mine\n"  # not the run's: it stays
    assert json.loads((run_dir / "config.json").read_text())["train"]["epochs"] == 3  # the new one


def test_another_task_in_the_same_run_dir_leaves_nothing_of_the_first(lm_run):
    run_dir = _copy(lm_run)
    assert main(["train", "lm", *MUSIC, "--epochs", "1", "--run-dir", str(run_dir)]) == 0
    assert not (run_dir / "tokenizer.json").exists()  # the text run's; the music run has none
    assert load_run(run_dir).extras == {}


class Regressor(nn.Module):
    def __init__(self, hidden_size: int = 4) -> None:
        super().__init__()
        self.linear = nn.Linear(2, hidden_size)
        self.head = nn.Linear(hidden_size, 1)

    def loss(self, batch: Batch) -> torch.Tensor:
        return F.mse_loss(self.head(self.linear(batch.inputs)).squeeze(-1), batch.targets)


class OtherRegressor(Regressor):
    """Another model class with the same weights."""


def _data() -> Batch:
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(16, 2, generator=generator)
    return Batch(inputs, torch.ones(16, dtype=torch.long), inputs.sum(-1))


def _config(run_dir: Path, **changes) -> TrainConfig:
    return TrainConfig(
        **{"epochs": 1, "batch_size": 8, "progress": False, **changes}, run_dir=str(run_dir)
    )


def test_fit_removes_what_an_old_run_wrote_before_it_writes(tmp_path, monkeypatch):
    fit(Regressor(), _data(), _data(), _config(tmp_path))
    (tmp_path / "mine.txt").write_text("mine\n")
    (tmp_path / ".model.safetensors.x1.tmp").write_text("a killed write")
    _die_in_training(monkeypatch)
    with pytest.raises(Killed):
        fit(Regressor(), _data(), _data(), _config(tmp_path, seed=3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint", "config.json", "mine.txt"]
    assert list((tmp_path / "checkpoint").iterdir()) == []
    assert json.loads((tmp_path / "config.json").read_text())["train"]["seed"] == 3


# --- resume compares the whole config.json ----------------------------------------------------


def test_resume_refuses_other_options_model_or_data(tmp_path):
    info = {"task": "toy", "options": {"hidden_size": 4}, "data": "a.csv"}
    fit(Regressor(), _data(), None, _config(tmp_path), run_info=info)
    resume = _config(tmp_path, epochs=2, resume=True)
    for changed, name in [
        ({"options": {"hidden_size": 8}}, r"\['options.hidden_size'\]"),
        ({"data": "b.csv"}, r"\['data'\]"),
        ({"task": "other"}, r"\['task'\]"),
    ]:
        with pytest.raises(ValueError, match=f"cannot resume .*{name}"):
            fit(Regressor(), _data(), None, resume, run_info={**info, **changed})
    with pytest.raises(ValueError, match=r"cannot resume .*\['model_class'\]"):
        fit(OtherRegressor(), _data(), None, resume, run_info=info)
    assert len(fit(Regressor(), _data(), None, resume, run_info=info)) == 2  # epochs may change


def test_a_moved_run_dir_resumes_and_config_json_records_the_resumed_run(tmp_path):
    """The run dir is where the checkpoint is, not a setting to compare: a run moved (or named
    by another path) resumes, and config.json then says where and for how many epochs."""
    info = {"task": "toy"}
    fit(Regressor(), _data(), None, _config(tmp_path / "a"), run_info=info)
    moved = Path(shutil.move(tmp_path / "a", tmp_path / "b"))
    resumed = _config(moved, epochs=3, resume=True)
    assert len(fit(Regressor(), _data(), None, resumed, run_info=info)) == 3
    train = json.loads((moved / "config.json").read_text())["train"]
    assert (train["run_dir"], train["epochs"]) == (str(moved), 3)
    again = _config(moved, epochs=3, resume=True)  # what config.json says now resumes too
    assert len(fit(Regressor(), _data(), None, again, run_info=info)) == 3


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--dropout", "0.3"], "options.dropout"),
        (["--hidden-size", "8"], "options.hidden_size"),
        (["--cell", "gru"], "options.cell"),
        (["--limit", "15000"], "options.limit"),
    ],
)
def test_cli_resume_with_other_task_options_is_a_one_line_error(lm_run, capsys, flags, named):
    run_dir = _copy(lm_run)
    config = (run_dir / "config.json").read_text()
    tokenizer = (run_dir / "tokenizer.json").read_bytes()
    argv = ["train", "lm", *LM, "--epochs", "2", "--resume", "--run-dir", str(run_dir)]
    assert main([*argv, *flags]) == 2
    err = _one_line_error(capsys)
    assert f"cannot resume {run_dir}" in err and named in err
    assert (run_dir / "config.json").read_text() == config
    assert (run_dir / "tokenizer.json").read_bytes() == tokenizer


def test_a_refused_resume_leaves_the_files_the_task_wrote_before_fit(capsys):
    """forecast writes its scaler before `fit` checks the resume: a resume with another split
    (another scaler) is refused, and the run keeps its own scaler (it was overwritten)."""
    run_dir = Path.cwd() / "forecast"
    argv = ["train", "forecast", "--hidden-size", "8", "--no-progress", "--device", "cpu"]
    assert main([*argv, "--epochs", "1", "--run-dir", str(run_dir)]) == 0
    scaler = (run_dir / "scaler.json").read_bytes()
    resume = [*argv, "--epochs", "2", "--resume", "--run-dir", str(run_dir)]
    assert main([*resume, "--test-size", "30"]) == 2
    assert "cannot resume" in _one_line_error(capsys)
    assert (run_dir / "scaler.json").read_bytes() == scaler
    assert main(resume) == 0  # the same options: resumed, as before


# --- damaged files ----------------------------------------------------------------------------


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:100])


def test_a_damaged_model_file_is_a_one_line_error_naming_it(lm_run, capsys):
    run_dir = _copy(lm_run)
    _truncate(run_dir / "model.safetensors")
    assert main(["evaluate", str(run_dir)]) == 2
    err = _one_line_error(capsys)
    assert f"{run_dir / 'model.safetensors'}" in err and "train the run again" in err


def test_weights_that_do_not_fit_the_model_are_a_one_line_error(lm_run, capsys):
    run_dir = _copy(lm_run)
    info = json.loads((run_dir / "config.json").read_text())
    info["model"]["config"]["hidden_size"] = 24
    (run_dir / "config.json").write_text(json.dumps(info))
    with pytest.raises(base.TaskError, match="model.safetensors does not fit the model"):
        load_run(run_dir)
    assert main(["evaluate", str(run_dir)]) == 2
    assert str(run_dir) in _one_line_error(capsys)


@pytest.mark.parametrize("damage", ["tensors", "state.json", "no tensors"])
def test_a_damaged_checkpoint_is_a_one_line_error_naming_the_file(lm_run, capsys, damage):
    run_dir = _copy(lm_run)
    folder = run_dir / "checkpoint"
    (tensors,) = folder.glob("tensors-*.safetensors")
    damaged = folder / "state.json" if damage == "state.json" else tensors
    if damage == "no tensors":
        tensors.unlink()
    else:
        _truncate(damaged)
    argv = ["train", "lm", *LM, "--epochs", "2", "--resume", "--run-dir", str(run_dir)]
    assert main(argv) == 2
    err = _one_line_error(capsys)
    assert str(damaged) in err and "without --resume" in err


# --- atomic writes ----------------------------------------------------------------------------


def _umask() -> int:
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


def test_every_file_is_written_by_one_atomic_writer_with_fsync_and_the_umask(tmp_path, monkeypatch):
    synced = []
    fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd) or fsync(fd))
    data_files.write_json(tmp_path / "tokenizer.json", {"kind": "char"})
    checkpoint.write_json(tmp_path / "metrics.json", {"loss": 1.0})
    assert len(synced) == 2
    for name in ("tokenizer.json", "metrics.json"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o666 & ~_umask(), name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json", "tokenizer.json"]
    assert checkpoint.atomic_write is data_files.atomic_write  # one writer, not two


@pytest.mark.parametrize("umask", [0o077, 0o002])
def test_files_follow_the_umask_of_the_moment_they_are_written(tmp_path, umask):
    """A program that sets its umask after importing rnnkit gets files of that umask (it was
    read once, at import), a safetensors file included (safetensors makes its own, 0600)."""
    before = os.umask(umask)
    try:
        data_files.write_json(tmp_path / "a.json", {})
        checkpoint.save_tensors(tmp_path / "b.safetensors", {"w": torch.zeros(2)})
    finally:
        os.umask(before)
    for name in ("a.json", "b.safetensors"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o666 & ~umask, name


def test_a_task_run_dir_is_readable_by_others(lm_run):
    if _umask() & 0o044:
        pytest.skip("the umask keeps files from others")
    for path in lm_run.rglob("*"):
        if path.is_file():
            assert stat.S_IMODE(path.stat().st_mode) & 0o044 == 0o044, path


# --- temporary files a kill left --------------------------------------------------------------


def test_loading_or_removing_a_checkpoint_deletes_the_temporary_files_of_a_kill(tmp_path):
    checkpoint.save_checkpoint(tmp_path, {"step": 3, "weights": torch.ones(2)})
    folder = tmp_path / "checkpoint"
    leftovers = [".tensors-0123.safetensors.abc.tmp", ".state.json.def.tmp"]
    for name in leftovers:
        (folder / name).write_text("half a file")
    assert checkpoint.load_checkpoint(tmp_path)["step"] == 3
    assert sorted(p.name for p in folder.iterdir())[0] == "state.json"
    assert len(list(folder.iterdir())) == 2
    for name in leftovers:
        (folder / name).write_text("half a file")
    checkpoint.remove_checkpoint(tmp_path)
    assert list(folder.iterdir()) == []


# --- every file a task writes is known --------------------------------------------------------

TASK_RUNS = {
    "classify": ["--train-size", "40", "--hidden-size", "8", "--embedding-dim", "8"],
    "tag": ["--limit", "40", "--hidden-size", "8", "--embedding-dim", "8"],
    "lm": ["jsb_chorales", "--limit", "12", "--hidden-size", "8", "--sample-length", "4"],
    "forecast": ["--hidden-size", "8"],
    "translate": ["reverse", "--train-size", "40", "--hidden-size", "8", "--embedding-dim", "8"],
    "speech": ["--utterances", "20", "--hidden-size", "8", "--conv-channels", "8"],
}


@pytest.mark.slow
@pytest.mark.parametrize("task", list(TASK_RUNS))
def test_a_new_run_removes_every_file_a_task_writes(task):
    if task == "speech" and not (shutil.which("espeak-ng") and shutil.which("flite")):
        pytest.skip("espeak-ng or flite is not installed: no speech data to train on")
    run_dir = Path("run")
    argv = ["train", task, *TASK_RUNS[task], "--epochs", "1", "--no-progress", "--device", "cpu"]
    assert main([*argv, "--run-dir", str(run_dir)]) == 0
    (run_dir / "notes.txt").write_text("mine\n")
    base.clear_run_dir(run_dir)
    assert sorted(p.name for p in run_dir.rglob("*")) == ["checkpoint", "notes.txt"]
