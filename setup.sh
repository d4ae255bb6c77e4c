#!/usr/bin/env bash
# Create .venv and install vlmsam with everything it needs (CPU torch from the local wheel).
set -euo pipefail
cd "$(dirname "$0")"
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q torch==2.13.0
# installs transformers inside the range pyproject.toml declares (the releases the suite passed on)
.venv/bin/python -m pip install -q -e ".[dev]"
.venv/bin/python - <<'PY'
import tomllib
from importlib.metadata import version
from packaging.requirements import Requirement

deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]
req = next(Requirement(d) for d in deps if Requirement(d).name == "transformers")
installed = version("transformers")
if installed not in req.specifier:
    raise SystemExit(f"transformers {installed} is installed but pyproject.toml declares {req}")
print(f"transformers {installed} ({req})")
PY
