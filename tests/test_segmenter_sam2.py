"""SAM 2.1 behind the interface: one embedding, batched decode, equals transformers' own forward on
pixel_values one query at a time; the hub-shaped checkpoint folder loads through the real profile.

The tiny model is the config of tests/data/segmenter_folders/sam2 (facebook/sam2.1-hiera-tiny,
widths shrunk) with seeded random weights, written with that folder's json files into tmp_path.
Preprocessing and point scaling equal `Sam2Processor`'s on stored outputs (tests/test_sam2_processing.py);
here the reference forward gets the same pixels and points, so what is compared is the cached,
batched decoder path against the model's forward.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.segmenters import LoadRequest, PromptQueries, SegmenterLoadError, load_segmenter
from pipeline.segmenters._sam2_processing import Sam2Processing
from tests.test_segmenter_sam import random_image_and_queries

FIXTURE = Path(__file__).parent / "data" / "segmenter_folders" / "sam2"


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """A SAM 2.1 checkpoint folder: the fixture's hub-shaped json files + tiny seeded random weights."""
    from transformers import Sam2Config, Sam2Model

    out = tmp_path_factory.mktemp("sam2") / "sam2.1-hiera-tiny-shrunk"
    torch.manual_seed(3)
    model = Sam2Model(Sam2Config.from_pretrained(FIXTURE))
    with torch.no_grad():  # random, non-zero everywhere (the hub init leaves some tensors zero)
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    model.save_pretrained(out)
    for path in FIXTURE.glob("*.json"):
        shutil.copy(path, out / path.name)
    return out


@pytest.fixture(scope="module")
def seg(folder):
    return load_segmenter(LoadRequest("sam2", str(folder), profile="real"))


def _reference(seg, image, points, labels, box):
    """transformers' forward on pixel_values for one query (no padding)."""
    kwargs = {}
    if len(labels):
        kwargs["input_points"] = seg.image_processor.scale_points(torch.from_numpy(points), image.shape[:2])[None, None]
        kwargs["input_labels"] = torch.from_numpy(labels)[None, None]
    if box is not None:
        kwargs["input_boxes"] = seg.image_processor.scale_points(torch.from_numpy(box).view(2, 2), image.shape[:2]).view(1, 1, 4)
    with torch.inference_mode():
        out = seg.model(pixel_values=seg.image_processor.pixel_values(image), multimask_output=True, **kwargs)
    return out.pred_masks[0, 0], out.iou_scores[0, 0], out.object_score_logits[0, 0, 0]


def test_folder_loads_hub_shaped_config(seg, folder):
    assert json.loads((folder / "config.json").read_text())["model_type"] == "sam2_video"
    assert not seg.smoke and seg.provenance == {"family": "sam2", "id": str(folder), "profile": "real"}
    assert seg.image_processor == Sam2Processing.from_folder(FIXTURE)
    assert seg.trained_on_negatives and seg.points_per_query(True) is None


@pytest.mark.parametrize("with_box", [False, True])
def test_batched_equals_forward_one_query_at_a_time(seg, with_box):
    height, width = 45, 70
    labels = np.array([[1, 0, 1], [1, 1, 0], [1, -1, -1], [0, 1, -1], [1, 0, -1]])  # 3, 2 and 1 points
    image, queries = random_image_and_queries(height, width, labels, with_box)
    points, labels, boxes, q = queries.points, queries.labels, queries.boxes, len(queries)
    emb = seg.embed(image)
    assert emb.embeddings.shape == (1, 32, 8, 8) and len(emb.extras["high_resolution_features"]) == 2
    raw = seg.decode_raw(emb, queries)
    decoded = seg.decode(emb, queries, max_queries_per_call=2)
    assert raw.low_res_logits.shape == (q, 3, 32, 32) and decoded.masks.shape == (q, height, width)
    for i in range(q):
        keep = labels[i] != -1
        ref_logits, ref_iou, ref_score = _reference(seg, image, points[i][keep], labels[i][keep],
                                                    None if boxes is None else boxes[i])
        torch.testing.assert_close(raw.low_res_logits[i], ref_logits, atol=1e-5, rtol=0)
        torch.testing.assert_close(raw.iou[i], ref_iou, atol=1e-5, rtol=0)
        torch.testing.assert_close(raw.object_score[i], ref_score, atol=1e-5, rtol=0)
        best = int(ref_iou.argmax())
        post = Sam2Processing.masks_to_original(ref_logits[None], (height, width))[0, best]
        agree = (decoded.masks[i] == post.numpy()).mean()
        assert agree == 1.0, f"query {i}: {agree:.5f} of the pixels agree"
        assert abs(decoded.iou[i] - float(ref_iou[best])) < 1e-5
        assert abs(decoded.object_score[i] - float(ref_score)) < 1e-5


