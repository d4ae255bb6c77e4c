"""Prompt routing per segmenter (decode.negatives) and the decode stage over every family."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from pipeline.decoding.params import DecodeParams, SamModelParams
from pipeline.decoding.prompts import ImagePrompts, PromptError
from pipeline.decoding.routing import points_sent_counts, route
from pipeline.decoding.run import run_decode
from pipeline.decoding.sam import load_sam_models
from pipeline.errors import ParamsError
from pipeline.predictions import read_predictions
from pipeline.segmenters import family_names, get_family
from pipeline.segmenters.params import SegmenterParams
from tests.test_decode import occlusion_cache, outputs, points_file, scenes  # noqa: F401  (fixture)

PROMPTS = ImagePrompts(
    np.array([[[1, 1], [9, 9], [2, 3], [4, 4]], [[5, 5], [6, 6], [7, 7], [-1, -1]]], np.float32),
    np.array([[2, 3, 1, 0], [1, 0, 0, -1]], np.int64),
    ("", ""),
)


@pytest.mark.parametrize("negatives, trained, expected", [
    ("auto", False, [[1], [1]]), ("auto", True, [[1, 0], [1, 0, 0]]),
    ("always", False, [[1, 0], [1, 0, 0]]), ("never", True, [[1], [1]]),
])
def test_routing_sends_what_the_family_reads(negatives, trained, expected):
    routed = route(PROMPTS, negatives, trained)
    assert [s["labels"] for s in routed.sent] == expected
    assert routed.sent[0]["box"] == [1.0, 1.0, 9.0, 9.0] and routed.sent[1]["box"] is None
    assert routed.queries.boxes.shape == (2, 4)
    sent_labels = routed.queries.labels[routed.queries.labels != -1]
    assert sorted(sent_labels.tolist()) == sorted(sum(expected, []))
    counts = points_sent_counts([{"points_sent": s} for s in routed.sent])
    assert counts == {"positive": 2, "negative": sum(s.count(0) for s in expected), "box": 1}


def test_under_auto_no_negative_reaches_efficient_sam():
    assert not get_family("efficient_sam").trained_on_negatives
    for name in family_names():
        routed = route(PROMPTS, "auto", get_family(name).trained_on_negatives)
        if not get_family(name).trained_on_negatives:
            assert 0 not in routed.queries.labels


def test_bad_parameters_are_one_line():
    with pytest.raises(ValueError, match="decode.negatives 'sometimes'"):
        DecodeParams(negatives="sometimes")
    with pytest.raises(ParamsError, match="models.segmenter.family 'sam3'"):
        SegmenterParams("sam3")
    with pytest.raises(ParamsError, match="decode.completion 'decoder' is EfficientSAM's"):
        load_sam_models("smoke", SamModelParams(), True, segmenter=SegmenterParams("sam"))
    with pytest.raises(PromptError, match="no prompt left"):
        route(ImagePrompts(np.array([[[1, 1]]], np.float32), np.array([[0]]), ("",)), "auto", False)


@pytest.mark.parametrize("family", ["efficient_sam", "sam", "sam_hq", "sam2"])
def test_decode_stage_over_each_family_records_points_sent(scenes, family, tmp_path):  # noqa: F811
    one = dataclasses.replace(scenes, images=scenes.images[:1])
    pts = points_file(tmp_path / "points.parquet", one, "points")
    cache = occlusion_cache(tmp_path / "attention.h5", one)
    seg = SegmenterParams(family)
    summary = run_decode(one, DecodeParams(), "smoke", SamModelParams(), pts, cache, segmenter=seg, **outputs(tmp_path))
    visible, amodal = read_predictions(summary.visible_path), read_predictions(summary.amodal_path)
    assert visible and len(visible) == len(amodal)
    trained = get_family(family).trained_on_negatives
    negatives = sum(v["points_sent"]["labels"].count(0) for v in visible)
    assert (negatives > 0) == trained
    assert all(a["points_sent"] == v["points_sent"] for a, v in zip(amodal, visible))
    assert all(v["smoke"] for v in visible)


def test_amodal_decoder_file_in_the_decoder_wrapper_layout(tmp_path):
    import torch

    from pipeline.models.efficient_sam import build_mask_decoder, load_mask_decoder

    sd = {k: v + 0.25 for k, v in build_mask_decoder().state_dict().items()}
    torch.save({"decoder": sd}, tmp_path / "sameo.pth")
    loaded = load_mask_decoder(tmp_path / "sameo.pth").state_dict()
    assert all(torch.equal(loaded[k], sd[k]) for k in sd)
    torch.save({"weights": sd}, tmp_path / "other.pth")
    with pytest.raises(Exception, match=r"other.pth: .*\{'decoder': state_dict\}"):
        load_mask_decoder(tmp_path / "other.pth")


def test_compare_puts_the_segmenter_beside_the_other_settings():
    from pipeline.compare import comparison_markdown

    metrics = {"amodal": {"AP": 0.1}}
    rows = [{"name": "base", "params": {"models.segmenter.family": "efficient_sam", "prompt_mode": "points"}, "metrics": metrics},
            {"name": "exp-sam2", "params": {"models.segmenter.family": "sam2", "prompt_mode": "points"}, "metrics": metrics}]
    table = comparison_markdown(rows)
    assert "models.segmenter.family" in table and "sam2" in table and "efficient_sam" in table


def test_exemplar_completion_on_another_family(scenes, tmp_path):  # noqa: F811
    pts = points_file(tmp_path / "points.parquet", scenes, "points")
    cache = occlusion_cache(tmp_path / "attention.h5", scenes)
    summary = run_decode(scenes, DecodeParams(completion="exemplar"), "smoke", SamModelParams(), pts, cache,
                         segmenter=SegmenterParams("sam"), **outputs(tmp_path))
    amodal = read_predictions(summary.amodal_path)
    assert amodal and {a["completion"] for a in amodal} == {"exemplar"}
    assert all(a["points_sent"]["labels"] for a in amodal)
