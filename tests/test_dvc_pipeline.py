"""The README's main job in a temporary copy of the repository: `dvc repro` with the default
params.yaml (the embedded sample; no checkpoints here, so `models.profile: auto` runs the smoke
profile).

A first `dvc repro` runs the stages and writes reports/metrics.json, after which `dvc status`
names only the `proposals` fingerprint stage (always run) and a second `dvc repro` runs nothing else; changing a sampling parameter re-runs sample ->
decode -> evaluate and skips extract; metrics and plots are readable by `dvc metrics` / `dvc plots`;
`dvc exp run -S prompt_mode=box` from the repository root sweeps and `vlmsam compare` reports it.
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

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# what a fresh clone holds that the pipeline reads (tests, benchmarks, scripts are not needed)
# the fingerprint of dataset.proposals, run by every `dvc repro` (dvc.yaml; the others re-run
# only when it changes)
ALWAYS_RUN = {"proposals": ["always changed"]}
PROJECT_FILES = ("pipeline", "stages", "sample", "dvc.yaml", "params.yaml", ".gitignore", ".dvcignore", ".dvc")


def _env(root: Path) -> dict:
    """No real checkpoint reachable: an empty Hugging Face cache, HOME and weights folder."""
    env = {k: v for k, v in os.environ.items() if k not in ("VLMSAM_WEIGHTS_DIR", "HF_HOME", "HF_HUB_CACHE")}
    home = root.parent / "home"
    home.mkdir(exist_ok=True)
    return {**env, "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}", "HOME": str(home),
            "HF_HUB_CACHE": str(home / "hub"), "HF_HUB_OFFLINE": "1"}


def _run(args: list[str], cwd: Path) -> str:
    proc = subprocess.run(args, cwd=cwd, env=_env(cwd), capture_output=True, text=True)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout + proc.stderr


def _ran_stages(output: str) -> list[str]:
    return [line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage '")]


def _commit(root: Path, message: str) -> None:
    _run(["git", "add", "-A"], root)
    _run(["git", "commit", "-q", "-m", message], root)


def _compare_column(root: Path, out_name: str, column: str) -> dict:
    """`vlmsam compare --out out_name` in `root`: experiment name -> its value in `column`."""
    _run([str(BIN / "vlmsam"), "compare", "--out", out_name], root)
    rows = [line for line in (root / out_name).read_text().splitlines() if line.startswith("| ")]
    index = [c.strip() for c in rows[0].split("|")[1:-1]].index(column)
    return {line.split("|")[1].strip(): line.split("|")[1 + index].strip() for line in rows[1:]}


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A fresh-clone-like copy of the project, committed, params.yaml untouched."""
    return fresh_clone(tmp_path_factory.mktemp("clone") / "vlmsam")


def fresh_clone(root: Path) -> Path:
    """Copy the files a fresh clone holds into the new folder `root` and commit them."""
    root.mkdir()
    for name in PROJECT_FILES:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, root / name, ignore=shutil.ignore_patterns("__pycache__", "cache", "tmp"))
        else:
            shutil.copy(src, root / name)
    for args in (["git", "init", "-q"], ["git", "config", "user.email", "ci@vlmsam.test"],
                 ["git", "config", "user.name", "ci"]):
        _run(args, root)
    _commit(root, "fresh clone")
    return root


def test_repro_is_the_main_job_and_a_second_repro_runs_only_the_fingerprint(project):
    first = _run([str(BIN / "dvc"), "repro"], project)
    assert _ran_stages(first) == ["proposals", "extract", "sample", "decode", "evaluate", "gallery"]
    assert "models.profile auto: real checkpoints missing" in first and "SMOKE" in first
    metrics = json.loads((project / "reports" / "metrics.json").read_text())
    assert metrics["smoke"] is True and metrics["n_gt"] > 0
    assert "SMOKE RUN" in (project / "reports" / "report.md").read_text()
    gallery = (project / "reports" / "gallery" / "index.html").read_text()
    assert "SMOKE RUN" in gallery and gallery.count("data-gt-id") == 0  # cards are built in the browser
    assert len((project / "reports" / "gallery" / "gallery.csv").read_text().splitlines()) == metrics["n_gt"] + 1

    assert json.loads(_run([str(BIN / "dvc"), "status", "--json"], project)) == ALWAYS_RUN
    second = _run([str(BIN / "dvc"), "repro"], project)
    assert _ran_stages(second) == ["proposals"] and "Stage 'extract' didn't change, skipping" in second
    demo = _run([str(BIN / "vlmsam"), "demo"], project)  # an alias of the same `dvc repro`
    assert _ran_stages(demo) == ["proposals"] and "SMOKE RUN" in demo and "report: reports/report.md" in demo


def test_sampling_change_reruns_sample_decode_evaluate_only(project):
    if not (project / "dvc.lock").exists():
        _run([str(BIN / "dvc"), "repro"], project)
    extract_lock = yaml.safe_load((project / "dvc.lock").read_text())["stages"]["extract"]
    cache_mtime = (project / "cache" / "attention.h5").stat().st_mtime_ns
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["sample"]["n_pos"] = 1
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    status = json.loads(_run([str(BIN / "dvc"), "status", "--json"], project))
    assert set(status) == {"sample", *ALWAYS_RUN}  # the changed stage; repro runs its descendants
    out = _run([str(BIN / "dvc"), "repro"], project)
    assert _ran_stages(out) == ["proposals", "sample", "decode", "evaluate", "gallery"]
    assert "Stage 'extract' didn't change, skipping" in out
    assert yaml.safe_load((project / "dvc.lock").read_text())["stages"]["extract"] == extract_lock
    assert (project / "cache" / "attention.h5").stat().st_mtime_ns == cache_mtime

    assert json.loads(_run([str(BIN / "dvc"), "metrics", "show", "--json"], project))
    _run([str(BIN / "dvc"), "plots", "show"], project)  # writes dvc_plots/, git-ignored
    assert (project / "dvc_plots" / "index.html").exists()
    assert "dvc_plots" not in _run(["git", "status", "--porcelain"], project)


