"""The `rnnkit` command line (also `python -m rnnkit`): a thin layer over `rnnkit.tasks`.

    rnnkit train TASK [DATA] [task options] [training options] [--config FILE.toml]
    rnnkit evaluate RUN [DATA]
    rnnkit predict RUN INPUT...
    rnnkit generate RUN [--prompt TEXT] ...
    rnnkit forecast RUN [--horizon N]
    rnnkit datasets
    rnnkit bench [CASE...] [--quick] [--repeats N] [--json FILE]

The flags of `train` come from dataclass fields, one flag per field: the task's options
(`rnnkit.tasks.base.Task.options`) and `rnnkit.train.TrainConfig`; `hidden_size` becomes
`--hidden-size`, a bool `--x/--no-x`, a tuple several values, and `none` is None. A TOML file
(`--config`) sets the same fields; flags given on the command line win over it. Errors the user
can fix print one line, `rnnkit: error: ...`, and exit with code 2. What each task does lives in
its module; docs/cli.md is the guide.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import os
import re
import sys
import time
import types
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rnnkit.data.files import DataError
from rnnkit.tasks import base
from rnnkit.tasks.base import Task, TaskError
from rnnkit.train.config import TrainConfig

EXIT_USAGE = 2  # exit code of every error the user can fix


class UsageError(Exception):
    """A bad command line or config file; printed as one line."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage block), raised for `main` to print."""

    def error(self, message: str) -> typing.NoReturn:
        raise UsageError(message)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults after every option's help; descriptions keep their line breaks."""


# --- flags from dataclass fields --------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class FieldType:
    """What a dataclass field accepts, read from its type annotation."""

    base: type  # int, float, str or bool (the element type of a tuple)
    optional: bool  # `T | None`: "none" means None
    is_tuple: bool  # tuple[T, ...]: several values
    choices: tuple | None  # Literal["a", "b"] (or metadata "choices")


def field_type(cls: type, field: dataclasses.Field) -> FieldType:
    hint = typing.get_type_hints(cls)[field.name]
    args = typing.get_args(hint)
    optional = typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in args
    if optional:
        hint = next(a for a in args if a is not type(None))
    is_tuple = typing.get_origin(hint) is tuple
    if is_tuple:
        hint = typing.get_args(hint)[0]
    choices = field.metadata.get("choices")
    if typing.get_origin(hint) is typing.Literal:
        choices = typing.get_args(hint)
        hint = type(choices[0])
    assert hint in (int, float, str, bool), f"{cls.__name__}.{field.name}: unsupported {hint}"
    assert not (hint is bool and (optional or is_tuple)), f"{field.name}: plain bool only"
    return FieldType(hint, optional, is_tuple, tuple(choices) if choices else None)


def convert(kind: FieldType, text: str) -> Any:
    """One command-line string as a value of the field (argparse calls it per value)."""
    if kind.optional and text.lower() == "none":
        return None
    try:
        return kind.base(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {kind.base.__name__}, got {text!r}") from None


def add_field_flags(
    group: Any,
    cls: type,
    defaults: dict[str, Any] | None = None,
    helps: dict[str, str] | None = None,
    skip: set[str] | frozenset[str] = frozenset(),
) -> None:
    """One flag per field of dataclass `cls`: `--field-name`, dest = the field's name.

    `defaults` override the fields' defaults; `helps` their help texts; `skip` names fields
    that already have a flag (several tasks' generate options may share one).
    """
    for field in dataclasses.fields(cls):
        if field.name in skip:
            continue
        kind = field_type(cls, field)
        flag = "--" + field.name.replace("_", "-")
        text = (helps or {}).get(field.name) or field.metadata.get("help", "")
        default = (defaults or {}).get(field.name, field.default)
        if default is dataclasses.MISSING:
            assert field.default_factory is not dataclasses.MISSING, f"{field.name}: no default"
            default = field.default_factory()
        if kind.base is bool:
            action = argparse.BooleanOptionalAction
            group.add_argument(flag, dest=field.name, action=action, default=default, help=text)
            continue
        metavar = field.metadata.get("metavar") or (
            kind.base.__name__.upper() if kind.choices is None else None
        )
        if kind.optional and metavar:
            metavar += "|none"
        group.add_argument(
            flag,
            dest=field.name,
            type=lambda s, kind=kind: convert(kind, s),
            nargs="*" if kind.is_tuple else None,
            choices=kind.choices,
            metavar=metavar,
            default=default,
            help=text,
        )


def field_values(cls: type, args: argparse.Namespace) -> Any:
    """The dataclass `cls` built from the parsed flags (lists become tuples)."""
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls)}
    return base.build_dataclass(cls, values, "command line")


