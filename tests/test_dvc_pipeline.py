"""The DVC pipeline in a temporary repository (smoke profile, synthetic scenes).

`dvc repro` runs the four stages; changing a sampling parameter re-runs sample -> decode ->
evaluate and skips extract; metrics and plots are readable by `dvc metrics` / `dvc plots`;
`dvc exp run -S prompt_mode=...` sweeps and `vlmsam compare` puts them in one report.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.profiles import SMOKE_OVERRIDES, write_profile
from pipeline.synth import generate

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _run(args: list[str], cwd: Path) -> str:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout + proc.stderr


def _ran_stages(output: str) -> list[str]:
    return [line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage '")]


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A copy of the pipeline (code, dvc.yaml, params.yaml) with a smoke profile and 2 synthetic images."""
    root = tmp_path_factory.mktemp("dvcproject")
    for name in ("pipeline", "stages"):
        shutil.copytree(REPO / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("dvc.yaml", ".gitignore"):  # .gitignore: cache/ and reports/ stay out of git, as here
        shutil.copy(REPO / name, root / name)
    annotations = generate(root / "data" / "synth", 2, seed=1, width=256, height=192, progress=False)
    write_profile(REPO / "params.yaml", root / "params.yaml", {
        **SMOKE_OVERRIDES,
        "dataset.annotations": str(annotations.relative_to(root)),
        "dataset.images": None,
    })
    for args in (["git", "init", "-q"], ["git", "config", "user.email", "ci@vlmsam.test"],
                 ["git", "config", "user.name", "ci"], [str(BIN / "dvc"), "init", "-q"]):
        _run(args, root)
    return root


def _commit(root: Path, message: str) -> None:
    _run(["git", "add", "-A"], root)
    _run(["git", "commit", "-q", "-m", message], root)


def test_repro_then_sampling_change_skips_extract(project):
    first = _run([str(BIN / "dvc"), "repro"], project)
    assert _ran_stages(first) == ["extract", "sample", "decode", "evaluate"]
    extract_lock = yaml.safe_load((project / "dvc.lock").read_text())["stages"]["extract"]
    cache_mtime = (project / "cache" / "attention.h5").stat().st_mtime_ns

    metrics = json.loads((project / "reports" / "metrics.json").read_text())
    assert metrics["smoke"] is True and metrics["n_gt"] > 0
    assert "SMOKE RUN" in (project / "reports" / "report.md").read_text()

    params = yaml.safe_load((project / "params.yaml").read_text())
    params["sample"]["n_pos"] = 1
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    status = json.loads(_run([str(BIN / "dvc"), "status", "--json"], project))
    assert set(status) == {"sample"}  # dvc status names the changed stage; repro runs its descendants

    second = _run([str(BIN / "dvc"), "repro"], project)
    assert _ran_stages(second) == ["sample", "decode", "evaluate"]
    assert "Stage 'extract' didn't change, skipping" in second
    assert yaml.safe_load((project / "dvc.lock").read_text())["stages"]["extract"] == extract_lock
    assert (project / "cache" / "attention.h5").stat().st_mtime_ns == cache_mtime

    shown = json.loads(_run([str(BIN / "dvc"), "metrics", "show", "--json"], project))
    assert shown, "dvc metrics show found no metrics"
    out = project / "plots_html"
    _run([str(BIN / "dvc"), "plots", "show", "-o", str(out)], project)
    assert (out / "index.html").exists()


def test_exp_run_sweep_and_comparison_report(project):
    if not (project / "dvc.lock").exists():
        _run([str(BIN / "dvc"), "repro"], project)
    _commit(project, "baseline smoke run")
    out = _run([str(BIN / "dvc"), "exp", "run", "-n", "pm-box", "-S", "prompt_mode=box"], project)
    assert _ran_stages(out) == ["sample", "decode", "evaluate"]
    _run([str(BIN / "vlmsam"), "compare", "--out", "compare.md"], project)
    report = (project / "compare.md").read_text()
    assert "SMOKE" in report.splitlines()[2]
    rows = [line for line in report.splitlines() if line.startswith("| ")]
    assert "prompt_mode" in rows[0]
    names = {line.split("|")[1].strip(): line for line in rows[1:]}
    assert "pm-box" in names and "| box |" in names["pm-box"]
    assert any("| points |" in line for line in names.values())


def test_qwen_experiment_beside_llava_in_comparison_report(project):
    """A smoke Qwen2.5-VL run of the whole pipeline as a DVC experiment, compared with the
    LLaVA baseline in one `vlmsam compare` report."""
    from pipeline.attention.cache import read_info

    if not (project / "dvc.lock").exists():
        _run([str(BIN / "dvc"), "repro"], project)
        _commit(project, "baseline smoke run")
    # prompt_mode=points: the workspace may hold an earlier box-prompt experiment, whose decoder
    # never reads the attention, so DVC would restore evaluate from its run cache
    out = _run([str(BIN / "dvc"), "exp", "run", "-n", "qwen25", "-S", "models.vlm.family=qwen2_5_vl",
                "-S", "models.vlm.id=Qwen/Qwen2.5-VL-7B-Instruct", "-S", "prompt_mode=points"], project)
    assert _ran_stages(out) == ["extract", "sample", "decode", "evaluate"]
    info = read_info(project / "cache" / "attention.h5")
    assert info.smoke and info.model_id == "smoke/qwen2_5_vl"
    metrics = json.loads((project / "reports" / "metrics.json").read_text())
    assert metrics["smoke"] is True and metrics["n_gt"] > 0
    _run([str(BIN / "vlmsam"), "compare", "--out", "compare_qwen.md"], project)
    rows = [line for line in (project / "compare_qwen.md").read_text().splitlines() if line.startswith("| ")]
    header = [c.strip() for c in rows[0].split("|")[1:-1]]
    family = header.index("models.vlm.family")
    families = {line.split("|")[1].strip(): line.split("|")[1 + family].strip() for line in rows[1:]}
    assert families["qwen25"] == "qwen2_5_vl"
    assert any(name != "qwen25" and value != "qwen2_5_vl" for name, value in families.items())
