"""Read and check ``params.yaml``, the one place every knob of vaebench lives.

A bad value is reported as a :class:`ParamsError` naming the key, the value found and what is
allowed, so a user can fix params.yaml without reading the code.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

DEFAULT_PARAMS_PATH = Path("params.yaml")
PROFILES = ("smoke", "default", "paper")


class ParamsError(ValueError):
    """A value in params.yaml is missing or not allowed."""


def load_params(path: str | Path = DEFAULT_PARAMS_PATH) -> dict[str, Any]:
    """Load params.yaml as a dict; a missing or unreadable file is a ParamsError."""
    path = Path(path)
    if not path.is_file():
        raise ParamsError(
            f"params file {path} not found: run vaebench from the repository root "
            f"or pass --params PATH"
        )
    try:
        params = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ParamsError(f"params file {path} is not valid YAML: {err}") from err
    if not isinstance(params, dict):
        raise ParamsError(f"params file {path} must hold a mapping at the top level")
    return params


def lookup(params: dict[str, Any], dotted_key: str) -> Any:
    """Return ``params['a']['b']`` for ``'a.b'``; a missing key is a ParamsError naming it."""
    node: Any = params
    for part in dotted_key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise ParamsError(f"params.yaml has no key {dotted_key!r} (missing {part!r})")
        node = node[part]
    return node


def active_profile(params: dict[str, Any]) -> dict[str, Any]:
    """The budgets of the profile selected by the top-level ``profile`` key."""
    name = params.get("profile")
    if name not in params.get("profiles", {}):
        known = ", ".join(sorted(params.get("profiles", {}))) or "none defined"
        raise ParamsError(
            f"profile {name!r} is not defined in params.yaml (known profiles: {known}); "
            f"set `profile:` to one of them, e.g. `dvc exp run -S profile=smoke`"
        )
    return params["profiles"][name]


def require_positive_int(value: Any, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ParamsError(f"{key} must be a positive integer, got {value!r}")
    return value


def require_int(value: Any, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ParamsError(f"{key} must be a whole number, got {value!r}")
    return value


def require_positive_float(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ParamsError(f"{key} must be a positive number, got {value!r}")
    return float(value)


def require_choice(value: Any, key: str, choices: tuple[str, ...] | list[str]) -> str:
    if value not in choices:
        raise ParamsError(f"{key} must be one of {', '.join(map(str, choices))}; got {value!r}")
    return value
