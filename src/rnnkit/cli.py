"""The `rnnkit` command line (also `python -m rnnkit`): a thin layer over `rnnkit.tasks`.

    rnnkit train TASK [DATA] [task options] [training options] [--config FILE.toml]
    rnnkit evaluate RUN [DATA]
    rnnkit predict RUN INPUT...
    rnnkit generate RUN [--prompt TEXT] ...
    rnnkit forecast RUN [--horizon N]
    rnnkit datasets
    rnnkit bench [CASE...] [--quick] [--repeats N] [--threads N] [--json FILE]

The flags of `train` come from dataclass fields, one flag per field: the task's options
(`rnnkit.tasks.base.Task.options`) and `rnnkit.train.TrainConfig`; `hidden_size` becomes
`--hidden-size`, a bool `--x/--no-x`, a tuple several values, and `none` is None. A TOML file
(`--config`) sets the same fields; flags given on the command line win over it. Errors the user
can fix print one line, `rnnkit: error: ...`, and exit with code 2. What each task does lives in
its module; docs/cli.md is the guide. The mapping of dataclass fields to flags and TOML keys
lives in `rnnkit.cli_options`.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rnnkit.cli_options import (
    UsageError,
    add_field_flags,
    comment_helps,
    field_values,
    read_toml,
)
from rnnkit.data.files import DataError
from rnnkit.tasks import base
from rnnkit.tasks.base import Task, TaskError
from rnnkit.train.config import TrainConfig

EXIT_USAGE = 2  # exit code of every error the user can fix


class ArgumentParser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage block), raised for `main` to print."""

    def error(self, message: str) -> typing.NoReturn:
        raise UsageError(message)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults after every option's help; descriptions keep their line breaks."""


# --- the parser -------------------------------------------------------------------------------


def build_parser(tasks: dict[str, Task], broken: dict[str, str]) -> ArgumentParser:
    """The whole command line; `tasks` are the tasks whose modules import."""
    from rnnkit import __version__

    parser = ArgumentParser(
        prog="rnnkit",
        description="Recurrent neural networks on PyTorch: train, evaluate and use task models.",
        epilog="`rnnkit COMMAND --help` lists a command's options (`rnnkit train TASK --help`).",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"rnnkit {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    add_train(commands, tasks, broken)
    add_run_commands(commands, tasks)
    listing = commands.add_parser("datasets", help="list the built-in datasets")
    listing.set_defaults(handler=run_datasets)
    add_bench(commands)
    return parser


def add_train(commands: Any, tasks: dict[str, Task], broken: dict[str, str]) -> None:
    unavailable = "".join(f"\n  {name}: unavailable ({why})" for name, why in broken.items())
    train = commands.add_parser(
        "train",
        help="train a task model; writes a run directory",
        description="Train TASK on DATA (a file, or a built-in dataset: `rnnkit datasets`)."
        + unavailable,
        formatter_class=HelpFormatter,
    )
    by_task = train.add_subparsers(dest="task", metavar="TASK", required=True)
    helps = comment_helps(TrainConfig)
    helps["run_dir"] = "the run directory to write (none: runs/TASK-YYYYmmdd-HHMMSS)"
    for name, task in tasks.items():
        sub = by_task.add_parser(
            name,
            help=task.summary,
            description=task.summary,
            usage=f"rnnkit train {name} [DATA] [options]",
        )
        sub.formatter_class = HelpFormatter
        sub.add_argument(
            "data",
            nargs="?",
            default=None,
            metavar="DATA",
            help=f"a file or a built-in dataset (none: {task.default_data})",
        )
        sub.add_argument("--config", metavar="FILE.toml", help="read options from a TOML file")
        add_field_flags(sub.add_argument_group(f"{name} options"), task.options)
        group = sub.add_argument_group("training options (TrainConfig)")
        add_field_flags(group, TrainConfig, dict(task.train_defaults), helps)
        sub.set_defaults(handler=run_train, parser=sub)


def add_run_commands(commands: Any, tasks: dict[str, Task]) -> None:
    """evaluate, predict, generate and forecast: each takes a run directory first."""
    evaluate = commands.add_parser(
        "evaluate",
        help="metrics of a run on its test data or on DATA",
        formatter_class=HelpFormatter,
    )
    evaluate.add_argument("run", metavar="RUN", help="a run directory")
    evaluate.add_argument("data", metavar="DATA", nargs="?", help="a file or built-in dataset")
    evaluate.set_defaults(handler=run_evaluate)
    predict = commands.add_parser(
        "predict",
        help="predict for each INPUT (classify, tag, translate, speech)",
        formatter_class=HelpFormatter,
    )
    predict.add_argument("run", metavar="RUN", help="a run directory")
    predict.add_argument("inputs", metavar="INPUT", nargs="+", help="texts; - reads stdin lines")
    predict.add_argument(
        "--plots",
        metavar="DIR",
        help="also write a figure per input into DIR (translate: its attention map)",
    )
    predict.set_defaults(handler=run_predict)
    generate = commands.add_parser(
        "generate", help="sample from a language model (lm)", formatter_class=HelpFormatter
    )
    generate.add_argument("run", metavar="RUN", help="a run directory")
    seen: set[str] = set()
    for task in tasks.values():
        if task.generate_options is not None:
            group = generate.add_argument_group(f"{task.name} options")
            add_field_flags(group, task.generate_options, skip=seen)
            seen.update(f.name for f in dataclasses.fields(task.generate_options))
    generate.set_defaults(handler=run_generate)
    forecast = commands.add_parser(
        "forecast", help="forecast beyond the series (forecast)", formatter_class=HelpFormatter
    )
    forecast.add_argument("run", metavar="RUN", help="a run directory")
    forecast.add_argument(
        "--horizon", type=int, default=None, help="steps ahead (none: the model's horizon)"
    )
    forecast.set_defaults(handler=run_forecast)


def add_bench(commands: Any) -> None:
    bench = commands.add_parser(
        "bench",
        help="time rnnkit's kernels against torch.nn",
        description="Each CASE is kind:mode:B:T:H_in:H, e.g. gru:train:8:200:128:128 "
        "(kind lstm|gru|rnn_tanh|rnn_relu, mode train|infer|stream); none: the default set.",
        formatter_class=HelpFormatter,
    )
    bench.add_argument("cases", metavar="CASE", nargs="*", help="cases to run")
    bench.add_argument("--quick", action="store_true", help="a one-minute subset of the cases")
    bench.add_argument("--repeats", type=int, default=7, help="timings per case (the median)")
    bench.add_argument("--json", metavar="FILE", default=None, help="also write records as JSON")
    bench.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch's threads for both sides (torch.set_num_threads); above 1 the times are "
        "wall-clock medians, and the streaming steps share their products with a second thread",
    )
    bench.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also time the kernels' first-call compilation",
    )
    bench.add_argument(
        "--system-malloc",
        action="store_true",
        help="leave malloc as it is, instead of keep_freed_memory() for both sides",
    )
    bench.set_defaults(handler=run_bench)


