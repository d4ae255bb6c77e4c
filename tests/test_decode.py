"""The decode stage end to end with seeded random EfficientSAM (ViT-T) on tiny synthetic scenes."""

from __future__ import annotations

import copy
import hashlib
import json

import cv2
import numpy as np
import pyarrow as pa
import pytest
from pycocotools.coco import COCO

from pipeline import masks as rle
from pipeline.attention.cache import AttentionCacheWriter, CacheInfo, ImageAttention, InstanceAttention, TokenPlacement
from pipeline.datasets import load_dataset
from pipeline.decoding.params import DecodeParams, SamModelParams, sam_models_from_section
from pipeline.decoding.prompts import PromptError, image_prompts
from pipeline.decoding.run import run_decode
from pipeline.decoding.sam import SamModels, load_sam_models
from pipeline.predictions import is_smoke, read_predictions
from pipeline.prompt_limits import MAX_DECODER_POINTS, PROMPT_MODES, point_budget
from pipeline.sampling.points_schema import SCHEMA, read_points, write_points
from pipeline.synth import generate

N_IMAGES = 2


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    """Two 160x120 synthetic scenes, loaded through the D2SA loader."""
    out = tmp_path_factory.mktemp("synth")
    ann = generate(out, N_IMAGES, seed=5, width=160, height=120, image_format="png", progress=False)
    ds = load_dataset(ann)
    assert ds.instance_count() >= 5
    return ds


@pytest.fixture(scope="module")
def models():
    """Seeded ViT-T whose image embeddings are memoised per image content: the encoder (seconds
    per image on CPU) runs once per image for the whole module; every call still goes through
    `get_image_embeddings`, so call counts stay observable."""
    m = load_sam_models("smoke", SamModelParams("vitt"), use_amodal_decoder=False)
    memo, encode = {}, m.model.get_image_embeddings

    def memoised(images):
        key = hashlib.sha1(images.numpy().tobytes()).hexdigest()
        if key not in memo:
            memo[key] = encode(images)
        return memo[key]

    m.model.get_image_embeddings = memoised
    return m


def points_file(path, ds, prompt_mode, n_points=None, smoke=True, with_mode=True):
    """A points file from GT visible masks: the deepest visible pixel first, then more positives
    and one negative in the box outside the amodal mask; the first instance falls back."""
    n_points = point_budget(prompt_mode) if n_points is None else n_points
    rng = np.random.default_rng(0)
    rows = {name: [] for name in SCHEMA.names}
    for im in ds.images:
        for k, inst in enumerate(im.instances):
            vis = rle.decode(inst.visible_rle)
            if k == 0:
                x, y, w, h = inst.bbox
                pts, fb = [(x + w / 2, y + h / 2, 1)], "flat"
            else:
                dist = cv2.distanceTransform(vis.astype(np.uint8), cv2.DIST_L2, 3)
                y0, x0 = np.unravel_index(np.argmax(dist), dist.shape)
                ys, xs = np.nonzero(vis)
                pick = rng.choice(len(xs), size=max(n_points - 2, 0))
                pts = [(x0, y0, 1)] + [(xs[i], ys[i], 1) for i in pick]
                out_y, out_x = np.nonzero(~rle.decode(inst.amodal_rle))
                pts.append((out_x[0], out_y[0], 0))
                pts, fb = pts[:n_points], ""
            for r, (px, py, lab) in enumerate(pts):
                for name, v in zip(SCHEMA.names, (im.id, inst.id, r, px, py, lab, 1.0, "peak", fb, "hashP")):
                    rows[name].append(v)
    params = {"prompt_mode": prompt_mode} if with_mode else {}
    write_points(path, pa.table(rows), {"params": params, "params_hash": "hashP", "smoke": smoke})
    return path


def occlusion_cache(path, ds, smoke=True, info=None):
    """An attention cache whose occlusion answers cover every rule: image 1 parsed with GT
    occluders (its 2nd instance: no occluders named, its 3rd: a name that matched nothing),
    image 2 failed to parse. `info`: the file attributes (default: a minimal smoke one)."""
    info = CacheInfo("smoke/llava_next", "", {}, [0], {"x": 1}, smoke) if info is None else info
    writer = AttentionCacheWriter(path, info)
    placement = TokenPlacement(np.zeros(1, np.int8), np.zeros(1, np.int32), np.zeros(1, np.int32),
                               np.array([[0, 0, 160, 120]], np.float32))
    for n, im in enumerate(ds.images):
        insts = {}
        for k, inst in enumerate(im.instances):
            names, ids = ["thing"] * len(inst.occluder_ids or ()), list(inst.occluder_ids or ())
            if k == 1:
                names, ids = [], []
            if k == 2:
                names, ids = ["ghost"], []
            insts[inst.id] = InstanceAttention(inst.id, inst.category_name, "q", ["t"], np.ones((1, 1), np.float32),
                                               names, ids)
        writer.write_image(ImageAttention(im.id, im.width, im.height, placement, insts,
                                          occlusion_error="no JSON" if n == 1 else ""))
    writer.finalize([im.id for im in ds.images])
    return path


