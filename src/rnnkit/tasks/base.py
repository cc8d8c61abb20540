"""The task framework: `Task`, `Run`, `TaskError`, the registry of tasks, and loading runs.

A task (`rnnkit.tasks.<name>`) is one application: it reads data, builds the preprocessing and
a task model from `rnnkit.models`, trains it with `rnnkit.train.fit`, and knows what to print
for `evaluate`, `predict`, `generate` and `forecast`. Each task module defines `TASK = Task(...)`
and is imported only when it is asked for, so one task failing to import never stops another.

A run directory is what `fit` writes plus the task's preprocessing (tokenizer, labels, scaler as
JSON). `load_run(run_dir)` rebuilds everything from it: config.json names the task, its options
and the model class with its config; the class is imported from `rnnkit.models` only, built from
its config dataclass, and given the weights of model.safetensors. Nothing is ever unpickled.

The command line (`rnnkit.cli`) and docs/cli.md ("The task interface") are the users of this.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import inspect
import json
import os
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from torch import nn

from rnnkit.data.files import atomic_write
from rnnkit.train import checkpoint
from rnnkit.train.config import TrainConfig

# task name -> module defining TASK; imported lazily, in this order in help texts
TASK_MODULES: dict[str, str] = {
    "classify": "rnnkit.tasks.classify",
    "tag": "rnnkit.tasks.tag",
    "lm": "rnnkit.tasks.lm",
    "forecast": "rnnkit.tasks.forecast",
    "translate": "rnnkit.tasks.translate",
    "speech": "rnnkit.tasks.speech",
}
MODELS_PACKAGE = "rnnkit.models"  # the only package a saved model class may come from
# the preprocessing files tasks write into a run directory (a new task adds its own here); a
# new run removes them, with what fit writes, from a run directory an earlier run used
TASK_FILES = (
    "tokenizer.json",  # classify, lm (text)
    "labels.json",  # classify
    "words.json",  # tag
    "chars.json",  # tag
    "tags.json",  # tag
    "scaler.json",  # forecast
    "source_tokenizer.json",  # translate
    "target_tokenizer.json",  # translate
    "normalization.json",  # speech
    "sample.mid",  # lm (music)
)


class TaskError(Exception):
    """A problem the user can fix (unknown task, missing file, a run of another task, ...).

    The command line prints it as one line, `rnnkit: error: <message>`, and exits with code 2.
    """


@dataclass(frozen=True)
class Task:
    """One application of the command line: `rnnkit train <name> [DATA] [options]`.

    The functions receive and return plain values; none of them parses flags or prints usage.
    `predict`, `plot_predictions`, `generate` and `forecast` are optional: a task without one
    rejects that command (or flag). `train` is kept wrapped so that a new run (not resuming a
    checkpoint) first removes what an earlier run wrote into config.run_dir (`clear_run_dir`),
    before the task writes its preprocessing files there, and a resume that fails (refused for
    other options or data) leaves the run's preprocessing files as they were.
    """

    name: str  # TASK on the command line
    summary: str  # one line for `rnnkit train --help`
    options: type  # frozen dataclass of model and data options; each field a train flag
    default_data: str  # the built-in dataset used when DATA is omitted
    train: Callable[[str | None, Any, TrainConfig], dict[str, float]]  # -> test metrics
    load_extras: Callable[[Path], dict[str, Any]]  # run_dir -> preprocessing objects
    evaluate: Callable[[Run, str | None], dict[str, float]]  # (run, DATA) -> metrics
    predict: Callable[[Run, list[str]], list[str]] | None = None  # -> one line per input
    # optional: (run, inputs, folder) -> the PNG files written, for `rnnkit predict --plots`
    plot_predictions: Callable[[Run, list[str], Path], list[Path]] | None = None
    generate: Callable[[Run, Any], Any] | None = None  # (run, generate_options instance)
    generate_options: type | None = None  # frozen dataclass: the flags of `rnnkit generate`
    forecast: Callable[[Run, int | None], list[str]] | None = None  # (run, horizon) -> lines
    train_defaults: Mapping[str, Any] = field(default_factory=dict)  # TrainConfig defaults

    def __post_init__(self) -> None:
        check_options_class(self.options, f"task {self.name!r}: options")
        if (self.generate is None) != (self.generate_options is None):
            raise TypeError(f"task {self.name!r}: give generate and generate_options together")
        if self.generate_options is not None:
            check_options_class(self.generate_options, f"task {self.name!r}: generate_options")
        known = {f.name for f in dataclasses.fields(TrainConfig)}
        unknown = sorted(set(self.train_defaults) - known)
        if unknown:
            raise TypeError(f"task {self.name!r}: train_defaults has unknown fields {unknown}")
        clashes = sorted(known & {f.name for f in dataclasses.fields(self.options)})
        if clashes:
            raise TypeError(f"task {self.name!r}: options clash with TrainConfig fields {clashes}")
        if not getattr(self.train, "clears_run_dir", False):
            object.__setattr__(self, "train", _clearing_run_dir(self.train))

    def train_config(self, **values: Any) -> TrainConfig:
        """A TrainConfig with this task's defaults, overridden by `values`."""
        return TrainConfig(**{**self.train_defaults, **values})


