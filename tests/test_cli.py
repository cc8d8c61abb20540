"""The `rnnkit` command line: help with defaults, flags one-to-one with dataclass fields,
`--config` TOML equal to flags, one-line errors with exit code 2, datasets, bench, run names.
"""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rnnkit import cli
from rnnkit.cli import main
from rnnkit.tasks import base, get_task
from rnnkit.train import TrainConfig

torch.set_num_threads(1)
TINY = ["--train-size", "80", "--hidden-size", "8", "--embedding-dim", "8", "--epochs", "2"]


@pytest.fixture(autouse=True)
def _in_tmp_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # default run directories (runs/...) land in the test's folder


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("rnnkit: error: "), err
    assert "Traceback" not in err
    return err


def _help(capsys, *argv: str) -> str:
    assert main([*argv, "--help"]) == 0
    return capsys.readouterr().out


def test_help_lists_commands_and_every_option_with_its_default(capsys):
    top = _help(capsys)
    for command in ("train", "evaluate", "predict", "generate", "forecast", "datasets", "bench"):
        assert command in top
    assert "classify" in _help(capsys, "train")
    text = " ".join(_help(capsys, "train", "classify").split())  # unwrap the lines
    assert "--hidden-size INT recurrent state size per direction (default: 128)" in text
    assert "--bidirectional, --no-bidirectional read the text both ways (default: True)" in text
    assert "--epochs INT passes over the training data (default: 15)" in text  # the task's
    assert "--lr FLOAT peak learning rate (default: 0.002)" in text
    assert "--clip-norm FLOAT|none" in text and "--metrics [STR ...]" in text
    for command in ("evaluate", "predict", "generate", "forecast", "bench"):
        assert "(default:" in _help(capsys, command) or command in ("evaluate", "predict")
    assert "--horizon HORIZON steps ahead (none: the model's horizon) (default: None)" in " ".join(
        _help(capsys, "forecast").split()
    )


def test_every_field_is_one_flag_and_values_convert():
    task = get_task("classify")
    args = cli.parse(
        ["train", "classify", "my.csv", "--no-bidirectional", "--pooling", "attention"]
        + ["--clip-norm", "none", "--metrics", "accuracy", "recall", "--train-size", "50"]
    )
    parser = args.parser
    flags = {flag for action in parser._actions for flag in action.option_strings}
    for cls in (task.options, TrainConfig):
        for field in dataclasses.fields(cls):
            assert "--" + field.name.replace("_", "-") in flags, field.name
    options, config = cli.field_values(task.options, args), cli.field_values(TrainConfig, args)
    assert args.data == "my.csv"
    assert options == task.options(bidirectional=False, pooling="attention", train_size=50)
    values = {**task.train_defaults, "clip_norm": None, "metrics": ("accuracy", "recall")}
    assert config == TrainConfig(**values)


def test_a_toml_config_gives_the_same_run_as_the_flags(tmp_path):
    flags = [
        *TINY,
        "--pooling",
        "mean",
        "--no-lowercase",
        "--seed",
        "3",
        "--metrics",
        "accuracy",
        "precision",
    ]
    assert main(["train", "classify", *flags, "--no-progress", "--run-dir", "a"]) == 0
    (tmp_path / "run.toml").write_text(
        'data = "rotten_tomatoes"\nseed = 3\n'
        "[model]\ntrain_size = 80\nhidden_size = 8\nembedding_dim = 8\n"
        'pooling = "mean"\nlowercase = false\n'
        '[train]\nepochs = 2\nmetrics = ["accuracy", "precision"]\nprogress = false\n'
    )
    assert main(["train", "classify", "--config", "run.toml", "--run-dir", "b"]) == 0
    configs = [json.loads(Path(d, "config.json").read_text()) for d in ("a", "b")]
    for config in configs:
        del config["train"]["run_dir"]
    assert configs[0] == configs[1]
    assert Path("a/history.csv").read_text() == Path("b/history.csv").read_text()
    assert (
        main(["train", "classify", "--config", "run.toml", "--epochs", "1", "--run-dir", "c"]) == 0
    )
    assert json.loads(Path("c/config.json").read_text())["train"]["epochs"] == 1  # flags win