def spy(monkeypatch, obj, name):
    calls = []
    original = getattr(obj, name)

    def wrapper(*args, **kwargs):
        calls.append((args, kwargs))
        return original(*args, **kwargs)

    monkeypatch.setattr(obj, name, wrapper)
    return calls


def outputs(tmp_path):
    return {"visible_path": tmp_path / "pred_visible.json", "amodal_path": tmp_path / "pred_amodal.json"}


@pytest.fixture(scope="module")
def reference_run(scenes, models, tmp_path_factory):
    """One uninterrupted run (points, occluder_hull, VLM occluders), shared by several tests."""
    d = tmp_path_factory.mktemp("ref")
    pts = points_file(d / "points.parquet", scenes, "points")
    cache = occlusion_cache(d / "attention.h5", scenes)
    params = DecodeParams(prompt_mode="points", completion="occluder_hull", occluders="vlm")
    summary = run_decode(scenes, params, "smoke", SamModelParams(), pts, cache, models=models, **outputs(d))
    return d, pts, cache, params, summary


def test_outputs_load_and_carry_their_fields(scenes, reference_run):
    d, _, _, _, summary = reference_run
    vis, amo = read_predictions(summary.visible_path), read_predictions(summary.amodal_path)
    n = scenes.instance_count()
    assert summary.n_visible == summary.n_amodal == len(vis) == len(amo) == n
    assert summary.smoke and is_smoke(vis) and is_smoke(amo)
    by_gt = {inst.id: (im, inst) for im in scenes.images for inst in im.instances}
    for v, a in zip(vis, amo):
        im, inst = by_gt[v["gt_id"]]
        assert (v["image_id"], v["category_id"]) == (a["image_id"], a["category_id"]) == (im.id, inst.category_id)
        assert v["segmentation"]["size"] == [im.height, im.width]
        assert np.isfinite(v["score"]) and np.isfinite(a["score"])  # random weights: any real number
        assert v["prompt_mode"] == a["prompt_mode"] == "points"
        assert a["completion"] == "occluder_hull" and a["modal_given"] is False
        assert set(a["occluder_ids"]) <= set(by_gt)
        # training-free completion only adds pixels to the decoded visible mask
        vm, am = rle.decode(v["segmentation"]), rle.decode(a["segmentation"])
        assert not (vm & ~am).any()
    firsts = {im.instances[0].id for im in scenes.images}
    assert all((e["fallback"] == "flat") == (e["gt_id"] in firsts) for e in vis)
    sources = {a["occluder_source"] for a in amo}
    assert {"vlm_none", "overlap_unmatched", "overlap_parse_failed"} <= sources
    # pycocotools accepts both files against a GT built from the dataset
    gt = COCO()
    gt.dataset = {
        "images": [{"id": im.id, "width": im.width, "height": im.height} for im in scenes.images],
        "annotations": [{"id": i.id, "image_id": im.id, "category_id": i.category_id, "segmentation": i.amodal_rle,
                         "area": rle.area(i.amodal_rle), "bbox": list(i.bbox), "iscrowd": 0}
                        for im in scenes.images for i in im.instances],
        "categories": [{"id": c, "name": n} for c, n in scenes.categories.items()],
    }
    gt.createIndex()
    for path in (summary.visible_path, summary.amodal_path):
        res = gt.loadRes(str(path))
        assert len(res.getAnnIds()) == n
    assert not (d / "pred_visible.json.parts").exists()


def test_one_embedding_and_one_batched_decoder_call_per_image(scenes, models, reference_run, tmp_path, monkeypatch):
    _, pts, cache, params, summary = reference_run
    enc = spy(monkeypatch, models.model, "get_image_embeddings")
    dec = spy(monkeypatch, models.model.mask_decoder, "forward")
    again = run_decode(scenes, params, "smoke", SamModelParams(), pts, cache, models=models, **outputs(tmp_path))
    assert len(enc) == len(dec) == N_IMAGES
    for (args, _), im in zip(dec, scenes.images):
        assert args[2].shape[:2] == (1, len(im.instances))  # prompt tokens [1, Q, 6, 256]
    # deterministic: the same files as the reference run
    assert again.visible_path.read_text() == summary.visible_path.read_text()
    assert again.amodal_path.read_text() == summary.amodal_path.read_text()