# --- the commands -----------------------------------------------------------------------------


def say(*lines: str) -> None:
    """Print on stdout, only in the process of rank 0 under torchrun."""
    if base.is_main_process():
        for line in lines:
            print(line)


def metric_lines(metrics: dict[str, Any]) -> list[str]:
    width = max((len(name) for name in metrics), default=0)
    return [
        f"  {name:<{width}}  {value:.4f}" if isinstance(value, float) else f"  {name}  {value}"
        for name, value in metrics.items()
    ]


def run_train(args: argparse.Namespace) -> int:
    task = base.get_task(args.task)
    if args.config is not None:
        args.parser.set_defaults(**read_toml(args.config, task))
        args = args.parser.parse_args(args.argv_rest, namespace=argparse.Namespace(**_fixed(args)))
    options = field_values(task.options, args)
    config = field_values(TrainConfig, args)
    if config.run_dir is None:
        config = dataclasses.replace(config, run_dir=str(default_run_dir(task.name)))
    say(f"training {task.name} on {args.data or task.default_data}; run directory {config.run_dir}")
    metrics = task.train(args.data, options, config)
    say(f"test metrics ({config.run_dir}/metrics.json):", *metric_lines(metrics))
    return 0


def _fixed(args: argparse.Namespace) -> dict[str, Any]:
    """What the second parse of `train` keeps from the first (command, task, bookkeeping)."""
    return {k: getattr(args, k) for k in ("command", "task", "argv_rest", "handler", "parser")}


def run_evaluate(args: argparse.Namespace) -> int:
    run = base.load_run(args.run)
    metrics = run.task.evaluate(run, args.data)
    say(f"{run.task.name} run {run.run_dir} on {args.data or 'its test data'}:")
    say(*metric_lines(metrics))
    return 0