@dataclass
class Run:
    """A trained run, ready to use: what `load_run(run_dir)` returns."""

    run_dir: Path  # the run directory
    task: Task  # the task that trained it
    options: Any  # the task's options dataclass, as trained
    train_config: TrainConfig  # the TrainConfig it was trained with
    model: nn.Module  # the task model, weights loaded, in eval mode, on the CPU
    extras: dict[str, Any]  # the task's preprocessing objects (task.load_extras(run_dir))
    info: dict[str, Any] = field(default_factory=dict)  # everything config.json holds


def _clearing_run_dir(train: Callable) -> Callable:
    """`train` that first clears config.run_dir of an earlier run, unless it resumes it."""

    @functools.wraps(train)
    def train_in_run_dir(data: str | None, options: Any, config: TrainConfig) -> dict[str, float]:
        if config.run_dir is None:
            return train(data, options, config)
        clear_run_dir(config.run_dir, config.resume)
        kept = _task_files(config.run_dir) if config.resume else {}
        try:
            return train(data, options, config)
        except BaseException:  # a refused resume: the task wrote its files before fit refused
            for path, content in kept.items():
                atomic_write(path, lambda tmp, content=content: Path(tmp).write_bytes(content))
            raise

    train_in_run_dir.clears_run_dir = True  # type: ignore[attr-defined]
    return train_in_run_dir


# --- options dataclasses ----------------------------------------------------------------------


def check_options_class(cls: type, what: str) -> None:
    """Raise TypeError unless `cls` is a frozen dataclass whose fields all have a help text."""
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise TypeError(f"{what} must be a dataclass, got {cls!r}")
    if not cls.__dataclass_params__.frozen:  # type: ignore[attr-defined]
        raise TypeError(f"{what}: {cls.__name__} must be frozen (@dataclass(frozen=True))")
    missing = [f.name for f in dataclasses.fields(cls) if not f.metadata.get("help")]
    if missing:
        raise TypeError(f"{what}: fields {missing} of {cls.__name__} need metadata={{'help': ...}}")


def build_dataclass(cls: type, values: Mapping[str, Any], what: str) -> Any:
    """`cls(**values)` from JSON values: lists become tuples where the field is a tuple.

    Unknown keys are a TaskError naming `what` (e.g. "options in runs/x/config.json").
    """
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise TaskError(f"{what}: unknown fields {unknown}; {cls.__name__} has {sorted(names)}")
    converted = {
        name: tuple(value) if isinstance(value, list) and _is_tuple(hints[name]) else value
        for name, value in values.items()
    }
    return cls(**converted)


def _is_tuple(hint: Any) -> bool:
    if typing.get_origin(hint) is tuple:
        return True
    return any(typing.get_origin(arg) is tuple for arg in typing.get_args(hint))


# --- the registry -----------------------------------------------------------------------------


def task_names() -> list[str]:
    """The names of all registered tasks (whether or not their module imports)."""
    return list(TASK_MODULES)