@pytest.mark.parametrize("mode", PROMPT_MODES)
def test_every_prompt_mode_stays_within_the_decoder_budget(scenes, models, mode, tmp_path, monkeypatch):
    one = scenes.__class__(scenes.name, scenes.annotation_file, scenes.images[:1], scenes.categories)
    pts = points_file(tmp_path / "p.parquet", one, mode)
    enc = spy(monkeypatch, models.model, "encode_prompts")
    params = DecodeParams(prompt_mode=mode, completion="visible")
    summary = run_decode(one, params, "smoke", SamModelParams(), pts, tmp_path / "none.h5", models=models, **outputs(tmp_path))
    (args, _), = enc
    labels = args[1]
    assert labels.shape[:2] == (1, len(one.images[0].instances))
    assert labels.shape[2] <= MAX_DECODER_POINTS
    n_box = (labels == 2).sum(-1)
    assert ((n_box == 1) if "box" in mode else (n_box == 0)).all()
    assert ((labels == 2).sum(-1) == (labels == 3).sum(-1)).all()
    has_points = ((labels == 0) | (labels == 1)).sum(-1)
    assert ((has_points > 0) if mode != "box" else (has_points == 0)).all()
    vis = read_predictions(summary.visible_path)
    assert {e["prompt_mode"] for e in vis} == {mode}
    if mode == "box":
        assert {e["fallback"] for e in vis} == {""}


def test_too_many_points_is_an_error_not_a_silent_cut(scenes, tmp_path):
    pts = points_file(tmp_path / "p.parquet", scenes, "points", n_points=MAX_DECODER_POINTS, with_mode=False)
    from pipeline.decoding.prompts import PointIndex

    index = PointIndex(read_points(pts)[0], pts)
    im = scenes.images[0]
    assert image_prompts(im.id, im.instances, "points", index).labels.shape[1] == MAX_DECODER_POINTS
    with pytest.raises(PromptError, match=r"p\.parquet: image \d+ instance \d+ has 8 prompt points.*at most 6"):
        image_prompts(im.id, im.instances, "points+box", index)
    with pytest.raises(PromptError, match="sampled for prompt_mode 'points'"):
        run_decode(scenes, DecodeParams(prompt_mode="points+box", completion="visible"), "smoke", SamModelParams(),
                   points_file(tmp_path / "q.parquet", scenes, "points"), tmp_path / "none.h5",
                   models=object(), **outputs(tmp_path))


