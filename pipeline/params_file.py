"""Reading `params.yaml`: the sections each stage needs, with clear errors."""

from __future__ import annotations

import os
from pathlib import Path

import yaml

DEFAULT_PARAMS = Path("params.yaml")


def load_params(path: str | os.PathLike = DEFAULT_PARAMS) -> dict:
    """The whole parameter file as a dict; a clear error when it is missing or malformed."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: parameter file not found")
    try:
        params = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not valid YAML ({e})") from e
    if not isinstance(params, dict):
        raise ValueError(f"{path}: expected a mapping of sections at the top level")
    return params


def section(params: dict, name: str, path: str | os.PathLike = DEFAULT_PARAMS) -> dict:
    """One top-level section of the parameter file; a clear error when absent."""
    if name not in params:
        raise KeyError(f"{path}: section '{name}' is missing")
    value = params[name]
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"{path}: section '{name}' must be a mapping")
    return value


def reject_unknown(where: str, d: dict, cls) -> None:
    """Raise a clear error when mapping `d` has keys that dataclass `cls` does not define."""
    from dataclasses import fields

    known = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ValueError(f"{where}: unknown parameter(s) {unknown}; known: {sorted(known)}")


def with_shared(d: dict | None, key: str, shared, where: str) -> dict:
    """A copy of section `d` with a top-level shared value (e.g. `prompt_mode`) filled in.

    The section may repeat the shared value but not contradict it.
    """
    d = dict(d or {})
    if shared is not None:
        if key in d and d[key] != shared:
            raise ValueError(f"{where}.{key} {d[key]!r} contradicts the top-level {key} {shared!r}; set one of them")
        d[key] = shared
    return d