def test_exp_run_sweep_from_the_root_and_comparison_report(project):
    if not (project / "dvc.lock").exists():
        _run([str(BIN / "dvc"), "repro"], project)
    _commit(project, "baseline run")
    out = _run([str(BIN / "dvc"), "exp", "run", "-n", "pm-box", "-S", "prompt_mode=box"], project)
    assert _ran_stages(out) == ["proposals", "sample", "decode", "evaluate", "gallery"]
    _run([str(BIN / "vlmsam"), "compare", "--out", "compare.md"], project)
    report = (project / "compare.md").read_text()
    assert "SMOKE" in report.splitlines()[2]
    rows = [line for line in report.splitlines() if line.startswith("| ")]
    assert "prompt_mode" in rows[0]
    names = {line.split("|")[1].strip(): line for line in rows[1:]}
    assert "pm-box" in names and "| box |" in names["pm-box"]
    assert any("| points |" in line for line in names.values())


def test_launcher_is_not_a_stage_parameter(project):
    """Switching extract and decode to several processes changes no stage: the merged outputs
    are the bytes of one process (tests/test_scaling_stages.py)."""
    if not (project / "dvc.lock").exists():
        _run([str(BIN / "dvc"), "repro"], project)
    params_file = project / "params.yaml"
    original = params_file.read_text()
    params = yaml.safe_load(original)
    params["launch"]["launcher"] = "torchrun --nproc_per_node 8"
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        assert json.loads(_run([str(BIN / "dvc"), "status", "--json"], project)) == ALWAYS_RUN
    finally:
        params_file.write_text(original)


def _smoke_experiment(project, name: str, family: str, model_id: str):
    """`dvc exp run` of the whole smoke pipeline with the VLM of `family` (after a baseline repro);
    returns the attention cache's info."""
    from pipeline.attention.cache import read_info

    if not (project / "dvc.lock").exists():
        _run([str(BIN / "dvc"), "repro"], project)
        _commit(project, "baseline smoke run")
    # prompt_mode=points: the workspace may hold an earlier box-prompt experiment, whose decoder
    # never reads the attention, so DVC would restore evaluate from its run cache
    out = _run([str(BIN / "dvc"), "exp", "run", "-n", name, "-S", f"models.vlm.family={family}",
                "-S", f"models.vlm.id={model_id}", "-S", "prompt_mode=points"], project)
    assert _ran_stages(out) == ["proposals", "extract", "sample", "decode", "evaluate", "gallery"]
    info = read_info(project / "cache" / "attention.h5")
    assert info.smoke and info.model_id == f"smoke/{family}"
    metrics = json.loads((project / "reports" / "metrics.json").read_text())
    assert metrics["smoke"] is True and metrics["n_gt"] > 0
    return info


def test_qwen_experiment_beside_llava_in_comparison_report(project):
    """A smoke Qwen2.5-VL run of the whole pipeline as a DVC experiment, compared with the
    LLaVA baseline in one `vlmsam compare` report."""
    _smoke_experiment(project, "qwen25", "qwen2_5_vl", "Qwen/Qwen2.5-VL-7B-Instruct")
    families = _compare_column(project, "compare_qwen.md", "models.vlm.family")
    assert families["qwen25"] == "qwen2_5_vl"
    assert any(name != "qwen25" and value != "qwen2_5_vl" for name, value in families.items())


def test_qwen3_vl_smoke_experiment(project):
    """`models.vlm.family: qwen3_vl` runs the whole smoke pipeline under DVC."""
    info = _smoke_experiment(project, "qwen3", "qwen3_vl", "Qwen/Qwen3-VL-8B-Instruct")
    assert info.params["model"]["family"] == "qwen3_vl"


def test_sam2_experiment_runs_from_params_alone(project):
    """`dvc exp run -S models.segmenter.family=sam2` on the embedded sample: a smoke SAM 2.1 decode
    whose metrics.json names the segmenter, beside the other runs in `vlmsam compare`."""
    if not (project / "dvc.lock").exists():
        _run([str(BIN / "dvc"), "repro"], project)
        _commit(project, "baseline smoke run")
    try:
        out = _run([str(BIN / "dvc"), "exp", "run", "-n", "seg-sam2", "-S", "models.segmenter.family=sam2",
                    "-S", "prompt_mode=points"], project)
        ran = _ran_stages(out)
        assert "decode" in ran and "evaluate" in ran and "extract" not in ran and "sample" not in ran
        metrics = json.loads((project / "reports" / "metrics.json").read_text())
        assert metrics["run"]["segmenter"] == {"family": "sam2", "id": None}
        assert metrics["smoke"] is True and metrics["n_gt"] > 0 and metrics["counts"]["points_sent"]["negative"] > 0
        families = _compare_column(project, "compare_sam2.md", "models.segmenter.family")
        assert families["seg-sam2"] == "sam2" and "efficient_sam" in families.values()
    finally:
        _run(["git", "checkout", "--", "params.yaml"], project)  # later tests start from the default segmenter
