#!/usr/bin/env bash
# Create .venv and install vlmsam with everything it needs (CPU torch first, then this package).
# pip's own progress (downloads, builds) is shown: the first install takes several minutes.
set -euo pipefail
cd "$(dirname "$0")"
step() { printf '\n==> [%s] %s\n' "$(date +%H:%M:%S)" "$*"; }
step "1/3 creating .venv"
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
step "2/3 installing torch 2.13.0 (CPU build, the largest download)"
.venv/bin/python -m pip install --progress-bar on torch==2.13.0
step "3/3 installing vlmsam and its dependencies (transformers, dvc, pycocotools, ...)"
# installs transformers inside the range pyproject.toml declares (the releases the suite passed on)
.venv/bin/python -m pip install --progress-bar on -e ".[dev]"
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
step "done: activate with '. .venv/bin/activate', then run 'dvc repro'"
