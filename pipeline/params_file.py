"""Reading `params.yaml`: the sections each stage needs, with clear errors."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import yaml

from pipeline.errors import InputFileError, ParamsError, VlmsamError

DEFAULT_PARAMS = Path("params.yaml")


def load_params(path: str | os.PathLike = DEFAULT_PARAMS) -> dict:
    """The whole parameter file as a dict; a clear error when it is missing, malformed or holds
    a key no section defines (at any level: see `pipeline.params_schema`)."""
    from pipeline.params_schema import check_known_keys

    path = Path(path)
    if not path.exists():
        raise InputFileError(f"{path}: parameter file not found")
    try:
        params = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ParamsError(f"{path}: not valid YAML ({' '.join(str(e).split())})") from e
    if not isinstance(params, dict):
        raise ParamsError(f"{path}: expected a mapping of sections at the top level")
    check_known_keys(params, path)
    return params


def section(params: dict, name: str, path: str | os.PathLike = DEFAULT_PARAMS) -> dict:
    """One top-level section of the parameter file; a clear error when absent."""
    if name not in params:
        raise ParamsError(f"{path}: section '{name}' is missing")
    value = params[name]
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ParamsError(f"{path}: section '{name}' must be a mapping")
    return value


def reject_unknown(where: str, d: dict, cls) -> None:
    """Raise a clear error when mapping `d` has keys that dataclass `cls` does not define."""
    from dataclasses import fields

    reject_unknown_keys(where, d, [f.name for f in fields(cls)])


def reject_unknown_keys(where: str, d: dict, known) -> None:
    """Raise a `ParamsError` naming `where`, the keys of `d` not in `known`, and the known ones."""
    unknown = sorted(set(d) - set(known), key=str)
    if unknown:
        raise ParamsError(f"{where}: unknown parameter(s) {unknown}; known: {sorted(known)}")


def with_shared(d: dict | None, key: str, shared, where: str) -> dict:
    """A copy of section `d` with a top-level shared value (e.g. `prompt_mode`) filled in.

    The section may repeat the shared value but not contradict it.
    """
    d = dict(d or {})
    if shared is not None:
        if key in d and d[key] != shared:
            raise ParamsError(f"{where}.{key} {d[key]!r} contradicts the top-level {key} {shared!r}; set one of them")
        d[key] = shared
    return d


@contextlib.contextmanager
def reading(path: str | os.PathLike):
    """Parse parameters of file `path` in the block: a bad value (ValueError, KeyError, TypeError
    raised by a section's dataclass) becomes a `ParamsError` naming the file, and a section's
    own `ParamsError` (of any subclass) names it too."""
    try:
        yield
    except ParamsError as e:
        if not str(e).startswith(f"{path}: "):
            e.args = (f"{path}: {e}", *e.args[1:])
        raise
    except VlmsamError:
        raise
    except (ValueError, KeyError, TypeError) as e:
        message = e.args[0] if isinstance(e, KeyError) and e.args else e
        raise ParamsError(f"{path}: {message}") from e
