"""Errors samscale raises for bad input, each naming the bad value and what would be valid."""
from __future__ import annotations

import typing
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pydantic


class ConfigError(ValueError):
    """A run or study configuration is invalid; the message names the field, the value and the valid choices."""


class UsageError(ConfigError):
    """A command-line option has a bad value (the CLI exits with argparse's status 2 and its usage line)."""


class ClaimLost(RuntimeError):
    """A write for a run was refused because this process no longer holds the run: another sweep took it over (its
    heartbeat had gone stale) or it was finished or reset meanwhile. The holder stops that run and writes nothing
    more for it."""


def _section_model(annotation: Any) -> Any:
    """The pydantic model a field holds, directly or inside a container (list[Arm], dict[str, Budget]), or None."""
    if hasattr(annotation, "model_fields"):
        return annotation
    for arg in typing.get_args(annotation):
        if (found := _section_model(arg)) is not None:
            return found
    return None


def _valid_fields(model: Any, loc: tuple) -> tuple[str, str] | None:
    """(section name, its field names) for the section that holds the unknown key at `loc`, if it can be found."""
    node, names, in_container = model, [], False
    for part in loc[:-1]:
        fields = getattr(node, "model_fields", {})
        if part not in fields:
            if in_container:  # a list index or dict key inside list[Arm] / dict[str, Budget]
                in_container = False
                continue
            return None
        names.append(str(part))
        annotation = fields[part].annotation
        node = _section_model(annotation)
        in_container = node is not None and node is not annotation
    if not hasattr(node, "model_fields"):
        return None
    return ".".join(names), ", ".join(node.model_fields)


def format_validation_error(err: pydantic.ValidationError, prefix: str = "", model: Any = None) -> str:
    """Turn a pydantic ValidationError into one line per bad field: `field: problem (got value)`.

    With `model` (the validated pydantic class), an unknown key is reported with the valid fields of its section,
    e.g. `unknown field optim.rhoo; valid fields of optim: name, base, lr, ...`.
    """
    lines = []
    for item in err.errors():
        loc = ".".join(str(part) for part in item["loc"])
        where = f"{prefix}{loc}" if loc else prefix.rstrip(".") or "config"
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            valid = _valid_fields(model, item["loc"]) if model is not None else None
            section = f"{prefix}{valid[0]}" if valid and valid[0] else (prefix.rstrip(".") or model.__name__)
            lines.append(f"unknown field {where}" + (f"; valid fields of {section}: {valid[1]}" if valid else ""))
            continue
        got = item.get("input")
        got_text = "" if item["type"] == "missing" or "got " in message else f" (got {got!r})"
        lines.append(f"{where}: {message}{got_text}")
    return "invalid configuration:\n  " + "\n  ".join(lines)
