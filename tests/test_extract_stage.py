"""The extract stage end to end on the smoke VLMs of all three families and synthetic scenes."""

import dataclasses
import json
import logging

import numpy as np
import pytest

from pipeline.attention import extract as X
from pipeline.attention.cache import iter_images, read_info
from pipeline.attention.params import ExtractParams, VlmModelParams
from pipeline.vlm_families import family_names
from pipeline.attention.vlm import load_vlm
from pipeline.datasets import DatasetError, load_dataset
from pipeline.synth import generate


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    ann = generate(out, 2, seed=2, width=160, height=120, mean_instances=2.5, max_instances=3, progress=False)
    ds = load_dataset(ann)
    assert all(len(im.instances) >= 2 for im in ds.images)
    return ds


PARAMS = ExtractParams(layers=[0, -1], max_new_tokens=4, sink_removal=True, store_heads=True)


@pytest.mark.parametrize("family", family_names())
def test_extract_end_to_end_and_prefix_reuse_equals_full_forward(dataset, tmp_path, family, caplog):
    vlm = load_vlm(VlmModelParams(profile="smoke", family=family, device="cpu"))
    with caplog.at_level(logging.INFO):
        out = X.run_extract(vlm, dataset, PARAMS, tmp_path / "attention.h5", progress=False)
    assert X.SMOKE_LOG_LINE in caplog.text
    # the occlusion answer's prefill serves the target prompts too
    assert f"image prefills per image: 1.00 ({len(dataset.images)} prefills for {len(dataset.images)} images)" in caplog.text
    assert "prefilled apart" not in caplog.text
    assert not (tmp_path / "attention.h5.parts").exists()
    info = read_info(out)
    n_layers = vlm.model.config.get_text_config().num_hidden_layers
    assert info.smoke and info.model_id == f"smoke/{family}" and info.layers == [0, n_layers - 1]
    assert info.params["extract"]["sink_removal"] is True
    assert info.prompt_templates == PARAMS.all_templates()
    images = list(iter_images(out, with_heads=True))
    assert [im.image_id for im in images] == [im.id for im in dataset.images]
    n_heads = vlm.model.config.get_text_config().num_attention_heads
    for im, rec in zip(images, dataset.images):
        T = len(im.placement)
        assert T > 0 and set(im.instances) == {i.id for i in rec.instances}
        # a random model answers no JSON: recorded per image, raw answer kept
        assert im.occlusion_error and im.occlusion_json == ""
        for inst in im.instances.values():
            assert inst.maps.shape == (2, T) and inst.maps.dtype == np.float32
            assert np.all(np.isfinite(inst.maps)) and np.all(inst.maps >= 0)
            assert np.all(inst.maps.sum(-1) <= 1 + 1e-5)
            assert inst.heads.shape == (2, n_heads, T)
            assert inst.target_tokens and inst.fallback in ("", "flat")
            assert "Look at the box [" in inst.query_text
            assert inst.occluder_names == [] and inst.occluder_ids == []
    # the no-reuse path (a full forward per prompt) gives the same maps and answers (first image)
    first = dataclasses.replace(dataset, images=dataset.images[:1])
    full = X.run_extract(vlm, first, PARAMS, tmp_path / "full.h5", reuse_prefix=False, progress=False)
    for a, b in zip(images[:1], iter_images(full, with_heads=True)):
        assert a.occlusion_raw == b.occlusion_raw
        for g in a.instances:
            np.testing.assert_allclose(a.instances[g].maps, b.instances[g].maps, atol=1e-6, rtol=1e-5)
            np.testing.assert_allclose(a.instances[g].heads, b.instances[g].heads, atol=1e-6, rtol=1e-5)


@pytest.fixture(scope="module")
def onevision():
    return load_vlm(VlmModelParams(profile="smoke", family="llava_onevision", device="cpu"))