def get_task(name: str) -> Task:
    """The Task called `name`, importing its module on first use."""
    if name not in TASK_MODULES:
        raise TaskError(f"unknown task {name!r}; the tasks are: {', '.join(TASK_MODULES)}")
    module_name = TASK_MODULES[name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name != module_name:
            raise
        raise TaskError(f"task {name!r} is not available: {module_name} is missing") from None
    task = getattr(module, "TASK", None)
    assert isinstance(task, Task), f"{module_name} must define TASK = Task(...)"
    assert task.name == name, f"{module_name}.TASK is named {task.name!r}, registered as {name!r}"
    return task


def available_tasks() -> tuple[dict[str, Task], dict[str, str]]:
    """(the tasks that import, {name: why not} for those that do not), for help texts."""
    tasks: dict[str, Task] = {}
    broken: dict[str, str] = {}
    for name in TASK_MODULES:
        try:
            tasks[name] = get_task(name)
        except Exception as error:  # a task under construction must not break the others
            broken[name] = f"{type(error).__name__}: {error}"
    return tasks, broken


# --- run directories --------------------------------------------------------------------------


def read_run_config(run_dir: str | os.PathLike) -> dict[str, Any]:
    """config.json of a run written by a task, with a TaskError when there is none."""
    path = Path(run_dir) / "config.json"
    if not Path(run_dir).is_dir():
        raise TaskError(f"{run_dir}: no such run directory")
    if not path.is_file():
        raise TaskError(f"{run_dir}: not a run directory (it has no config.json)")
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise TaskError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(info, dict) or "task" not in info or "model" not in info:
        raise TaskError(f"{path}: not written by a task (`rnnkit train`): no task or model entry")
    return info


def task_of_run(run_dir: str | os.PathLike) -> Task:
    """The Task that trained the run in `run_dir` (reads config.json only)."""
    return get_task(read_run_config(run_dir)["task"])


def _task_files(run_dir: str | os.PathLike) -> dict[Path, bytes]:
    """The TASK_FILES run_dir holds, with their bytes (rank 0's; none on the other ranks)."""
    if not is_main_process():
        return {}
    paths = (Path(run_dir) / name for name in TASK_FILES)
    return {path: path.read_bytes() for path in paths if path.is_file()}


def clear_run_dir(run_dir: str | os.PathLike, resume: bool = False) -> None:
    """Remove what an earlier run wrote into run_dir (fit's files, TASK_FILES), unless `resume`
    and run_dir has a checkpoint to resume. Only rank 0 removes; a user's own files stay."""
    if is_main_process() and not (resume and checkpoint.has_checkpoint(run_dir)):
        checkpoint.remove_run(run_dir, TASK_FILES)


def load_run(run_dir: str | os.PathLike) -> Run:
    """Rebuild a trained run: task, options, TrainConfig, model with its weights, extras."""
    run_dir = Path(run_dir)
    info = read_run_config(run_dir)
    task = get_task(info["task"])
    options = build_dataclass(task.options, info.get("options", {}), f"{run_dir}: options")
    train_config = TrainConfig.from_json(info["train"])
    model = build_model(info["model"], run_dir)
    _load_weights(model, run_dir)
    model.eval()
    return Run(run_dir, task, options, train_config, model, task.load_extras(run_dir), info)


def _load_weights(model: nn.Module, run_dir: Path) -> None:
    """Give `model` the weights of run_dir/model.safetensors, or a TaskError that says why not."""
    path = run_dir / "model.safetensors"
    if not path.is_file():
        raise TaskError(
            f"{run_dir}: no model.safetensors; training did not finish "
            "(train again with --resume and the same --run-dir to finish it)"
        )
    try:
        weights = checkpoint.load_tensors(path)
    except (OSError, SafetensorError) as error:
        raise TaskError(
            f"{path}: not a readable safetensors file ({error}); train the run again"
        ) from None
    try:
        model.load_state_dict(weights)
    except RuntimeError as error:
        mismatches = str(error).splitlines()[1:]  # one line per mismatch; name the first
        raise TaskError(
            f"{run_dir}: model.safetensors does not fit the model that config.json describes "
            f"({mismatches[0].strip() if mismatches else error}); train the run again"
        ) from None


def load(run_dir: str | os.PathLike) -> nn.Module:
    """The trained model of `run_dir`, ready to use (eval mode, on the CPU)."""
    return load_run(run_dir).model


def require(run_dir: str | os.PathLike, command: str) -> Callable:
    """The task function behind `rnnkit <command> RUN` (read from config.json before the model
    is loaded), or a TaskError naming the tasks that have it."""
    task = task_of_run(run_dir)
    function = getattr(task, command)
    if function is None:
        able = [name for name, t in available_tasks()[0].items() if getattr(t, command)]
        raise TaskError(
            f"{run_dir} is a {task.name!r} run; `rnnkit {command}` needs a run of "
            f"{' or '.join(repr(name) for name in able) or 'another task'}"
        )
    return function


# --- models -----------------------------------------------------------------------------------


def model_info(model: nn.Module) -> dict[str, Any]:
    """{"class": "rnnkit.models.<module>.<Class>", "config": asdict(model.config)}."""
    cls = type(model)
    assert cls.__module__.startswith(MODELS_PACKAGE + "."), f"{cls} is not in {MODELS_PACKAGE}"
    config = getattr(model, "config", None)
    assert dataclasses.is_dataclass(config), f"{cls.__name__}.config must be a dataclass"
    return {"class": f"{cls.__module__}.{cls.__qualname__}", "config": dataclasses.asdict(config)}


def run_info(task: Task, options: Any, model: nn.Module, **extra: Any) -> dict[str, Any]:
    """The `run_info` a task passes to `fit`: task, options, model class and config, extras.

    `extra` holds further JSON values the task wants in config.json (e.g. data="path.csv").
    """
    return {
        "task": task.name,
        "options": dataclasses.asdict(options),
        "model": model_info(model),
        **extra,
    }


def build_model(spec: Mapping[str, Any], run_dir: str | os.PathLike = "") -> nn.Module:
    """A fresh model from config.json's "model" entry; the class must live in rnnkit.models."""
    path = str(spec.get("class", ""))
    module_name, _, class_name = path.rpartition(".")
    if not module_name.startswith(MODELS_PACKAGE + ".") or not class_name.isidentifier():
        raise TaskError(f"{run_dir}: model class {path!r} is not in {MODELS_PACKAGE}")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError):
        raise TaskError(f"{run_dir}: model class {path!r} does not exist") from None
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise TaskError(f"{run_dir}: {path!r} is not a model class")
    config_cls = config_class(cls)
    return cls(build_dataclass(config_cls, spec.get("config", {}), f"{run_dir}: model config"))


