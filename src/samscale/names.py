"""Safe names: study, arm and analysis names become folder and file names, so each is checked wherever it is read
(a spec, a study YAML, the run store, a command-line flag) before it can reach a path.

A safe name is 1 to 100 characters of letters, digits and `-_.`, not starting with a dot: it can never be `..`, an
absolute path, hold a separator or a NUL, or name a hidden file.
"""
from __future__ import annotations

import re

from samscale.errors import ConfigError

MAX_LENGTH = 100
_SAFE = re.compile(r"[A-Za-z0-9_.\-]+")
RULE = f"letters, digits and '-_.' only, not starting with '.', at most {MAX_LENGTH} characters"


def name_problem(name: object) -> str | None:
    """Why `name` is not a safe name, or None when it is one."""
    if not isinstance(name, str):
        return f"must be a string, got {type(name).__name__}"
    if not name:
        return "must not be empty"
    if len(name) > MAX_LENGTH:
        return f"is {len(name)} characters long; at most {MAX_LENGTH} are allowed"
    if name.startswith("."):
        return "must not start with '.'"
    if not _SAFE.fullmatch(name):
        bad = sorted({char for char in name if not _SAFE.fullmatch(char)})
        return f"holds {''.join(bad)!r}"
    return None


def check_name(name: object, what: str = "name") -> str:
    """`name` itself when it is safe to use in a file name; else ConfigError naming `what`, the value and the rule."""
    problem = name_problem(name)
    if problem is not None:
        raise ConfigError(f"{what} {name!r} {problem} ({RULE})")
    return name  # type: ignore[return-value]


def safe_name(name: object) -> str:
    """For pydantic field validators: the name when safe, else ValueError with the problem and the rule."""
    problem = name_problem(name)
    if problem is not None:
        raise ValueError(f"name {problem} ({RULE})")
    return name  # type: ignore[return-value]
