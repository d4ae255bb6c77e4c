"""The segmenter interface and registry: contract per family, EfficientSAM equal to its model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pipeline.errors import ParamsError
from pipeline.segmenters import LoadRequest, PromptQueries, family_names, get_family, load_segmenter


def _queries(rng, q, width, height, with_box=False):
    points = np.stack([rng.uniform(0, width, (q, 3)), rng.uniform(0, height, (q, 3))], -1).astype(np.float32)
    labels = np.tile(np.array([1, 0, 1]), (q, 1)).astype(np.int64)
    labels[0, 2] = -1
    points[0, 2] = -1
    boxes = None
    if with_box:
        x0, y0 = rng.uniform(0, width / 2, q), rng.uniform(0, height / 2, q)
        boxes = np.stack([x0, y0, x0 + width / 3, y0 + height / 3], 1).astype(np.float32)
    return PromptQueries(points, labels, boxes)


def test_registry_lists_families_and_rejects_unknown():
    assert "efficient_sam" in family_names()
    for name in family_names():
        cls = get_family(name)
        assert cls.family == name and isinstance(cls.trained_on_negatives, bool)
    with pytest.raises(ParamsError, match="models.segmenter.family 'nope'"):
        get_family("nope")


@pytest.mark.parametrize("with_box", [False, True])
def test_efficient_sam_segmenter_equals_model(with_box):
    seg = load_segmenter(LoadRequest("efficient_sam", profile="smoke"))
    assert seg.smoke and not seg.trained_on_negatives and seg.points_per_query(True) == 4
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)
    queries = _queries(rng, 5, 56, 40, with_box)
    emb = seg.embed(image)
    whole = seg.decode(emb, queries)
    chunked = seg.decode(emb, queries, max_queries_per_call=2)
    np.testing.assert_array_equal(whole.masks, chunked.masks)
    np.testing.assert_allclose(whole.iou, chunked.iou, atol=1e-6)
    # the model itself, one query at a time
    model = seg.model
    tensor = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    for q in range(len(queries)):
        pts, labs = queries.points[q], queries.labels[q]
        if with_box:
            pts = np.concatenate([queries.boxes[q].reshape(2, 2), pts])
            labs = np.concatenate([[2, 3], labs])
        with torch.inference_mode():
            logits, iou = model(tensor, torch.from_numpy(pts)[None, None], torch.from_numpy(labs)[None, None])
        best = int(iou[0, 0].argmax())
        np.testing.assert_array_equal(whole.masks[q], (logits[0, 0, best] > 0).numpy())
        assert abs(whole.iou[q] - float(iou[0, 0, best])) < 1e-5


@pytest.mark.parametrize("name", family_names())
def test_every_family_builds_its_published_decoder_with_random_weights(name):
    """`seeded_real_width` (what bench_segmenter_decoders.py times): seeded, marked smoke, nothing
    downloaded; over one embedding its decoder gives the published 256x256 multimask logits."""
    cls = get_family(name)
    assert cls.real_width_variants, f"segmenter family {name!r} lists no real_width_variants"
    seg = cls.seeded_real_width(cls.real_width_variants[0], "cpu", encoder_blocks=1)
    assert type(seg) is cls and seg.smoke and seg.provenance["family"] == name
    emb = seg.embed(np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8))
    raw = seg.decode_raw(emb, _queries(np.random.default_rng(1), 2, 64, 48))
    assert raw.low_res_logits.shape == (2, 3, 256, 256) and raw.iou.shape == (2, 3)
    with pytest.raises(ValueError):
        cls.seeded_real_width("no-such-variant")


def test_a_vit_cut_keeps_its_widths_and_a_global_block():
    from pipeline.segmenters.sam import PUBLISHED_VISION, cut_vision

    huge = PUBLISHED_VISION["huge"]
    assert cut_vision(huge, 1) == {**huge, "num_hidden_layers": 1, "global_attn_indexes": [0]}
    assert cut_vision(PUBLISHED_VISION["base"], 6)["global_attn_indexes"] == [2, 5]
    assert cut_vision(huge, None) == cut_vision(huge, 40) == huge