def test_resume_after_a_crash_gives_the_uninterrupted_output(scenes, models, reference_run, tmp_path, monkeypatch):
    _, pts, cache, params, summary = reference_run
    import pipeline.decoding.run as run_module

    original = run_module.decode_one_image
    seen = []

    def crash_on_second(image, *a, **k):
        seen.append(image.id)
        if len(seen) == 2:
            raise KeyboardInterrupt("simulated crash")
        return original(image, *a, **k)

    monkeypatch.setattr(run_module, "decode_one_image", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        run_decode(scenes, params, "smoke", SamModelParams(), pts, cache, models=models, **outputs(tmp_path))
    assert not (tmp_path / "pred_visible.json").exists()
    parts = list((tmp_path / "pred_visible.json.parts").rglob("*.json"))
    assert len(parts) == 1
    monkeypatch.setattr(run_module, "decode_one_image", original)
    resumed = run_decode(scenes, params, "smoke", SamModelParams(), pts, cache, models=models, **outputs(tmp_path))
    assert resumed.decoded_images == N_IMAGES - 1
    assert resumed.visible_path.read_text() == summary.visible_path.read_text()
    assert resumed.amodal_path.read_text() == summary.amodal_path.read_text()


def test_changed_parameters_discard_old_parts(scenes, models, reference_run, tmp_path):
    _, pts, cache, _, _ = reference_run
    scenes = scenes.__class__(scenes.name, scenes.annotation_file, scenes.images[:1], scenes.categories)
    parts = tmp_path / "pred_visible.json.parts" / "stale"
    parts.mkdir(parents=True)
    (parts / f"{scenes.images[0].id}.json").write_text(json.dumps({"visible": [], "amodal": []}))
    summary = run_decode(scenes, DecodeParams(completion="occluder_box", occluders="gt"), "smoke", SamModelParams(),
                         pts, cache, models=models, **outputs(tmp_path))
    assert summary.decoded_images == 1 and summary.n_visible == scenes.instance_count()
    amo = read_predictions(summary.amodal_path)
    assert {a["occluder_source"] for a in amo} == {"gt"}


def test_modal_given_and_amodal_decoder(scenes, models, tmp_path, monkeypatch):
    one = scenes.__class__(scenes.name, scenes.annotation_file, scenes.images[:1], scenes.categories)
    pts = points_file(tmp_path / "p.parquet", one, "points", smoke=False)
    # modal-given: amodal from GT visible masks with GT occluders; occluder_box on GT equals amodal
    # wherever the occluders' visible parts cover the hidden part of the box
    models = SamModels(models.model, copy.deepcopy(models.model.mask_decoder), True, models.provenance)
    summary = run_decode(one, DecodeParams(completion="occluder_box", occluders="gt", modal_given=True), "smoke",
                         SamModelParams(), pts, tmp_path / "none.h5", models=models, **outputs(tmp_path))
    amo = read_predictions(summary.amodal_path)
    for a, inst in zip(amo, one.images[0].instances):
        assert a["modal_given"] is True and a["score"] == 1.0
        vis, am, pred = rle.decode(inst.visible_rle), rle.decode(inst.amodal_rle), rle.decode(a["segmentation"])
        assert not (vis & ~pred).any()
        if not inst.occluder_ids:
            assert np.array_equal(pred, vis)
    # learned amodal decoder: same embedding and prompt tokens, a second decoder call
    enc = spy(monkeypatch, models.model, "get_image_embeddings")
    prompts = spy(monkeypatch, models.model, "encode_prompts")
    amodal_calls = spy(monkeypatch, models.amodal_decoder, "forward")
    summary = run_decode(one, DecodeParams(completion="decoder"), "smoke", SamModelParams(), pts,
                         tmp_path / "none.h5", models=models, **outputs(tmp_path / "dec"))
    assert len(enc) == len(prompts) == len(amodal_calls) == 1
    vis, amo = read_predictions(summary.visible_path), read_predictions(summary.amodal_path)
    assert {a["completion"] for a in amo} == {"decoder"}
    assert all(a["occluder_source"] is None for a in amo)
    # the smoke amodal decoder is a copy of the visible one: identical masks and scores
    assert [a["segmentation"] for a in amo] == [v["segmentation"] for v in vis]
    assert all(v["smoke"] for v in vis)  # EfficientSAM random although the points were not smoke


def test_amodal_decoder_from_a_state_dict_file(tmp_path):
    import torch

    base = load_sam_models("smoke", SamModelParams(), use_amodal_decoder=False)
    sd = {f"mask_decoder.{k}": v * 0.5 for k, v in base.model.mask_decoder.state_dict().items()}
    torch.save(sd, tmp_path / "amodal.pt")
    m = load_sam_models("smoke", SamModelParams(amodal_decoder=str(tmp_path / "amodal.pt")), use_amodal_decoder=True)
    assert m.provenance["amodal_decoder"] == str(tmp_path / "amodal.pt")
    w = m.amodal_decoder.state_dict()
    assert all(torch.equal(w[k], sd[f"mask_decoder.{k}"]) for k in w)
    with pytest.raises(FileNotFoundError, match="missing.pt: amodal decoder weights not found"):
        load_sam_models("smoke", SamModelParams(amodal_decoder=str(tmp_path / "missing.pt")), use_amodal_decoder=True)


def test_real_profile_never_falls_back_to_random_weights(tmp_path, monkeypatch):
    from pipeline.weights import MissingWeightsError

    monkeypatch.setenv("VLMSAM_WEIGHTS_DIR", str(tmp_path))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(MissingWeightsError, match="efficient_sam_vitt.pt"):
        load_sam_models("real", SamModelParams("vitt"), use_amodal_decoder=False)
    with pytest.raises(MissingWeightsError):
        load_sam_models("real", SamModelParams("vitt", checkpoint=str(tmp_path / "nope.pt")), use_amodal_decoder=False)


def test_params_sections():
    profile, sam = sam_models_from_section({"profile": "real", "efficient_sam": {"variant": "vits"}, "vlm": "x"})
    assert profile == "real" and sam == SamModelParams("vits")
    with pytest.raises(ValueError, match="models.profile"):
        sam_models_from_section({"efficient_sam": {}})
    with pytest.raises(ValueError, match=r"models.efficient_sam: unknown parameter\(s\) \['size'\]"):
        sam_models_from_section({"profile": "smoke", "efficient_sam": {"size": 1}})
    with pytest.raises(ValueError, match=r"decode: unknown parameter\(s\) \['bogus'\]"):
        DecodeParams.from_dict({"bogus": 1})
    assert DecodeParams.from_dict({}, shared_prompt_mode="box").prompt_mode == "box"
    with pytest.raises(ValueError, match="contradicts the top-level prompt_mode"):
        DecodeParams.from_dict({"prompt_mode": "points"}, shared_prompt_mode="box")
    with pytest.raises(ValueError, match="modal_given applies to training-free"):
        DecodeParams(completion="decoder", modal_given=True)
    with pytest.raises(ValueError, match="decode.completion"):
        DecodeParams(completion="magic")


def test_stage_module_and_cli(scenes, models, reference_run, tmp_path, monkeypatch):
    """`python -m stages.decode` reads params.yaml; `vlmsam decode` takes the same settings."""
    import yaml
    from typer.testing import CliRunner

    import pipeline.decoding.run as run_module
    import stages.decode
    from pipeline.cli import app

    _, pts, cache, _, summary = reference_run
    monkeypatch.setattr(run_module, "load_sam_models", lambda *a, **k: models)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "points.parquet").write_bytes(pts.read_bytes())
    (tmp_path / "cache" / "attention.h5").write_bytes(cache.read_bytes())
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({
        "dataset": {"annotations": str(scenes.annotation_file)},
        "models": {"profile": "smoke", "vlm": "ignored here", "efficient_sam": {"variant": "vitt"}},
        "prompt_mode": "points",
        "decode": {"completion": "occluder_hull", "occluders": "vlm"},
    }))
    result = stages.decode.main(["--params", "params.yaml"])
    assert result.smoke and result.n_visible == scenes.instance_count()
    assert (tmp_path / "cache/pred_visible.json").read_text() == summary.visible_path.read_text()
    assert (tmp_path / "cache/pred_amodal.json").read_text() == summary.amodal_path.read_text()

    runner = CliRunner()
    out = runner.invoke(app, ["decode", "--annotations", str(scenes.annotation_file), "--profile", "smoke",
                              "--out-visible", "v.json", "--out-amodal", "a.json", "--completion", "occluder_hull"])
    assert out.exit_code == 0, out.output
    assert "SMOKE" in out.output
    assert (tmp_path / "a.json").read_text() == summary.amodal_path.read_text()

    monkeypatch.setattr(run_module, "load_sam_models", load_sam_models)
    monkeypatch.setenv("VLMSAM_WEIGHTS_DIR", str(tmp_path))
    monkeypatch.setenv("HOME", str(tmp_path))
    out = runner.invoke(app, ["decode", "--annotations", str(scenes.annotation_file), "--profile", "real",
                              "--out-visible", "v2.json", "--out-amodal", "a2.json"])
    assert out.exit_code == 1
    assert "efficient_sam_vitt.pt" in out.output and not (tmp_path / "v2.json").exists()


