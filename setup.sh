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
.venv/bin/python -m pip install --progress-bar on -e ".[dev]"
step "done: activate with '. .venv/bin/activate', then run 'dvc repro'"
