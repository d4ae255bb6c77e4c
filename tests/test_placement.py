"""Placement API, helpers and the smoke VLMs (the real-size proofs are in test_placement_packing)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.attention.cache import TokenPlacement
from pipeline.attention.placement import (
    ImageTokenLayout,
    PlacementError,
    image_token_positions,
    placement_for,
)
from pipeline.vlm_families._anyres import downsampled_hw, packed_highres_grid, unpadded_span
from pipeline.vlm_families._geometry import PixelMap
from pipeline.vlm_families import build_smoke_vlm, family_names, get_family


@pytest.fixture(scope="module", params=family_names())
def smoke(request):
    model, processor = build_smoke_vlm(request.param)
    return request.param, model, processor


def _prompt_inputs(processor, image):
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Where is the cup?"}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    return processor(images=image, text=text, return_tensors="pt")


SMOKE_SIZES = [(120, 200), (200, 120), (50, 400), (333, 91), (9, 13), (700, 700)]


@pytest.mark.parametrize("image_hw", SMOKE_SIZES)
def test_smoke_vlm_features_line_up_with_layout(smoke, image_hw):
    """Random-weight smoke VLMs: the real forward's packed features sit where the layout says.

    The number of features equals the layout's image tokens, and the positions whose packed
    feature IS the model's `image_newline` vector are exactly the keep=False positions.
    """
    family, model, processor = smoke
    height, width = image_hw
    rng = np.random.default_rng(height * 1000 + width)
    image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    inputs = _prompt_inputs(processor, image)
    layout = placement_for(model.config, processor, image_hw)

    kept = layout.kept_positions(inputs["input_ids"])
    assert kept.shape[0] == len(layout.placement)
    assert np.all(inputs["input_ids"][0, kept].numpy() == model.config.image_token_id)

    kwargs = {k: inputs[k] for k in ("pixel_values", "image_sizes", "image_grid_thw") if k in inputs}
    with torch.no_grad():
        feats = torch.cat(model.model.get_image_features(**kwargs).pooler_output, dim=0)
    assert feats.shape[0] == layout.n_image_tokens
    if family.startswith("qwen"):
        assert layout.keep.all()
        _, grid_h, grid_w = inputs["image_grid_thw"][0].tolist()
        assert layout.view_shapes == {0: (grid_h // 2, grid_w // 2)}
    elif family == "llava":
        assert layout.keep.all()
    else:
        newline = model.model.image_newline.detach()
        is_newline = (feats == newline).all(dim=-1).numpy()
        np.testing.assert_array_equal(is_newline, ~layout.keep)
        assert layout.view_shapes[0] == (6, 6)


def test_layout_arrays_fit_the_cache(smoke):
    family, model, processor = smoke
    layout = placement_for(model.config, processor, (150, 260))
    p = layout.placement
    assert isinstance(p, TokenPlacement)
    assert p.view.dtype == np.int8 and p.row.dtype == np.int32 and p.col.dtype == np.int32
    assert p.rect.dtype == np.float32 and p.rect.shape == (len(p), 4)
    assert np.all(p.rect[:, 0] <= p.rect[:, 2]) and np.all(p.rect[:, 1] <= p.rect[:, 3])
    assert p.rect[:, [0, 2]].min() >= 0 and p.rect[:, [0, 2]].max() <= 260
    assert p.rect[:, [1, 3]].min() >= 0 and p.rect[:, [1, 3]].max() <= 150
    assert set(np.unique(p.view)) == ({0} if family == "llava" or family.startswith("qwen") else {0, 1})


def test_positions_helpers():
    ids = np.array([5, 7, 7, 7, 2, 7])
    np.testing.assert_array_equal(image_token_positions(ids, 7), [1, 2, 3, 5])
    np.testing.assert_array_equal(image_token_positions(torch.from_numpy(ids[None]), 7), [1, 2, 3, 5])
    with pytest.raises(PlacementError, match="one prompt"):
        image_token_positions(np.stack([ids, ids]), 7)

    layout = ImageTokenLayout(
        family="llava_next", image_hw=(10, 20), image_token_id=7,
        placement=TokenPlacement(view=np.zeros(3, np.int8), row=np.zeros(3, np.int32),
                                 col=np.arange(3, dtype=np.int32), rect=np.zeros((3, 4), np.float32)),
        keep=np.array([True, True, False, True]), feature_box=np.zeros((3, 4)),
    )
    np.testing.assert_array_equal(layout.kept_positions(ids), [1, 2, 5])
    with pytest.raises(PlacementError, match="3 image tokens .* has 4"):
        layout.kept_positions(ids[:4])


def test_config_processor_disagreements_are_clear_errors():
    model, processor = build_smoke_vlm("llava_next")
    config = model.config
    with pytest.raises(PlacementError, match="invalid image size"):
        placement_for(config, processor, (0, 10))
    saved = config.image_grid_pinpoints
    config.image_grid_pinpoints = [[84, 84]]
    with pytest.raises(PlacementError, match="image_grid_pinpoints"):
        placement_for(config, processor, (100, 100))
    config.image_grid_pinpoints = saved
    processor.vision_feature_select_strategy = "full"
    with pytest.raises(PlacementError, match="vision_feature_select_strategy"):
        placement_for(config, processor, (100, 100))
    processor.vision_feature_select_strategy = "default"

    class Other:
        model_type = "idefics3"

    with pytest.raises(PlacementError, match="idefics3"):
        placement_for(Other(), processor, (100, 100))
    qwen_model, _ = build_smoke_vlm("qwen2_5_vl")
    with pytest.raises(PlacementError, match="disagree"):
        placement_for(qwen_model.config, processor, (100, 100))


def test_pixel_map_composition_and_inverse():
    resize = PixelMap(scale_y=0.5, scale_x=2.0)
    pad = PixelMap(offset_y=3.0, offset_x=-4.0)
    both = resize.then(pad)
    rect_orig = np.array([[1.0, 2.0, 3.0, 6.0]])  # x0, y0, x1, y1
    x = rect_orig[0, [0, 2]] * 2.0 - 4.0
    y = rect_orig[0, [1, 3]] * 0.5 + 3.0
    rect_out = np.array([[x[0], y[0], x[1], y[1]]])
    np.testing.assert_allclose(both.to_original(rect_out, (100, 100)), rect_orig)
    # clipped to the image
    np.testing.assert_allclose(PixelMap().to_original(np.array([[-5.0, -1.0, 50.0, 9.0]]), (8, 40)),
                               [[0.0, 0.0, 40.0, 8.0]])


def test_unpadded_span_equals_transformers_unpad_image():
    """Exhaustively over many sizes: the kept rows/cols are those unpad_image keeps."""
    from transformers.models.llava_next.modeling_llava_next import unpad_image

    rng = np.random.default_rng(0)
    for _ in range(400):
        image_hw = tuple(int(v) for v in rng.integers(1, 3000, 2))
        grid_hw = tuple(int(v) for v in rng.integers(1, 6, 2) * 24)
        rows = torch.arange(grid_hw[0])[:, None].expand(grid_hw).float()
        cols = torch.arange(grid_hw[1])[None, :].expand(grid_hw).float()
        kept = unpad_image(torch.stack([rows, cols]), list(image_hw))
        r0, r1, c0, c1 = unpadded_span(image_hw, grid_hw)
        assert kept.shape[1:] == (r1 - r0, c1 - c0)
        if kept.numel():
            assert kept[0, 0, 0] == r0 and kept[1, 0, 0] == c0


def test_downsampling_matches_processor_count():
    """OneVision: rows x cols and rows after downsampling agree with the processor's arithmetic."""
    from transformers import LlavaOnevisionImageProcessorPil

    ip = LlavaOnevisionImageProcessorPil()  # real 384 geometry and pinpoints
    proc = get_family("llava_onevision").processor_class()(image_processor=ip, tokenizer=get_family("llava_onevision").build_smoke_tokenizer(),
                                                  num_image_tokens=729, vision_feature_select_strategy="full")
    rng = np.random.default_rng(1)
    hits = 0
    for _ in range(200):
        h, w = (int(v) for v in rng.integers(1, 4000, 2))
        from transformers.image_processing_utils import select_best_resolution

        bh, bw = select_best_resolution((h, w), ip.image_grid_pinpoints)
        tiles = (bh // 384, bw // 384)
        grid = packed_highres_grid((h, w), tiles, 27, 9)
        unpadded, newlines = proc._get_unpadded_features(h, w, 27, 27, tiles[0], tiles[1])
        assert (grid.n_rows * grid.n_cols, grid.n_rows) == (unpadded, newlines)
        r0, r1, c0, c1 = unpadded_span((h, w), (tiles[0] * 27, tiles[1] * 27))
        hits += downsampled_hw(r1 - r0, c1 - c0, 27, 9) is not None
    assert hits > 10  # the sample exercises the downsampling branch


def test_center_crop_offsets_of_both_backends():
    """PIL backend: top = (h - ch) // 2 even when padding; torchvision pads (ch - h) // 2 first."""
    from types import SimpleNamespace

    from pipeline.vlm_families._geometry import center_crop_map, is_torchvision_backend

    crop = SimpleNamespace(height=336, width=336)
    pm, hw = center_crop_map((500, 335), crop)
    assert hw == (336, 336) and pm.offset_y == -82 and pm.offset_x == 1
    pm, _ = center_crop_map((500, 335), crop, torchvision=True)
    assert pm.offset_y == -82 and pm.offset_x == 0

    # the real PIL crop agrees (the image moves by +1 column when 335 is padded to 336)
    from transformers.image_transforms import center_crop

    img = np.arange(500 * 335, dtype=np.float32).reshape(1, 500, 335)
    out = center_crop(img, (336, 336), data_format="channels_first", input_data_format="channels_first")
    assert out[0, 0, 1] == img[0, 82, 0]

    class TorchvisionBackend:  # stands in for the real base class name
        pass

    class FastProcessor(TorchvisionBackend):
        pass

    assert is_torchvision_backend(FastProcessor()) and not is_torchvision_backend(object())
