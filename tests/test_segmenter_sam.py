"""SAM and SAM-HQ behind the interface equal transformers' own processor + forward, one query at a time."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.segmenters import LoadRequest, PromptQueries, SegmenterLoadError, get_family, load_segmenter

FAMILIES = ["sam", "sam_hq"]
FOLDERS = Path(__file__).resolve().parent / "data" / "segmenter_folders"


def _processor(seg):
    from transformers import SamHQProcessor, SamProcessor

    return (SamHQProcessor if seg.family == "sam_hq" else SamProcessor)(image_processor=seg.image_processor)


def _reference(seg, image, points, labels, box):
    """transformers' SamProcessor + model forward on pixel_values for one query."""
    kwargs = {}
    if len(labels):
        kwargs["input_points"] = [[points.tolist()]]
        kwargs["input_labels"] = [[labels.tolist()]]
    if box is not None:
        kwargs["input_boxes"] = [[box.tolist()]]
    inputs = _processor(seg)(images=image, return_tensors="pt", **kwargs)
    inputs.pop("original_sizes")
    inputs.pop("reshaped_input_sizes")
    with torch.inference_mode():
        out = seg.model(**inputs, multimask_output=True)
    return out.pred_masks[0, 0], out.iou_scores[0, 0], inputs


def random_image_and_queries(height: int, width: int, labels: np.ndarray, with_box: bool):
    """A seeded random RGB image and queries with those labels (-1: padding at (-1, -1)), uniform
    points and, `with_box`, a 20x15 box per query."""
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    q, n = labels.shape
    points = np.stack([rng.uniform(0, width, (q, n)), rng.uniform(0, height, (q, n))], -1).astype(np.float32)
    points[labels == -1] = -1
    boxes = None
    if with_box:
        x0, y0 = rng.uniform(0, width / 2, q), rng.uniform(0, height / 2, q)
        boxes = np.stack([x0, y0, x0 + 20, y0 + 15], 1).astype(np.float32)
    return image, PromptQueries(points, labels.astype(np.int64), boxes)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("with_box", [False, True])
def test_batched_equals_forward(family, with_box):
    seg = load_segmenter(LoadRequest(family, profile="smoke"))
    assert seg.trained_on_negatives and seg.smoke and seg.points_per_query(True) is None
    height, width = 45, 70
    image, queries = random_image_and_queries(height, width, np.array([[1, 0, 1], [1, 1, 0], [1, -1, -1], [0, 1, -1]]), with_box)
    points, labels, boxes, q = queries.points, queries.labels, queries.boxes, len(queries)
    emb = seg.embed(image)
    raw = seg.decode_raw(emb, queries)
    decoded = seg.decode(emb, queries, max_queries_per_call=3)
    for i in range(q):
        keep = labels[i] != -1
        ref_logits, ref_iou, inputs = _reference(seg, image, points[i][keep], labels[i][keep], None if boxes is None else boxes[i])
        if i == 0:  # preprocessing and point scaling equal the processor's
            with torch.inference_mode():
                ref_emb = seg.image_features(inputs["pixel_values"])[0]
            torch.testing.assert_close(emb.embeddings, ref_emb, atol=1e-5, rtol=0)
            torch.testing.assert_close(seg.scale(emb, points[i][keep]), inputs["input_points"][0, 0].float(), atol=1e-5, rtol=0)
        torch.testing.assert_close(raw.low_res_logits[i], ref_logits, atol=1e-5, rtol=0)
        torch.testing.assert_close(raw.iou[i], ref_iou, atol=1e-5, rtol=0)
        best = int(ref_iou.argmax())
        post = _processor(seg).post_process_masks([ref_logits[None]], [[height, width]], [list(emb.input_size)])[0]
        np.testing.assert_array_equal(decoded.masks[i], post[0, best].numpy())
        assert abs(decoded.iou[i] - float(ref_iou[best])) < 1e-5


