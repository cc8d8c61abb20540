"""The run directory on disk: atomic writes, safetensors + JSON, and the resumable checkpoint.

A run directory holds

    config.json         the TrainConfig (under "train"), model class, library version, run_info
    model.safetensors   the model's weights (the best ones at the end when early stopping)
    history.csv         one row per epoch: losses, metrics, lr, gradient norm, skipped steps
    metrics.json        the final summary (best epoch and its row)
    plots/*.png         loss and metric curves
    checkpoint/         state.json + tensors-*.safetensors: everything `resume` needs

Every file is written to a temporary file in the same directory and moved into place with
`os.replace` (`rnnkit.data.files.atomic_write`), so a reader (or a resumed run) sees either the
old or the new file, never half of one. A new run first removes what an earlier run wrote
(`remove_run`); resuming compares config.json with the new run's (`check_resumable`).
A checkpoint is two files: the tensors file gets a fresh name, and `state.json`, written last,
names it; a kill at any moment leaves `state.json` pointing at a complete set. Nothing is ever
pickled: tensors go to safetensors, everything else to JSON. What goes *into* a checkpoint is
decided by `rnnkit.train.loop`; this module only stores nested values.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import uuid
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from rnnkit.data.files import atomic_write
from rnnkit.data.files import write_text_atomic as write_text

CHECKPOINT_DIR = "checkpoint"
# what fit writes into run_dir besides the checkpoint; a new run removes them first
RUN_FILES = ("config.json", "model.safetensors", "history.csv", "metrics.json", "plots")


def write_json(path: str | Path, value: Any) -> None:
    """Write `value` as indented JSON to `path` atomically."""
    write_text(path, json.dumps(value, indent=2) + "\n")


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor]) -> None:
    """Write a flat name -> tensor dict to a safetensors file atomically (copies to CPU)."""
    cpu = {name: t.detach().to("cpu", copy=True).contiguous() for name, t in tensors.items()}
    atomic_write(path, lambda tmp: save_file(cpu, tmp))


def load_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    return load_file(str(path), device="cpu")


def write_csv(path: str | Path, rows: list[dict[str, Any]]) -> None:
    """Write `rows` as CSV atomically; the columns are the union of keys in first-seen order."""
    columns: list[str] = []
    for row in rows:
        columns += [key for key in row if key not in columns]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: _csv_value(row.get(key)) for key in columns})
    write_text(path, out.getvalue())


def _csv_value(value: Any) -> Any:
    return repr(value) if isinstance(value, float) else value  # repr: exact round trip


def read_csv(path: str | Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


# --- nested values <-> (JSON, flat tensors) -------------------------------------------------


def split_tensors(value: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    """A JSON-ready copy of `value` in which each tensor is moved into `tensors` under a key.

    Handles dicts (any keys: optimizer states use int keys), lists, tuples, scalars and None;
    `join_tensors` inverts it exactly.
    """
    if isinstance(value, torch.Tensor):
        tensors[prefix] = value
        return {"__tensor__": prefix}
    if isinstance(value, dict):
        items = [[k, split_tensors(v, f"{prefix}.{k}", tensors)] for k, v in value.items()]
        if all(isinstance(k, str) and not k.startswith("__") for k in value):
            return dict(items)
        return {"__dict__": items}  # int (or tuple) keys survive JSON as [key, value] pairs
    if isinstance(value, (list, tuple)):
        items = [split_tensors(v, f"{prefix}.{i}", tensors) for i, v in enumerate(value)]
        return {"__tuple__": items} if isinstance(value, tuple) else items
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot store a {type(value).__name__} in a checkpoint ({prefix})")


def join_tensors(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Invert `split_tensors`."""
    if isinstance(value, dict):
        if "__tensor__" in value:
            return tensors[value["__tensor__"]]
        if "__tuple__" in value:
            return tuple(join_tensors(v, tensors) for v in value["__tuple__"])
        items = value["__dict__"] if "__dict__" in value else value.items()
        return {_key(k): join_tensors(v, tensors) for k, v in items}
    if isinstance(value, list):
        return [join_tensors(v, tensors) for v in value]
    return value


def _key(key: Any) -> Any:
    return tuple(key) if isinstance(key, list) else key


# --- the checkpoint -------------------------------------------------------------------------


def save_checkpoint(run_dir: str | Path, parts: dict[str, Any]) -> None:
    """Store `parts` (name -> nested JSON values and tensors) as run_dir's checkpoint."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    tensors: dict[str, torch.Tensor] = {}
    state = {name: split_tensors(value, name, tensors) for name, value in parts.items()}
    tensors_file = f"tensors-{uuid.uuid4().hex[:12]}.safetensors"
    save_tensors(folder / tensors_file, tensors)
    write_json(folder / "state.json", {"tensors_file": tensors_file, "parts": state})
    for old in folder.glob("tensors-*.safetensors"):  # superseded, and leftovers of a kill
        if old.name != tensors_file:
            old.unlink()


def remove_checkpoint(run_dir: str | Path) -> None:
    """Delete run_dir's checkpoint (a new run in an old run_dir must not resume the old one)."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    for name in ("state.json", *(p.name for p in folder.glob("tensors-*.safetensors"))):
        (folder / name).unlink(missing_ok=True)
    _remove_temporary_files(folder)


