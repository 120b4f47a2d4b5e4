"""Errors samscale raises for bad input, each naming the bad value and what would be valid."""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pydantic


class ConfigError(ValueError):
    """A run or study configuration is invalid; the message names the field, the value and the valid choices."""


class UsageError(ConfigError):
    """A command-line option has a bad value (the CLI exits with argparse's status 2 and its usage line)."""


def format_validation_error(err: pydantic.ValidationError, prefix: str = "") -> str:
    """Turn a pydantic ValidationError into one line per bad field: `field: problem (got value)`."""
    lines = []
    for item in err.errors():
        loc = ".".join(str(part) for part in item["loc"])
        where = f"{prefix}{loc}" if loc else prefix.rstrip(".") or "config"
        got = item.get("input")
        got_text = "" if item["type"] == "missing" else f" (got {got!r})"
        lines.append(f"{where}: {item['msg']}{got_text}")
    return "invalid configuration:\n  " + "\n  ".join(lines)