def test_occlusion_answer_is_parsed_and_matched(dataset, tmp_path, onevision, monkeypatch):
    # a random model cannot write JSON: substitute the generated answer, keep everything else real
    rec = dataset.images[0]
    a, b = rec.instances[2], rec.instances[0]  # b: one of two instances of its category
    from pipeline.attention.prompts import category_phrase

    answer = json.dumps({"occlusions": [{"object": category_phrase(a.category_name),
                                         "occluded_by": [category_phrase(b.category_name), "unicorn"]}]})
    real = X.generate_answer_batch
    monkeypatch.setattr(X, "generate_answer_batch", lambda model, tok, prompts, n: dataclasses.replace(
        real(model, tok, prompts, n), texts=["Sure. " + answer] * len(prompts)))
    params = ExtractParams(layers=[-1], max_new_tokens=4)
    out = X.run_extract(onevision, dataset, params, tmp_path / "a.h5", progress=False)
    im = next(iter_images(out))
    assert im.occlusion_error == "" and json.loads(im.occlusion_json) == json.loads(answer)
    inst = im.instances[a.id]
    assert inst.occluder_names == [category_phrase(b.category_name), "unicorn"]
    from pipeline.attention.occlusion import boxes_overlap

    expected = [o.id for o in rec.instances if o.id != a.id and o.category_name == b.category_name
                and boxes_overlap(o.bbox, a.bbox)]
    assert inst.occluder_ids == expected and expected


def test_rerun_is_a_no_op_and_changed_params_reextract(dataset, tmp_path, onevision, monkeypatch):
    params = ExtractParams(layers=[-1], max_new_tokens=2, ask_occlusion=False)
    out = X.run_extract(onevision, dataset, params, tmp_path / "a.h5", progress=False)
    first = [im.instances for im in iter_images(out)]
    assert all(im.occlusion_error == X.OCCLUSION_NOT_ASKED for im in iter_images(out))
    calls = []
    monkeypatch.setattr(X, "extract_image", lambda *a, **k: calls.append(1))
    X.run_extract(onevision, dataset, params, out, progress=False)
    assert calls == []  # up to date: nothing recomputed
    monkeypatch.undo()
    changed = ExtractParams(layers=[-1], max_new_tokens=2, ask_occlusion=False, head_aggregation="lowest_entropy", top_k_heads=1)
    X.run_extract(onevision, dataset, changed, out, progress=False)
    assert read_info(out).params["extract"]["head_aggregation"] == "lowest_entropy"
    again = [im.instances for im in iter_images(out)]
    assert any(not np.allclose(again[0][g].maps, first[0][g].maps) for g in first[0])


def test_bad_image_is_a_clear_error(dataset, tmp_path, onevision):
    rec = dataset.images[0]
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    bad = dataclasses.replace(dataset, images=(dataclasses.replace(rec, path=broken),))
    with pytest.raises(DatasetError, match=rf"broken.jpg: image {rec.id} cannot be read"):
        X.run_extract(onevision, bad, ExtractParams(layers=[-1]), tmp_path / "a.h5", progress=False)
    wrong_size = dataclasses.replace(dataset, images=(dataclasses.replace(rec, width=rec.width + 1),))
    with pytest.raises(DatasetError, match="annotations say"):
        X.run_extract(onevision, wrong_size, ExtractParams(layers=[-1]), tmp_path / "b.h5", progress=False)