def test_box_only_query_equals_forward(seg):
    image = np.random.default_rng(2).integers(0, 256, (40, 30, 3), dtype=np.uint8)
    box = np.array([3, 4, 25, 30], np.float32)
    raw = seg.decode_raw(seg.embed(image), PromptQueries(np.zeros((1, 0, 2), np.float32), np.zeros((1, 0), np.int64), box[None]))
    ref_logits, ref_iou, _ = _reference(seg, image, np.zeros((0, 2), np.float32), np.zeros(0, np.int64), box)
    torch.testing.assert_close(raw.low_res_logits[0], ref_logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(raw.iou[0], ref_iou, atol=1e-5, rtol=0)


def test_embedding_without_high_resolution_features_is_refused(seg):
    emb = seg.embed(np.zeros((20, 30, 3), np.uint8))
    emb.extras.clear()
    with pytest.raises(ValueError, match="high_resolution_features"):
        seg.decode_raw(emb, PromptQueries(np.array([[[5.0, 5.0]]], np.float32), np.array([[1]], np.int64)))


def test_bad_checkpoints_are_one_line(folder, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    with pytest.raises(SegmenterLoadError, match="model_type 'sam2_video'"):
        load_segmenter(LoadRequest("sam", str(broken), profile="real"))
    config = json.loads((broken / "config.json").read_text())
    (broken / "config.json").write_text(json.dumps({**config, "model_type": "sam"}))
    with pytest.raises(SegmenterLoadError, match="model_type 'sam', not 'sam2_video' or 'sam2'"):
        load_segmenter(LoadRequest("sam2", str(broken), profile="real"))
    (broken / "model.safetensors").unlink()
    with pytest.raises(SegmenterLoadError, match="no weights"):
        load_segmenter(LoadRequest("sam2", str(broken), profile="real"))
    (broken / "preprocessor_config.json").unlink()
    with pytest.raises(SegmenterLoadError, match="preprocessor_config.json: missing"):
        load_segmenter(LoadRequest("sam2", str(broken), profile="real"))
    with pytest.raises(SegmenterLoadError, match="not found.*facebook/sam2.1-hiera-large"):
        load_segmenter(LoadRequest("sam2", "nobody/no-such-sam2", profile="real"))
    assert "\n" not in str(pytest.raises(SegmenterLoadError, load_segmenter, LoadRequest("sam2", profile="real")).value)


def test_smoke_model_is_full_input_size():
    seg = load_segmenter(LoadRequest("sam2", profile="smoke"))
    assert seg.smoke and seg.provenance["id"] is None and seg.image_processor.size == (1024, 1024)
    emb = seg.embed(np.zeros((30, 40, 3), np.uint8))
    assert emb.embeddings.shape == (1, 256, 64, 64)
    out = seg.decode(emb, PromptQueries(np.array([[[5.0, 5.0], [20.0, 10.0]]], np.float32), np.array([[1, 0]], np.int64)))
    assert out.masks.shape == (1, 30, 40) and out.object_score.shape == (1,)
