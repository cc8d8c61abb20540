"""Checks of model hyper-parameters, shared by the model configs: one-line ValueErrors that name
the field, what it must be and what it got."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any


def check_counts(owner: Any, *names: str, minimum: int = 1) -> None:
    """Each field `name` of `owner` is an int >= `minimum` (not a bool)."""
    for name in names:
        value = getattr(owner, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


def check_choice(name: str, value: Any, choices: Collection[Any]) -> None:
    """`value` is one of `choices`."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {sorted(choices)}, got {value!r}")


def check_rate(name: str, value: float) -> None:
    """`value` is a probability in [0, 1) (a dropout rate)."""
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {value}")


def check_rates(owner: Any, *names: str) -> None:
    """Each field `name` of `owner` is a probability in [0, 1)."""
    for name in names:
        check_rate(name, getattr(owner, name))