def comment_helps(cls: type) -> dict[str, str]:
    """{field: its trailing `# comment`} from the source of a dataclass (TrainConfig's helps)."""
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    pattern = re.compile(r"^\s+(\w+): [^#\n]+#\s*(.+)$", re.MULTILINE)
    return {name: text.strip() for name, text in pattern.findall(source)}


# --- the config file --------------------------------------------------------------------------


def read_toml(path: str, task: Task) -> dict[str, Any]:
    """Field values from a TOML file: top-level keys (option, training field or `data`), or
    the tables [model] (task options) and [train] (TrainConfig). Checked like flags are."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10: the same parser, packaged as tomli
        import tomli as tomllib
    try:
        with open(path, "rb") as file:
            document = tomllib.load(file)
    except FileNotFoundError:
        raise UsageError(f"{path}: no such config file") from None
    except tomllib.TOMLDecodeError as error:
        raise UsageError(f"{path}: malformed TOML: {error}") from None
    classes = {"model": task.options, "train": TrainConfig}
    values: dict[str, Any] = {}
    for key, value in document.items():
        if key in classes and isinstance(value, dict):
            for name, item in value.items():
                values.update(_toml_value(path, f"[{key}] ", classes[key], name, item))
        elif key == "data":
            values["data"] = _checked(path, "data", FieldType(str, False, False, None), value)
        else:
            owner = _owner(key, classes.values())
            if owner is None:
                raise UsageError(f"{path}: unknown key {key!r}; {_known_keys(classes)}")
            values.update(_toml_value(path, "", owner, key, value))
    return values


def _owner(key: str, classes: Any) -> type | None:
    name = key.replace("-", "_")
    return next((c for c in classes if name in {f.name for f in dataclasses.fields(c)}), None)


def _known_keys(classes: dict[str, type]) -> str:
    names = [f.name for c in classes.values() for f in dataclasses.fields(c)]
    return f"keys are data, {', '.join(names)} (or [model] and [train] tables)"


def _toml_value(path: str, where: str, cls: type, key: str, value: Any) -> dict[str, Any]:
    name = key.replace("-", "_")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    if name not in fields:
        raise UsageError(f"{path}: unknown key {where}{key!r}; {cls.__name__} has {list(fields)}")
    return {name: _checked(path, f"{where}{key}", field_type(cls, fields[name]), value)}


def _checked(path: str, key: str, kind: FieldType, value: Any) -> Any:
    """A TOML value of the field's type (ints are floats where a float is due)."""
    if kind.is_tuple:
        if not isinstance(value, list):
            raise UsageError(f"{path}: {key} must be a list, got {value!r}")
        element = dataclasses.replace(kind, is_tuple=False, optional=False)
        return tuple(_checked(path, key, element, item) for item in value)
    if kind.optional and isinstance(value, str) and value.lower() == "none":
        return None
    if kind.base is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if type(value) is not kind.base:
        raise UsageError(f"{path}: {key} must be of type {kind.base.__name__}, got {value!r}")
    if kind.choices is not None and value not in kind.choices:
        raise UsageError(f"{path}: {key} must be one of {list(kind.choices)}, got {value!r}")
    return value


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
        "predict", help="predict for each INPUT (classify, tag)", formatter_class=HelpFormatter
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
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also time the kernels' first-call compilation",
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
    cases = bench.cases_from_names(args.cases) if args.cases else None
    if args.quick:
        cases = bench.quick_cases()
    bench.run_bench(cases, repeats=args.repeats, json_path=args.json, compile=args.compile)
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