def _fake_run(folder: Path, task: str) -> Path:
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"task": task, "model": {}, "train": {}}))
    return folder


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["train", "sentiment"], "unknown task 'sentiment'; the tasks are: classify"),
        (["train", "classify", "missing.csv"], "missing.csv: no such file"),
        (["train", "classify", "shakespeare"], "'shakespeare' is a language_model dataset"),
        (["forecast", "RUN"], "is a 'classify' run; `rnnkit forecast` needs a run of 'forecast'"),
        (["generate", "RUN"], "is a 'classify' run; `rnnkit generate` needs a run of 'lm'"),
        (["evaluate", "nowhere"], "nowhere: no such run directory"),
        (["train", "classify", "--config", "bad.toml"], "bad.toml: malformed TOML"),
        (["train", "classify", "--config", "unknown.toml"], "unknown key 'colour'"),
        (["train", "classify", "--config", "table.toml"], "unknown key [model] 'epochs'"),
        (["train", "classify", "--config", "typed.toml"], "epochs must be of type int, got 'ten'"),
        (["train", "classify", "--config", "absent.toml"], "absent.toml: no such config file"),
        (["train", "classify", "--config", "latin1.toml"], "latin1.toml: not UTF-8 text (byte 5)"),
        (["train", "classify", "--config", "RUN"], "RUN: cannot read the config file"),
        (["train", "classify", "--epochs", "ten"], "argument --epochs: expected int, got 'ten'"),
        (["train", "classify", "--pooling", "sum"], "argument --pooling: invalid choice: 'sum'"),
        (["train", "classify", "--lr", "-1"], "lr must be a finite number > 0"),
        (["shout"], "argument COMMAND: invalid choice: 'shout'"),
    ],
)
def test_errors_are_one_line_with_exit_code_2(tmp_path, capsys, argv, expected):
    _fake_run(tmp_path / "RUN", "classify")
    (tmp_path / "bad.toml").write_text("epochs = \n")
    (tmp_path / "unknown.toml").write_text("colour = 'red'\n")
    (tmp_path / "table.toml").write_text("[model]\nepochs = 3\n")
    (tmp_path / "typed.toml").write_text("epochs = 'ten'\n")
    (tmp_path / "latin1.toml").write_bytes("# caf\u00e9\nepochs = 1\n".encode("latin-1"))
    assert main(argv) == 2
    assert expected in _one_line_error(capsys)
    assert not Path("runs").exists()  # nothing was written


def test_the_guide_names_every_task(capsys):
    guide = " ".join((Path(__file__).parents[1] / "docs" / "cli.md").read_text().split())
    names = base.task_names()
    listed = ", ".join(f"`{name}`" for name in names[:-1]) + f" or `{names[-1]}`"
    assert f"`TASK` is {listed}." in guide
    assert main(["train", "sentiment"]) == 2
    assert _one_line_error(capsys).strip() in guide  # the sample error is the real one


