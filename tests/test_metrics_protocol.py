"""metrics.json's protocol, run and counts after a smoke decode + the evaluate stage on a
constructed case: known fallbacks (points file) and a known occlusion parse failure (cache)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from pipeline.attention.cache import CacheInfo
from pipeline.attention.params import ExtractParams
from pipeline.datasets import load_dataset
from pipeline.decoding.params import DecodeParams, SamModelParams
from pipeline.decoding.run import run_decode
from pipeline.decoding.sam import load_sam_models
from pipeline.synth import generate
from test_decode import occlusion_cache, points_file


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """Two synthetic scenes through a smoke decode (occluder_hull, VLM occluders) and the
    evaluate stage, in a folder laid out as the DVC project."""
    root = tmp_path_factory.mktemp("run")
    ann = generate(root / "data", 2, seed=5, width=160, height=120, image_format="png", progress=False)
    ds = load_dataset(ann)
    cache = root / "cache"
    cache.mkdir()
    extract = ExtractParams(sink_removal=True, layers=[3, 5])
    info = CacheInfo("smoke/llava_next", "rev-abc", {}, [3, 5],
                     {"extract": extract.to_dict(), "layers_resolved": [3, 5],
                      "model": {"id": "smoke/llava_next", "revision": "rev-abc", "family": "llava_next",
                                "dtype": "float32", "smoke": True}}, True)
    occlusion_cache(cache / "attention.h5", ds, info=info)
    points_file(cache / "points.parquet", ds, "points")  # the first instance of each image falls back: 'flat'
    params = DecodeParams(prompt_mode="points", completion="occluder_hull", occluders="vlm")
    models = load_sam_models("smoke", SamModelParams("vitt"), use_amodal_decoder=False)
    run_decode(ds, params, "smoke", SamModelParams(), cache / "points.parquet", cache / "attention.h5",
               cache / "pred_visible.json", cache / "pred_amodal.json", models=models)
    (root / "params.yaml").write_text(yaml.safe_dump({
        "dataset": {"flavour": "d2sa", "annotations": str(ann)},
        "models": {"profile": "smoke", "efficient_sam": {"variant": "vitt"}},
        "prompt_mode": "points",
        "decode": {"completion": "occluder_hull", "occluders": "vlm"},
        "evaluate": {"occlusion_bins": 4},
    }))
    return root, ds


def test_smoke_run_metrics_have_protocol_run_and_counts(smoke_run, monkeypatch):
    root, ds = smoke_run
    monkeypatch.chdir(root)
    from stages.evaluate import main

    metrics = main(["--params", "params.yaml"])
    assert json.loads(Path("reports/metrics.json").read_text()) == metrics
    assert metrics["smoke"] is True and metrics["unit"] == "fraction"

    p = metrics["protocol"]
    assert p["modal_given"] is False and p["amodal_ap"] == "reported"
    assert len(p["given"]) == 2 and "one amodal and one visible mask per ground-truth instance" in p["predictions"]

    run = metrics["run"]
    assert run["vlm"] == {"id": "smoke/llava_next", "revision": "rev-abc", "family": "llava_next",
                          "dtype": "float32"}
    assert run["efficient_sam"]["variant"] == "vitt" and run["layers"] == [3, 5]
    assert run["sink_removal"] is True and run["occlusion_listing"] == "listed"
    assert (run["prompt_mode"], run["completion"], run["occluder_rule"]) == ("points", "occluder_hull", "vlm")
    assert run["smoke"] is True

    # what the constructed inputs imply (see test_decode's points_file and occlusion_cache)
    first, second = ds.images
    expected_sources = {"overlap_parse_failed": len(second.instances), "vlm_none": 1, "overlap_unmatched": 1}
    for k, inst in enumerate(first.instances):
        if k not in (1, 2):
            source = "vlm" if inst.occluder_ids else "vlm_none"
            expected_sources[source] = expected_sources.get(source, 0) + 1
    c = metrics["counts"]
    assert c["images"] == 2 and c["instances"] == ds.instance_count() and c["skipped_images"] == 0
    assert c["fallbacks"] == {"total": 2, "flat": 2}
    assert c["occluder_sources"] == dict(sorted(expected_sources.items()))
    assert c["amodal_fields"]["completion"] == {"occluder_hull": ds.instance_count()}
    assert 0 <= c["amodal_equals_visible"] <= ds.instance_count()

    report = Path("reports/report.md").read_text()
    assert report.startswith("# Evaluation report\n\n> **SMOKE")
    head = report.split("## Mask AP")[0]
    for text in ("## Protocol", "## Run", "## Counts", "smoke/llava_next", '"flat": 2',
                 '"overlap_parse_failed": ' + str(len(second.instances))):
        assert text in head, text