def test_input_errors_name_the_file_and_record(scenes, tmp_path):
    import dataclasses

    import torch

    from pipeline.datasets.skips import ImageSkipError
    from pipeline.decoding.sam import load_image

    pts = points_file(tmp_path / "p.parquet", scenes, "points")
    table, meta = read_points(pts)
    last = scenes.images[-1].instances[-1]
    keep = [g != last.id for g in table.column("gt_id").to_pylist()]
    write_points(tmp_path / "short.parquet", table.filter(pa.array(keep)), meta)
    with pytest.raises(PromptError, match=rf"short\.parquet: no points for 1 instance.*\({scenes.images[-1].id}, {last.id}\)"):
        run_decode(scenes, DecodeParams(completion="visible"), "smoke", SamModelParams(), tmp_path / "short.parquet",
                   tmp_path / "none.h5", models=object(), **outputs(tmp_path))
    from pipeline.attention.cache import CacheFormatError

    with pytest.raises(CacheFormatError, match="none.h5: attention cache not found"):
        run_decode(scenes, DecodeParams(completion="occluder_box", occluders="vlm"), "smoke", SamModelParams(), pts,
                   tmp_path / "none.h5", models=object(), **outputs(tmp_path))
    im = scenes.images[0]
    with pytest.raises(ImageSkipError, match=rf"gone\.png: image {im.id} cannot be read"):
        load_image(tmp_path / "gone.png", im.width, im.height, im.id)
    with pytest.raises(ImageSkipError, match=rf"image {im.id} is 160x120 pixels but the annotations say 161x120"):
        load_image(im.path, im.width + 1, im.height, im.id)
    no_gt = scenes.__class__(scenes.name, scenes.annotation_file, (dataclasses.replace(
        im, instances=tuple(dataclasses.replace(i, occluder_ids=None) for i in im.instances)),), scenes.categories)
    memo_free = load_sam_models("smoke", SamModelParams(), use_amodal_decoder=False)
    memo_free.model.get_image_embeddings = lambda images: torch.zeros(1, 256, 64, 64)  # never the point here
    with pytest.raises(ValueError, match=rf"D2S_amodal_synth.json: image {im.id}: instance \d+: occluders='gt' but"):
        run_decode(no_gt, DecodeParams(completion="occluder_box", occluders="gt"), "smoke", SamModelParams(), pts,
                   tmp_path / "none.h5", models=memo_free, **outputs(tmp_path))
    assert not (tmp_path / "pred_visible.json").exists()