def test_python_dash_m_rnnkit_exits_2_with_one_line(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "rnnkit", "train", "classify", "nothing.csv"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr == "rnnkit: error: nothing.csv: no such file, and not a built-in " + (
        "dataset (`rnnkit datasets` lists them)\n"
    )


def test_a_task_that_fails_to_import_does_not_break_the_others(monkeypatch, capsys):
    monkeypatch.setitem(base.TASK_MODULES, "ghost", "rnnkit.tasks.ghost")
    assert "ghost: unavailable" in _help(capsys, "train")
    assert "--pooling" in _help(capsys, "train", "classify")
    assert main(["train", "ghost"]) == 2
    assert "task 'ghost' is not available: rnnkit.tasks.ghost is missing" in _one_line_error(capsys)


def test_datasets_prints_the_built_in_datasets(capsys):
    assert main(["datasets"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^rotten_tomatoes\s+classify\s+6,000", out, re.MULTILINE)
    assert out.count("\n") == 13  # header + 12 datasets


def test_bench_runs_the_named_cases_and_writes_json(tmp_path, capsys):
    argv = ["bench", "gru:infer:2:5:4:4", "--repeats", "1", "--no-compile", "--json", "b.json"]
    assert main(argv) == 0
    records = json.loads(Path("b.json").read_text())
    assert [r["name"] for r in records] == ["gru infer B=2 T=5 I=4 H=4"]
    assert "gru infer B=2 T=5 I=4 H=4" in capsys.readouterr().out
    assert main(["bench", "gru:stream:1:1:4:8", "--repeats", "1", "--no-compile"]) == 0
    timed_too = (  # `update_`, and the drop-in layer's step() and step_()
        r"^gru stream B=1 .* in place +\d+\.\d+ us/step  layer step\(\) +\d+\.\d+ us/step "
        r"step_\(\) +\d+\.\d+ us/step$"
    )
    assert re.search(timed_too, capsys.readouterr().out, re.MULTILINE)
    for bad in (
        "gru:fly:2:5:4:4",
        "gru",
        "gru:train:2:5:4",
        "gru:train:0:5:4:4",
        "gru:train:2:x:4:4",
    ):
        assert main(["bench", bad]) == 2  # before anything is timed
        assert "a case is kind:mode:B:T:H_in:H with kind in" in _one_line_error(capsys)


def test_bench_on_two_threads_reports_the_wall_clock(tmp_path, capsys):
    argv = ["bench", "lstm:stream:1:1:4:8", "--repeats", "1", "--no-compile", "--threads", "2"]
    assert main([*argv, "--json", "b.json"]) == 0
    (record,) = json.loads(Path("b.json").read_text())
    assert record["clock"] == "wall"
    assert record["ours_ms"] == record["ours_wall_ms"]
    assert record["ratio"] == pytest.approx(record["ours_wall_ms"] / record["reference_wall_ms"])
    for name in ("in_place", "layer", "layer_in_place"):  # `update_`, the layer's step(), step_()
        assert record[f"{name}_us_per_step"] == record[f"{name}_wall_us_per_step"] > 0
    assert "on 2 threads" in capsys.readouterr().out
    assert torch.get_num_threads() == 1  # as this module set it
    assert main([*argv[:-1], "0"]) == 2
    assert "--threads must be >= 1" in _one_line_error(capsys)


@pytest.mark.parametrize(
    "kind", ["lstm", "gru", "rnn_tanh", "lstm_layer_norm", "gru_proj", "rnn_proj", "mingru"]
)
def test_bench_counts_the_flops_of_the_layers_own_matrix_products(kind):
    """case_flops equals the multiply-adds torch's profiler counts in the layer's products
    (x2), forward only: input and recurrent gates, the projection, none recurrent for minGRU."""
    from torch.profiler import ProfilerActivity, profile

    from rnnkit import bench

    case = bench.Case(kind, "infer", 2, 3, 5, 8)
    if kind in bench.VARIANTS:
        layer = bench.variant_layer(case, "reference")
    else:  # rnnkit's layer on the loop over its cells, whose products the profiler sees
        layer = bench.rnnkit_route(case, bench.torch_module(case))
        layer.backend = "reference"
    x = torch.randn(3, 2, 5)
    with torch.no_grad(), profile(activities=[ProfilerActivity.CPU], with_flops=True) as prof:
        layer(x)
    counted = sum(e.flops for e in prof.key_averages() if e.key in ("aten::mm", "aten::addmm"))
    assert counted == bench.case_flops(case)


def test_default_run_directory_is_named_by_task_and_time(tmp_path):
    first = cli.default_run_dir("classify")
    assert re.fullmatch(r"runs/classify-\d{8}-\d{6}", first.as_posix())
    first.mkdir(parents=True)
    second = cli.default_run_dir("classify")
    assert second != first and second.name.startswith(first.name)
