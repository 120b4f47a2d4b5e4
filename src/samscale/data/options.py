"""Validation of dataset options: unknown names and bad values fail with the name, the value and what is valid."""
from __future__ import annotations

import numbers
from typing import Any, Mapping, Sequence

from samscale.data.errors import ConfigError


def resolve_options(dataset: str, given: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    """`defaults` updated with `given`; any name not in `defaults` is an error listing the valid options."""
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        valid = ", ".join(sorted(defaults)) or "none"
        raise ConfigError(f"unknown option(s) {unknown} for dataset {dataset!r}; valid options: {valid}")
    return {**defaults, **given}


def positive_int(name: str, value: Any) -> int:
    """`value` as an int, which must be >= 1."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def non_negative_int(name: str, value: Any) -> int:
    """`value` as an int, which must be >= 0."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ConfigError(f"{name} must be a non-negative integer, got {value!r}")
    return int(value)


def non_negative_float(name: str, value: Any) -> float:
    """`value` as a float, which must be finite and >= 0."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= float(value) < float("inf"):
        raise ConfigError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def one_of(name: str, value: Any, choices: Sequence[Any]) -> Any:
    """`value`, which must be one of `choices`."""
    if value not in choices:
        raise ConfigError(f"{name} must be one of {list(choices)}, got {value!r}")
    return value