@pytest.mark.parametrize("family", FAMILIES)
def test_checkpoint_folder_loads_and_bad_folders_fail(family, tmp_path):
    seg = load_segmenter(LoadRequest(family, profile="smoke"))
    folder = tmp_path / family
    seg.model.save_pretrained(folder)
    seg.image_processor.save_pretrained(folder)
    real = load_segmenter(LoadRequest(family, str(folder), profile="real"))
    assert not real.smoke and real.provenance["id"] == str(folder)
    for a, b in zip(seg.model.state_dict().values(), real.model.state_dict().values()):
        torch.testing.assert_close(a, b, atol=0, rtol=0)
    other = "sam_hq" if family == "sam" else "sam"
    with pytest.raises(SegmenterLoadError, match=f"model_type '{family}'"):
        load_segmenter(LoadRequest(other, str(folder), profile="real"))
    (folder / "preprocessor_config.json").unlink()
    with pytest.raises(SegmenterLoadError, match="preprocessor_config.json: missing"):
        load_segmenter(LoadRequest(family, str(folder), profile="real"))
    with pytest.raises(SegmenterLoadError, match="not found"):
        load_segmenter(LoadRequest(family, "nobody/no-such-sam", profile="real"))


def test_sam_hq_refuses_an_embedding_without_intermediate_embeddings():
    seg = load_segmenter(LoadRequest("sam_hq", profile="smoke"))
    emb = seg.embed(np.zeros((20, 30, 3), np.uint8))
    assert len(emb.extras["intermediate_embeddings"]) == 1
    emb.extras.clear()
    queries = PromptQueries(np.array([[[5.0, 5.0]]], np.float32), np.array([[1]], np.int64))
    with pytest.raises(ValueError, match="intermediate_embeddings"):
        seg.decode_raw(emb, queries)


@pytest.fixture(params=FAMILIES)
def fixture_folder(request, tmp_path):
    """tests/data/segmenter_folders/<family> (the published files, widths shrunk) with tiny seeded
    safetensors weights written beside them; (family, folder, the state dict written)."""
    from transformers import PretrainedConfig

    family = request.param
    folder = tmp_path / family
    shutil.copytree(FOLDERS / family, folder)
    cls = get_family(family)
    config_class = cls.model_class().config_class
    torch.manual_seed(0)
    model = cls.model_class()(config_class.from_dict(PretrainedConfig.get_config_dict(str(folder))[0]))
    model.save_pretrained(tmp_path / "saved")  # only its weights file is kept: the config stays as published
    shutil.copy(tmp_path / "saved" / "model.safetensors", folder)
    return family, folder, model.state_dict()


def test_fixture_folder_loads_through_the_real_profile(fixture_folder):
    from pipeline.decoding.params import sam_models_from_section, segmenter_from_section
    from pipeline.decoding.sam import load_sam_models

    family, folder, state = fixture_folder
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors", "preprocessor_config.json"]
    models = {"profile": "real", "segmenter": {"family": family, "id": str(folder)}}
    profile, sam_params = sam_models_from_section(models)
    seg = load_sam_models(profile, sam_params, False, "cpu", segmenter_from_section(models))
    assert type(seg).family == family and not seg.smoke and seg.provenance == {"family": family, "id": str(folder), "profile": "real"}
    published = json.loads((folder / "config.json").read_text())
    assert seg.model.config.model_type == published["model_type"] in type(seg).model_types
    assert seg.model.config.mask_decoder_config.hidden_size == published["mask_decoder_config"]["hidden_size"]
    assert seg.model.config.vision_config.num_hidden_layers == published["vision_config"]["num_hidden_layers"]
    assert seg.image_processor.size["longest_edge"] == json.loads((folder / "preprocessor_config.json").read_text())["size"]["longest_edge"]
    for key, value in seg.model.state_dict().items():
        torch.testing.assert_close(value, state[key], atol=0, rtol=0)
    image = np.random.default_rng(0).integers(0, 256, (60, 90, 3), dtype=np.uint8)
    emb = seg.embed(image)
    assert tuple(emb.embeddings.shape[-2:]) == (published["prompt_encoder_config"]["image_embedding_size"],) * 2
    queries = PromptQueries(np.array([[[30.0, 20.0], [70.0, 40.0]]], np.float32), np.array([[1, 0]], np.int64))
    out = seg.decode(emb, queries)
    assert out.masks.shape == (1, 60, 90) and np.isfinite(out.iou).all()
