#!/usr/bin/env bash
# End-to-end smoke run of the real DVC pipeline in a temporary copy of the repository:
# synthetic D2SA-format scenes, tiny random-weight models (every output marked SMOKE),
# `dvc repro`, then `dvc metrics show` and `dvc plots show`. SMOKE_FAMILY=qwen2_5_vl (or any
# models.vlm.family) picks the smoke VLM's family.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
py="${PYTHON:-$repo/.venv/bin/python}"
bindir="$(dirname "$py")"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
git clone -q "$repo" "$work/repo"
# the working tree's uncommitted files too, so a local run checks what is on disk
(cd "$repo" && git ls-files -co --exclude-standard -z) | (cd "$repo" && xargs -0 cp --parents -t "$work/repo" 2>/dev/null || true)
cd "$work/repo"
export PATH="$bindir:$PATH"
"$bindir/vlmsam" synth --out data/synth --images "${SMOKE_IMAGES:-3}" --seed 0 --width 320 --height 240
"$py" - <<'PY'
import os
from pipeline.profiles import SMOKE_OVERRIDES, write_profile
family = os.environ.get("SMOKE_FAMILY")
write_profile("params.yaml", "params.yaml", {
    **SMOKE_OVERRIDES,
    **({"models.vlm.family": family} if family else {}),
    "dataset.annotations": "data/synth/D2S_amodal_synth.json",
    "dataset.images": None,
})
PY
[ -d .dvc ] || "$bindir/dvc" init -q
"$bindir/dvc" repro
"$bindir/dvc" metrics show
"$bindir/dvc" plots show -o "$work/plots" >/dev/null
grep -q '"smoke": true' reports/metrics.json || { echo "smoke flag missing from reports/metrics.json"; exit 1; }
grep -q "SMOKE RUN" reports/report.md || { echo "SMOKE banner missing from reports/report.md"; exit 1; }
echo "smoke dvc repro: ok"