def remove_run(run_dir: str | Path, names: tuple[str, ...] = ()) -> None:
    """Delete what an earlier run wrote into run_dir: its checkpoint, RUN_FILES and `names`
    (files or folders, e.g. a task's tokenizer.json), with the temporary files of a write that
    was killed. Anything else in run_dir (a user's own files) stays."""
    remove_checkpoint(run_dir)
    for name in (*RUN_FILES, *names):
        path = Path(run_dir) / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
        for temporary in path.parent.glob(f".{path.name}.*.tmp"):
            temporary.unlink(missing_ok=True)


def _remove_temporary_files(folder: Path) -> None:
    """Delete what atomic writes killed midway left in `folder` (.NAME.*.tmp)."""
    for temporary in folder.glob(".*.tmp"):
        temporary.unlink(missing_ok=True)


def has_checkpoint(run_dir: str | Path) -> bool:
    """Whether run_dir holds a checkpoint to resume (its state.json)."""
    return (Path(run_dir) / CHECKPOINT_DIR / "state.json").exists()


def load_checkpoint(run_dir: str | Path) -> dict[str, Any] | None:
    """The parts of run_dir's checkpoint, or None when it has none.

    A damaged checkpoint (state.json or its tensors file unreadable, truncated or missing) is a
    ValueError naming the file: such a run cannot be resumed, only started afresh.
    """
    if not has_checkpoint(run_dir):
        return None
    folder = Path(run_dir) / CHECKPOINT_DIR
    state_file = folder / "state.json"
    _remove_temporary_files(folder)
    path = state_file
    try:
        state = read_json(state_file)
        path = folder / state["tensors_file"]
        tensors = load_tensors(path)
        return {name: join_tensors(value, tensors) for name, value in state["parts"].items()}
    except (OSError, ValueError, KeyError, TypeError, SafetensorError) as error:
        raise ValueError(
            f"cannot resume {run_dir}: its checkpoint file {path} is damaged or missing "
            f"({type(error).__name__}: {error}); start afresh without --resume (resume=False)"
        ) from None


# --- config.json ----------------------------------------------------------------------------

# TrainConfig fields that may change between a run and its resumption
RESUMABLE_CHANGES = ("resume", "epochs", "progress", "device", "run_dir")  # a run dir may move


def write_run_config(
    run_dir: str | Path, train: dict[str, Any], model_class: str, run_info: dict[str, Any]
) -> None:
    """Write config.json: library version, model class, the TrainConfig and the task's run_info."""
    from rnnkit import __version__

    clashes = sorted({"rnnkit_version", "model_class", "train"} & set(run_info))
    if clashes:
        raise ValueError(f"run_info must not use the reserved keys {clashes}")
    values = {"rnnkit_version": __version__, "model_class": model_class, "train": train}
    write_json(Path(run_dir) / "config.json", {**values, **run_info})


def check_resumable(
    run_dir: str | Path, train: dict[str, Any], model_class: str, run_info: dict[str, Any]
) -> None:
    """Raise when run_dir's config.json was written for another run: a different TrainConfig
    (other than RESUMABLE_CHANGES), model class or run_info (a task's options, model config,
    data)."""
    path = Path(run_dir) / "config.json"
    try:
        saved = read_json(path)
        saved_train = saved["train"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(
            f"cannot resume {run_dir}: {path} is damaged or missing ({error}); "
            "start afresh without --resume (resume=False)"
        ) from None
    changed = [key for key in _differences(saved_train, train) if key not in RESUMABLE_CHANGES]
    if changed:
        raise ValueError(
            f"cannot resume {run_dir}: its TrainConfig differs in {changed}; use the same "
            "config (only epochs, device, progress and run_dir may change) or a new run_dir"
        )
    now = {"model_class": model_class, **run_info}
    before = {key: value for key, value in saved.items() if key not in ("rnnkit_version", "train")}
    changed = _differences(before, now)
    if changed:
        raise ValueError(
            f"cannot resume {run_dir}: the options, model or data differ from those in {path}: "
            f"{changed}; resume with the same ones (only epochs, device, progress and run_dir may "
            "change) or use a new run_dir"
        )


def _differences(saved: dict[str, Any], now: dict[str, Any], prefix: str = "") -> list[str]:
    """The sorted keys whose values differ; nested dicts by dotted key (model.config.dropout)."""
    changed = []
    for key in sorted(set(saved) | set(now)):
        a, b = _jsonable(saved.get(key)), _jsonable(now.get(key))
        if isinstance(a, dict) and isinstance(b, dict):
            changed += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            changed.append(f"{prefix}{key}")
    return changed


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value))  # tuples and lists compare equal after a round trip
