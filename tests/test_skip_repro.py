"""A synthetic dataset with one truncated image and one malformed annotation record runs through
`dvc repro` to the end under `dataset.on_error: skip` (smoke profile), and metrics.json counts
what was left out; under `stop` the extract stage fails naming the image; beyond
`dataset.max_skipped_fraction` it fails saying so."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.datasets.skips import ANNOTATION_MALFORMED, IMAGE_UNREADABLE, read_skips
from pipeline.profiles import SMOKE_OVERRIDES, apply_overrides, write_params, write_profile
from pipeline.synth import generate

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _run(args: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def broken_project(tmp_path_factory):
    """The pipeline with 3 synthetic images: image 2's file truncated, one annotation of image 3
    with an RLE of the wrong size."""
    root = tmp_path_factory.mktemp("skiprepro")
    for name in ("pipeline", "stages"):
        shutil.copytree(REPO / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("dvc.yaml", ".gitignore"):
        shutil.copy(REPO / name, root / name)
    annotations = generate(root / "data" / "synth", 3, seed=4, width=160, height=120, progress=False)
    data = json.loads(annotations.read_text())
    truncated = data["images"][1]
    image_file = annotations.parent / truncated["file_name"]
    image_file.write_bytes(image_file.read_bytes()[: image_file.stat().st_size // 2])
    third = data["images"][2]["id"]
    bad = next(a for a in data["annotations"] if a["image_id"] == third)
    bad["segmentation"]["size"] = [bad["segmentation"]["size"][0], bad["segmentation"]["size"][1] + 1]
    annotations.write_text(json.dumps(data))
    write_profile(REPO / "params.yaml", root / "params.yaml", {
        **SMOKE_OVERRIDES,
        "dataset.annotations": str(annotations.relative_to(root)),
        "dataset.images": None,
        "dataset.on_error": "skip",
        "dataset.max_skipped_fraction": 0.5,
    })
    for args in (["git", "init", "-q"], [str(BIN / "dvc"), "init", "-q"]):
        _run(args, root)
    n_truncated = sum(a["image_id"] == truncated["id"] for a in data["annotations"])
    return root, truncated, image_file, bad, n_truncated, len(data["annotations"])


def test_repro_skips_and_finishes(broken_project):
    root, truncated, image_file, bad, n_truncated, n_annotations = broken_project
    _run([str(BIN / "dvc"), "repro"], root)
    metrics = json.loads((root / "reports" / "metrics.json").read_text())
    assert metrics["skipped"] == {"images": 1, "instances": n_truncated + 1,
                                  "reasons": {ANNOTATION_MALFORMED: 1, IMAGE_UNREADABLE: 1}}
    # the truncated image's instances stay in the ground truth (misses); the bad record cannot
    assert metrics["n_gt"] == n_annotations - 1
    assert metrics["n_pred"] == n_annotations - 1 - n_truncated
    report = (root / "reports" / "report.md").read_text()
    assert f"skipped (dataset.on_error): 1 images, {n_truncated + 1} ground-truth instances" in report
    skips = read_skips(root / "cache" / "pred_amodal.json")
    by_reason = {s.reason: s for s in skips}
    assert by_reason[IMAGE_UNREADABLE].image_id == truncated["id"]
    assert by_reason[IMAGE_UNREADABLE].file.endswith(truncated["file_name"])
    assert by_reason[ANNOTATION_MALFORMED].annotation_id == bad["id"]
    for stage_output in ("attention.h5", "points.parquet"):
        assert read_skips(root / "cache" / stage_output) == skips


def test_stop_names_the_image_and_the_fraction_limit_fails(broken_project):
    root, truncated, image_file, bad, *_ = broken_project
    params = yaml.safe_load((root / "params.yaml").read_text())
    for overrides, expected in (
        ({"dataset.on_error": "stop"}, f"annotation id {bad['id']}"),  # the loader meets it first
        ({"dataset.max_skipped_fraction": 0.1}, "1 of 3 images skipped (33.33%), more than "
                                                "dataset.max_skipped_fraction = 0.1"),
    ):
        write_params(root / "other.yaml", apply_overrides(params, overrides))
        proc = _run([sys.executable, "-m", "stages.extract", "--params", "other.yaml", "--out", "other.h5"],
                    root, check=False)
        assert proc.returncode != 0
        assert expected in proc.stderr, proc.stderr
    # stop with only the truncated image wrong: the error names the image file and id
    data = json.loads((root / params["dataset"]["annotations"]).read_text())
    data["annotations"] = [a for a in data["annotations"] if a["id"] != bad["id"]]
    (root / "only_image.json").write_text(json.dumps(data))
    only_image = apply_overrides(params, {"dataset.on_error": "stop", "dataset.annotations": "only_image.json",
                                          "dataset.images": str(Path(params["dataset"]["annotations"]).parent)})
    write_params(root / "other.yaml", only_image)
    proc = _run([sys.executable, "-m", "stages.extract", "--params", "other.yaml", "--out", "other.h5"],
                root, check=False)
    assert proc.returncode != 0
    assert f"{image_file.name}: image {truncated['id']} cannot be read" in proc.stderr, proc.stderr