def config_class(cls: type) -> type:
    """The config dataclass a model class is built from: the annotation of its one argument."""
    parameters = list(inspect.signature(cls.__init__).parameters)[1:]  # without self
    assert parameters, f"{cls.__name__}.__init__ takes no config"
    hint = typing.get_type_hints(cls.__init__).get(parameters[0])
    assert dataclasses.is_dataclass(hint), f"{cls.__name__}({parameters[0]}) is not a dataclass"
    return hint


# --- data and files ---------------------------------------------------------------------------


def resolve_data(data: str | None, default: str, kinds: tuple[str, ...]) -> str | Path:
    """DATA of the command line: a built-in dataset name (str) or an existing path (Path).

    None means `default`. A built-in dataset must be of one of `kinds` (its task column in
    `rnnkit datasets`); anything else that is not an existing path is a TaskError.
    """
    from rnnkit.data import datasets

    name = default if data is None else data
    if name in datasets.REGISTRY:
        kind = datasets.info(name).task
        if kind not in kinds:
            fitting = [e.name for e in datasets.list(show=False) if e.task in kinds]
            raise TaskError(
                f"{name!r} is a {kind} dataset; this task takes a file or one of: "
                f"{', '.join(fitting)}"
            )
        return name
    path = Path(name)
    if not path.exists():
        raise TaskError(
            f"{name}: no such file, and not a built-in dataset (`rnnkit datasets` lists them)"
        )
    return path


def is_main_process() -> bool:
    """True except in the processes of rank > 0 under torchrun (those neither write nor print)."""
    return int(os.environ.get("RANK", "0")) == 0


def record_metrics(run_dir: str | os.PathLike | None, key: str, values: Any) -> None:
    """Add `values` under `key` to run_dir/metrics.json (written by `fit`), atomically."""
    if run_dir is None or not is_main_process():
        return
    path = Path(run_dir) / "metrics.json"
    summary = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    summary[key] = values
    checkpoint.write_json(path, summary)