def test_layers_out_of_range_and_shared_prefix_guard(dataset, tmp_path, onevision):
    with pytest.raises(ValueError, match="out of range for a language model with 3 layers"):
        X.run_extract(onevision, dataset, ExtractParams(layers=[-16]), tmp_path / "a.h5", progress=False)
    # a target template that puts text before the image cannot share the image prefix
    from pipeline.attention.prompts import encode_prompt, target_question

    _, proc = onevision.model, onevision.processor
    proc_template = proc.chat_template
    try:
        proc.chat_template = proc_template.replace(
            "{{ '<|im_start|>' + message['role'] + ' ' }}",
            "{{ '<|im_start|>' + message['role'] + ' ' }}{% for c in message['content'] | selectattr('type', 'equalto', 'text') %}{{ c['text'] }}{% endfor %}")
        img = X.load_image(dataset.images[0])
        prompts = [encode_prompt(proc, img, target_question("Where is the {phrase}?", p, "")) for p in ("kiwi", "pear")]
        with pytest.raises(RuntimeError, match="must put the image before any text that differs"):
            X.shared_prefix_length(prompts)
    finally:
        proc.chat_template = proc_template


def test_free_listing_and_image_without_instances(dataset, tmp_path, onevision, monkeypatch):
    asked = []
    original = X.encode_prompt

    def spy(processor, image, question, *args, **kwargs):
        asked.append(question.text)
        return original(processor, image, question, *args, **kwargs)

    monkeypatch.setattr(X, "encode_prompt", spy)
    empty = dataclasses.replace(dataset.images[1], instances=())
    ds = dataclasses.replace(dataset, images=(dataset.images[0], empty))
    params = ExtractParams(layers=[-1], max_new_tokens=2, occlusion_listing="free")
    out = X.run_extract(onevision, ds, params, tmp_path / "a.h5", progress=False)
    assert params.all_templates()["occlusion_free"] in asked
    images = list(iter_images(out))
    assert images[1].instances == {} and images[1].occlusion_error == X.OCCLUSION_NO_INSTANCES
    assert len(images[1].placement) == len(images[0].placement) > 0
    # occlusion + one generic (sink) prompt per image; no prompt for the empty image
    assert len(asked) == len(dataset.images[0].instances) + 2


def test_cli_errors_are_clear(tmp_path, dataset, monkeypatch):
    import yaml
    from typer.testing import CliRunner

    from pipeline.cli import app

    runner = CliRunner()
    res = runner.invoke(app, ["extract", "--params", str(tmp_path / "missing.yaml")])
    assert res.exit_code == 1 and "parameter file not found" in res.output
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({
        "dataset": {"annotations": str(dataset.annotation_file)},
        "models": {"profile": "real", "vlm": {"id": "llava-hf/llava-1.5-7b-hf", "cache_dir": str(tmp_path / "hub")}},
        "extract": {},
    }))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    res = runner.invoke(app, ["extract", "--params", str(params), "--out", str(tmp_path / "a.h5")])
    assert res.exit_code == 1 and "hf download llava-hf/llava-1.5-7b-hf" in res.output
    assert not (tmp_path / "a.h5").exists()


def test_skipped_image_in_one_shard_completes_the_sharded_run(dataset, tmp_path, onevision):
    """An unreadable image leaves a skip part in its shard, so the merge finds every image done;
    the cache and its skip list equal a single-process run's."""
    from pipeline.datasets.skips import read_skips
    from pipeline.scaling.shards import Shard

    broken = tmp_path / "broken.png"
    broken.write_bytes(dataset.images[1].path.read_bytes()[:200])  # truncated
    ds = dataclasses.replace(dataset, images=(dataset.images[0], dataclasses.replace(dataset.images[1], path=broken)))
    kwargs = dict(progress=False, on_error="skip", max_skipped_fraction=0.5)
    one = X.run_extract(onevision, ds, PARAMS, tmp_path / "one.h5", **kwargs)
    two = tmp_path / "two.h5"
    for i in range(2):
        X.run_extract(onevision, ds, PARAMS, two, shard=Shard(i, 2, source="test"), **kwargs)
    assert two.read_bytes() == one.read_bytes()
    assert read_skips(two) == read_skips(one)
    assert [s.image_id for s in read_skips(two)] == [dataset.images[1].id]
    assert [im.image_id for im in iter_images(two)] == [dataset.images[0].id]
    assert not (tmp_path / "two.h5.parts").exists()