def test_unreadable_image_is_skipped_or_stops(scenes, models, tmp_path):
    import dataclasses

    from pipeline.datasets.skips import IMAGE_UNREADABLE, ImageSkipError, read_skips

    pts = points_file(tmp_path / "p.parquet", scenes, "points")
    first = scenes.images[0]
    broken = tmp_path / "broken.png"
    broken.write_bytes(first.path.read_bytes()[:200])  # truncated PNG
    ds = dataclasses.replace(scenes, images=(dataclasses.replace(first, path=broken), *scenes.images[1:]))
    with pytest.raises(ImageSkipError, match=rf"broken\.png: image {first.id} cannot be read"):
        run_decode(ds, DecodeParams(completion="visible"), "smoke", SamModelParams(), pts, tmp_path / "none.h5",
                   models=models, **outputs(tmp_path))
    summary = run_decode(ds, DecodeParams(completion="visible"), "smoke", SamModelParams(), pts,
                         tmp_path / "none.h5", models=models, on_error="skip", max_skipped_fraction=0.5,
                         **outputs(tmp_path))
    (skip,) = read_skips(tmp_path / "pred_amodal.json")
    assert (skip.stage, skip.reason, skip.image_id, skip.instances) == ("decode", IMAGE_UNREADABLE, first.id,
                                                                        len(first.instances))
    assert {e["image_id"] for e in read_predictions(tmp_path / "pred_amodal.json")} == {
        im.id for im in scenes.images[1:]}
    assert summary.n_amodal == scenes.instance_count() - len(first.instances)


def test_skipped_image_in_one_shard_completes_the_sharded_run(scenes, models, tmp_path):
    """An image one shard cannot read leaves a skip part, so the other shard's merge finds every
    image done; files and skip list equal a single-process run's."""
    import dataclasses

    from pipeline.datasets.skips import read_skips
    from pipeline.scaling.shards import Shard

    pts = points_file(tmp_path / "p.parquet", scenes, "points")
    broken = tmp_path / "broken.png"
    broken.write_bytes(scenes.images[0].path.read_bytes()[:200])  # truncated PNG
    ds = dataclasses.replace(scenes, images=(dataclasses.replace(scenes.images[0], path=broken), *scenes.images[1:]))
    kwargs = dict(models=models, on_error="skip", max_skipped_fraction=0.5)
    one = tmp_path / "one"
    run_decode(ds, DecodeParams(completion="visible"), "smoke", SamModelParams(), pts, tmp_path / "none.h5",
               **outputs(one), **kwargs)
    two = tmp_path / "two"
    summaries = [run_decode(ds, DecodeParams(completion="visible"), "smoke", SamModelParams(), pts,
                            tmp_path / "none.h5", shard=Shard(i, 2, source="test"), **outputs(two), **kwargs)
                 for i in range(2)]
    assert summaries[0].n_amodal is None and summaries[1].n_amodal is not None  # the last shard merged
    for name in ("pred_visible.json", "pred_amodal.json"):
        assert (two / name).read_bytes() == (one / name).read_bytes()
    assert read_skips(two / "pred_amodal.json") == read_skips(one / "pred_amodal.json")
    (skip,) = read_skips(two / "pred_amodal.json")
    assert skip.image_id == scenes.images[0].id
    assert not (two / "pred_visible.json.parts").exists()
