#!/usr/bin/env bash
# The README's main job on a fresh clone: `dvc repro` with the default params.yaml (the embedded
# sample; without real checkpoints `models.profile: auto` runs the smoke profile, every output
# marked SMOKE), then `dvc status` must report nothing to do but the always-run `proposals`
# fingerprint stage (dvc.yaml), and metrics and plots must show.
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
dvc repro
status="$(dvc status --json)"
echo "$status"
[ "$status" = '{"proposals": ["always changed"]}' ] || { echo "dvc status is not clean after dvc repro"; exit 1; }
test -f reports/metrics.json || { echo "reports/metrics.json missing"; exit 1; }
test -f reports/gallery/index.html || { echo "reports/gallery/index.html missing"; exit 1; }
dvc metrics show
dvc plots show -o "$work/plots" >/dev/null
if grep -q '"smoke": true' reports/metrics.json; then
    grep -q "SMOKE RUN" reports/report.md || { echo "SMOKE banner missing from reports/report.md"; exit 1; }
    grep -q "SMOKE RUN" reports/gallery/index.html || { echo "SMOKE banner missing from reports/gallery/index.html"; exit 1; }
fi
echo "dvc repro on the embedded sample: ok"