def run_predict(args: argparse.Namespace) -> int:
    predict = base.require(args.run, "predict")
    run = base.load_run(args.run)
    inputs = [line.rstrip("\n") for text in args.inputs for line in _expand(text)]
    if not inputs:
        raise UsageError("nothing to predict: standard input (-) gave no line with text")
    plot = run.task.plot_predictions
    if args.plots and plot is None:
        able = [name for name, t in base.available_tasks()[0].items() if t.plot_predictions]
        raise TaskError(
            f"{args.run} is a {run.task.name!r} run, which draws no figures; --plots needs a "
            f"run of {' or '.join(repr(name) for name in able)}"
        )
    say(*predict(run, inputs))
    if args.plots:
        folder = Path(args.plots)
        folder.mkdir(parents=True, exist_ok=True)
        say(*(f"wrote {path}" for path in plot(run, inputs, folder)))
    return 0


def _expand(text: str) -> list[str]:
    return [line for line in sys.stdin if line.strip()] if text == "-" else [text]


def run_generate(args: argparse.Namespace) -> int:
    generate = base.require(args.run, "generate")
    run = base.load_run(args.run)
    generate(run, field_values(run.task.generate_options, args))
    return 0


def run_forecast(args: argparse.Namespace) -> int:
    forecast = base.require(args.run, "forecast")
    if args.horizon is not None and args.horizon < 1:
        raise UsageError(f"--horizon must be >= 1, got {args.horizon}")
    run = base.load_run(args.run)
    say(*forecast(run, args.horizon))
    return 0


def run_datasets(args: argparse.Namespace) -> int:
    from rnnkit.data import datasets

    datasets.list()
    return 0


def run_bench(args: argparse.Namespace) -> int:
    from rnnkit import bench

    if args.quick and args.cases:
        raise UsageError("give CASEs or --quick, not both")
    if args.repeats < 1:
        raise UsageError(f"--repeats must be >= 1, got {args.repeats}")
    if args.threads < 1:
        raise UsageError(f"--threads must be >= 1, got {args.threads}")
    cases = bench.cases_from_names(args.cases) if args.cases else None
    if args.quick:
        cases = bench.quick_cases()
    bench.run_bench(
        cases,
        repeats=args.repeats,
        json_path=args.json,
        compile=args.compile,
        keep_memory=not args.system_malloc,
        threads=args.threads,
    )
    return 0


def default_run_dir(task: str) -> Path:
    """runs/<task>-<timestamp>; under torchrun every process computes the same name."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(_start_time()))
    path = Path("runs") / f"{task}-{stamp}"
    if _world_size() > 1:
        return path
    suffix = 2
    while path.exists():  # two runs in the same second
        path = Path("runs") / f"{task}-{stamp}-{suffix}"
        suffix += 1
    return path


def _world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def _start_time() -> float:
    """Now; under torchrun the start time of the launcher, the parent of every process."""
    if _world_size() > 1:
        try:
            stat = Path(f"/proc/{os.getppid()}/stat").read_text().rsplit(")", 1)[1].split()
            boot = next(
                float(line.split()[1])
                for line in Path("/proc/stat").read_text().splitlines()
                if line.startswith("btime")
            )
            return boot + int(stat[19]) / os.sysconf("SC_CLK_TCK")  # field 22: starttime
        except (OSError, IndexError, ValueError, StopIteration):
            pass
    return time.time()


# --- main -------------------------------------------------------------------------------------


def parse(argv: Sequence[str]) -> argparse.Namespace:
    """Parse a command line; `train TASK` of a task that is unknown or broken fails clearly."""
    argv = list(argv)
    if len(argv) > 1 and argv[0] == "train" and not argv[1].startswith("-"):
        base.get_task(argv[1])  # unknown or unavailable: its own one-line error
    tasks, broken = base.available_tasks()
    parser = build_parser(tasks, broken)
    args = parser.parse_args(argv)
    args.argv_rest = argv[2:] if args.command == "train" else []
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line `argv` (default: sys.argv[1:]); returns the exit code."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = parse(argv)
        handler: Callable[[argparse.Namespace], int] = args.handler
        return handler(args)
    except BrokenPipeError:  # the reader left (`| head`): stop quietly, as cat does
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at exit
        return 0
    except (UsageError, TaskError, DataError, ValueError, OSError) as error:
        if os.environ.get("RNNKIT_TRACEBACK"):
            raise
        message = " ".join(str(error).split()) or type(error).__name__
        print(f"rnnkit: error: {message}", file=sys.stderr)
        return EXIT_USAGE
    except SystemExit as done:  # --help and --version
        return done.code if isinstance(done.code, int) else 0
    except KeyboardInterrupt:
        print("rnnkit: interrupted", file=sys.stderr)
        return 130
