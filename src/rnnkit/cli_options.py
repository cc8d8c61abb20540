"""Option dataclasses on the command line: one flag per field, and the `--config` TOML file.

`add_field_flags` turns each field of a frozen dataclass (a task's options,
`rnnkit.train.TrainConfig`) into a flag: `hidden_size` becomes `--hidden-size`, a bool
`--x/--no-x`, a tuple several values, an optional field takes `none`; `field_values` builds the
dataclass back from the parsed flags. The help of a flag is the field's `metadata["help"]` or
the comment after it in the class body. `read_toml` reads the same fields from the tables
[model] and [train] of a TOML file, checked as flags are. Errors are `UsageError`s, printed by
`rnnkit.cli` as one line.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import re
import types
import typing
from typing import Any

from rnnkit.tasks import base
from rnnkit.tasks.base import Task
from rnnkit.train.config import TrainConfig


class UsageError(Exception):
    """A bad command line or config file; printed as one line."""


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
    except UnicodeDecodeError as error:  # TOML is UTF-8
        raise UsageError(
            f"{path}: not UTF-8 text (byte {error.start}); save the config file as UTF-8"
        ) from None
    except OSError as error:
        raise UsageError(f"{path}: cannot read the config file ({error.strerror})") from None
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
