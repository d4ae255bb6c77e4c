"""Image-token placement proven against transformers' own preprocessing and feature packing.

The trick: real-size configs of the three families (llava-hf/llava-1.5-7b-hf,
llava-hf/llava-v1.6-mistral-7b-hf, llava-hf/llava-onevision-qwen2-0.5b-ov-hf: vision geometry,
pinpoints, select strategy, image-processor settings) with a 1-layer, 12-wide language model,
and the vision tower REPLACED by `IdentityTower`, a cheap module that emits for every patch
of every processed tile a feature vector encoding where it came from (tile index, row and
column in the tile, its row/column in the whole canvas patch grid, a patch/CLS flag). The
projector becomes the identity and `image_newline` a one-hot marker. The real
`model.model.forward` then runs transformers' `get_image_features` / `pack_image_features` /
`masked_scatter`; a forward pre-hook on the language model catches `inputs_embeds`, and every
image-token position is decoded and compared with `placement_for` (keep/newline, view,
canvas cell, row-major raster). Bilinear downsampling (OneVision anyres_max_9) is linear in
the encoded coordinates, so the decoded position is the resampled cell's centre.

Pixel check: the image is painted with its own coordinates (R = x, G = y, B = 255 inside the
image; the processor pads with 0), run through the real image processor, and for every token
the pixels of the vision patch transformers assigned to it (decoded tile/row/col) must have
their coordinate centroid at the centre of the token's rect.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from pipeline.attention.placement import ImageTokenLayout, PlacementError, placement_for
from pipeline.vlm_families import get_family

CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073])
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711])
LLAVA_NEXT_PINPOINTS = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]
ONEVISION_PINPOINTS = [[h, w] for h in range(384, 2305, 384) for w in range(384, 2305, 384)]

# Channels of the identity features (text hidden size HIDDEN).
HIDDEN = 12
CH_VIEW, CH_ROW, CH_COL, CH_PATCH, CH_CLS, CH_NEWLINE, CH_TILE, CH_TROW, CH_TCOL = range(9)


# ---------------------------------------------------------------- real-size models and processors

def _tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<image>": 1, "<video>": 2, "describe": 3, "it": 4, "<pad>": 5}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>",
        additional_special_tokens=["<image>", "<video>"],
    )


def _text(config_cls):
    return config_cls(vocab_size=8, hidden_size=HIDDEN, intermediate_size=16, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, head_dim=6, max_position_embeddings=16384)


def _vision(tf, kind: str):
    if kind == "clip":  # CLIP ViT-L/14-336 geometry
        return tf.CLIPVisionConfig(hidden_size=HIDDEN, intermediate_size=16, num_hidden_layers=1,
                                   num_attention_heads=2, image_size=336, patch_size=14)
    return tf.SiglipVisionConfig(hidden_size=HIDDEN, intermediate_size=16, num_hidden_layers=1,  # SigLIP 384/14
                                 num_attention_heads=2, image_size=384, patch_size=14, vision_use_head=False)


def build(family: str, variant: str = "real"):
    """(config, processor) with the real llava-hf settings of `family` (tiny hidden sizes)."""
    import transformers as tf

    tok = _tokenizer()
    if family == "llava":
        strategy = "full" if variant == "full" else "default"
        tower = "siglip" if variant == "siglip" else "clip"
        side = 384 if tower == "siglip" else 336
        config = tf.LlavaConfig(vision_config=_vision(tf, tower), text_config=_text(tf.LlamaConfig),
                                image_token_index=1, vision_feature_select_strategy=strategy,
                                vision_feature_layer=-2)
        if variant == "pad":  # LlavaImageProcessor's pad-to-square option
            ip = tf.LlavaImageProcessorPil(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336},
                                           do_pad=True)
        else:  # llava-1.5-7b-hf's preprocessor_config.json: CLIPImageProcessor, resize 336 + centre crop
            ip = tf.CLIPImageProcessorPil(size={"shortest_edge": side}, crop_size={"height": side, "width": side})
        processor = tf.LlavaProcessor(image_processor=ip, tokenizer=tok, patch_size=14,
                                      vision_feature_select_strategy=strategy,
                                      num_additional_image_tokens=int(tower == "clip"))
    elif family == "llava_next":
        config = tf.LlavaNextConfig(vision_config=_vision(tf, "clip"), text_config=_text(tf.MistralConfig),
                                    image_token_index=1, image_grid_pinpoints=LLAVA_NEXT_PINPOINTS,
                                    vision_feature_select_strategy="default", vision_feature_layer=-2)
        ip = tf.LlavaNextImageProcessorPil(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336},
                                           image_grid_pinpoints=LLAVA_NEXT_PINPOINTS)
        processor = tf.LlavaNextProcessor(image_processor=ip, tokenizer=tok, patch_size=14,
                                          vision_feature_select_strategy="default", num_additional_image_tokens=1)
    else:
        config = tf.LlavaOnevisionConfig(vision_config=_vision(tf, "siglip"), text_config=_text(tf.Qwen2Config),
                                         image_token_index=1, video_token_index=2,
                                         image_grid_pinpoints=ONEVISION_PINPOINTS,
                                         vision_feature_select_strategy="full", vision_feature_layer=-1,
                                         vision_aspect_ratio="anyres_max_9")
        ip = tf.LlavaOnevisionImageProcessorPil(size={"height": 384, "width": 384},
                                                image_grid_pinpoints=ONEVISION_PINPOINTS)
        # transformers' OneVision processor demands a video processor, which needs torchvision:
        # F1's image-only subclass of the real class (same token expansion).
        processor = get_family("llava_onevision").processor_class()(image_processor=ip, tokenizer=tok, num_image_tokens=729,
                                               vision_feature_select_strategy="full",
                                               vision_aspect_ratio="anyres_max_9")
    return config, processor


class IdentityTower(nn.Module):
    """Stands in for the vision tower: patch features = where the patch came from.

    Tile b of the processed stack (b = 0: base / single view; b >= 1: canvas tile b-1, row-major
    over `tiles_x` columns, as transformers' divide_to_patches cuts them).
    """

    def __init__(self, patch: int, has_cls: bool):
        super().__init__()
        self.patch, self.has_cls, self.tiles_x = patch, has_cls, 1
        self.anchor = nn.Parameter(torch.zeros(1))

    def forward(self, pixel_values, **kwargs):
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        n, _, h, w = pixel_values.shape
        g_h, g_w = h // self.patch, w // self.patch
        r, c = torch.meshgrid(torch.arange(g_h), torch.arange(g_w), indexing="ij")
        r, c = r.reshape(-1).float(), c.reshape(-1).float()
        feats = torch.zeros(n, g_h * g_w, HIDDEN)
        for b in range(n):
            ty, tx = divmod(b - 1, self.tiles_x) if b > 0 else (0, 0)
            feats[b, :, CH_VIEW] = float(b > 0)
            feats[b, :, CH_ROW] = r + ty * g_h
            feats[b, :, CH_COL] = c + tx * g_w
            feats[b, :, CH_PATCH] = 1.0
            feats[b, :, CH_TILE] = b
            feats[b, :, CH_TROW] = r
            feats[b, :, CH_TCOL] = c
        if self.has_cls:
            cls = torch.zeros(n, 1, HIDDEN)
            cls[:, :, CH_CLS] = 1.0
            feats = torch.cat([cls, feats], dim=1)
        return BaseModelOutputWithPooling(last_hidden_state=feats, hidden_states=(feats,) * 4)


_MODELS: dict = {}


def identity_model(family: str, variant: str = "real"):
    """The real model class (cached) with IdentityTower, identity projector, one-hot newline."""
    import transformers as tf

    key = (family, variant)
    if key not in _MODELS:
        config, processor = build(family, variant)
        cls = {"llava": tf.LlavaForConditionalGeneration, "llava_next": tf.LlavaNextForConditionalGeneration,
               "llava_onevision": tf.LlavaOnevisionForConditionalGeneration}[family]
        torch.manual_seed(0)
        model = cls._from_config(config).eval()
        inner = model.model
        inner.vision_tower = IdentityTower(config.vision_config.patch_size,
                                           config.vision_config.model_type == "clip_vision_model")
        inner.multi_modal_projector = nn.Identity()
        if hasattr(inner, "image_newline"):
            with torch.no_grad():
                inner.image_newline.zero_()
                inner.image_newline[CH_NEWLINE] = 1.0
        _MODELS[key] = (model, config, processor)
    return _MODELS[key]


class _Caught(Exception):
    pass


def packed_image_embeds(model, config, inputs) -> torch.Tensor:
    """inputs_embeds rows at the image-token positions, as transformers' forward builds them."""
    from transformers.models.llava_next.modeling_llava_next import get_anyres_image_grid_shape

    inner = model.model
    if config.model_type != "llava":
        tiles = get_anyres_image_grid_shape(inputs["image_sizes"][0].tolist(), config.image_grid_pinpoints,
                                            config.vision_config.image_size)
        inner.vision_tower.tiles_x = int(tiles[1])
    seen = {}

    def hook(module, args, kwargs):
        seen["embeds"] = kwargs["inputs_embeds"]
        raise _Caught

    handle = inner.language_model.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        with torch.no_grad(), pytest.raises(_Caught):
            inner(**inputs)
    finally:
        handle.remove()
    ids = inputs["input_ids"][0]
    return seen["embeds"][0][ids == config.image_token_id].double()


# ---------------------------------------------------------------- the coordinate image

def coordinate_image(height: int, width: int) -> Image.Image:
    """R, G = the pixel's x, y centre as 255 * (x + 0.5) / width (resp. height); B = 255."""
    x = np.round(255 * (np.arange(width) + 0.5) / width).astype(np.uint8)
    y = np.round(255 * (np.arange(height) + 0.5) / height).astype(np.uint8)
    rgb = np.empty((height, width, 3), np.uint8)
    rgb[..., 0] = x[None, :]
    rgb[..., 1] = y[:, None]
    rgb[..., 2] = 255
    return Image.fromarray(rgb)


def tile_coordinates(tile: np.ndarray, image_hw) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Original (x, y) centre coordinates decoded from a processed tile [3, h, w], and a mask of
    the pixels that are pure image: inside the image and more than 2 px (the bicubic kernel's
    reach) from the processor's padding, whose resampled blend would bias the code."""
    from scipy.ndimage import binary_erosion

    values = (tile.transpose(1, 2, 0) * CLIP_STD + CLIP_MEAN) * 255.0
    valid = binary_erosion(values[..., 2] > 127.5, structure=np.ones((5, 5), bool), border_value=1)
    height, width = image_hw
    return values[..., 0] / 255.0 * width, values[..., 1] / 255.0 * height, valid


# ---------------------------------------------------------------- the check

def check_against_transformers(family: str, image_hw, variant: str = "real") -> ImageTokenLayout:
    model, config, processor = identity_model(family, variant)
    height, width = image_hw
    inputs = processor(images=coordinate_image(height, width), text="<image> describe it", return_tensors="pt")
    layout = placement_for(config, processor, image_hw)

    # 1. the token count is the processor's, and positions are found in the real prompt
    positions = layout.image_positions(inputs["input_ids"])
    assert positions.shape[0] == int((inputs["input_ids"] == config.image_token_id).sum())
    assert np.all(np.diff(positions) == 1)

    # 2. every image-token position decoded from transformers' packing
    emb = packed_image_embeds(model, config, inputs).numpy()
    is_patch = emb[:, CH_PATCH] > 0.5
    is_newline = emb[:, CH_NEWLINE] > 0.5
    assert np.array_equal(layout.keep, is_patch), "keep must be exactly the patch positions"
    assert np.all(is_newline | (emb[:, CH_CLS] > 0.5) | is_patch)
    if family != "llava":  # one newline after every high-res row, none elsewhere
        n_rows, n_cols = layout.view_shapes[1]
        expected_newlines = np.zeros(layout.n_image_tokens, bool)
        base = layout.view_shapes[0][0] * layout.view_shapes[0][1]
        expected_newlines[base + (n_cols + 1) * np.arange(1, n_rows + 1) - 1] = True
        assert np.array_equal(is_newline, expected_newlines)
    kept = emb[layout.keep]
    place = layout.placement
    np.testing.assert_array_equal(place.view, np.rint(kept[:, CH_VIEW]).astype(np.int8))
    box = layout.feature_box
    centre_x, centre_y = (box[:, 0] + box[:, 2]) / 2, (box[:, 1] + box[:, 3]) / 2
    np.testing.assert_allclose(centre_x, kept[:, CH_COL] + 0.5, atol=1e-4)
    np.testing.assert_allclose(centre_y, kept[:, CH_ROW] + 0.5, atol=1e-4)

    # 3. rows/cols of each view are its full row-major raster
    for view, (n_rows, n_cols) in layout.view_shapes.items():
        sel = place.view == view
        first = n_rows * n_cols - int(sel.sum())  # 0 unless the strategy dropped patch 0
        flat = np.arange(first, n_rows * n_cols)
        np.testing.assert_array_equal(place.row[sel], flat // n_cols)
        np.testing.assert_array_equal(place.col[sel], flat % n_cols)

    # 4. rect <-> the pixels of the patch transformers assigned to the token
    check_pixels(layout, inputs["pixel_values"].numpy(), kept, config.vision_config.patch_size,
                 model.model.vision_tower.tiles_x)
    return layout


def check_pixels(layout: ImageTokenLayout, pixel_values: np.ndarray, kept: np.ndarray, patch: int,
                 tiles_x: int) -> None:
    if pixel_values.ndim == 5:
        pixel_values = pixel_values[0]
    height, width = layout.image_hw
    rect = layout.placement.rect.astype(np.float64)
    area = (rect[:, 2] - rect[:, 0]) * (rect[:, 3] - rect[:, 1])
    box = layout.feature_box
    exact = np.isclose(box[:, 2] - box[:, 0], 1.0) & np.isclose(box[:, 3] - box[:, 1], 1.0)
    # 8-bit coordinate codes: one level is width/255 px; plus a pixel of resampling blur
    tol = 1.0 + np.array([width, height]) / 255.0
    grid = pixel_values.shape[-1] // patch
    decoded: dict = {}
    checked = interior = 0
    for t in range(len(layout.placement)):
        if exact[t]:  # the patch transformers put at this position
            b, r, c = (int(round(kept[t, ch])) for ch in (CH_TILE, CH_TROW, CH_TCOL))
        else:  # a downsampled cell: the canvas patch under its decoded centre
            row, col = int(np.floor(kept[t, CH_ROW] + 0.5)), int(np.floor(kept[t, CH_COL] + 0.5))
            b = 1 + (row // grid) * tiles_x + col // grid
            r, c = row % grid, col % grid
        if b not in decoded:
            decoded[b] = tile_coordinates(pixel_values[b], layout.image_hw)
        xs, ys, valid = (a[r * patch:(r + 1) * patch, c * patch:(c + 1) * patch] for a in decoded[b])
        xs, ys = xs[valid], ys[valid]
        if not exact[t]:  # that patch lies within the (larger) resampled cell's rect
            if xs.size:
                assert rect[t, 0] - tol[0] <= xs.mean() <= rect[t, 2] + tol[0], (t, rect[t], xs.mean())
                assert rect[t, 1] - tol[1] <= ys.mean() <= rect[t, 3] + tol[1], (t, rect[t], ys.mean())
                checked += 1
            continue
        if xs.size == 0:  # a patch in the processor's padding: empty rect, or a sliver at the edge
            assert min(rect[t, 2] - rect[t, 0], rect[t, 3] - rect[t, 1]) <= 2 * tol.max(), (t, rect[t])
            continue
        assert area[t] > 0, (t, rect[t])
        if xs.size == patch * patch:  # an interior patch: same centre
            cx, cy = (rect[t, 0] + rect[t, 2]) / 2, (rect[t, 1] + rect[t, 3]) / 2
            assert abs(xs.mean() - cx) <= tol[0] and abs(ys.mean() - cy) <= tol[1], (t, rect[t], xs.mean(), ys.mean())
            interior += 1
        # the extreme valid pixels lie inside the rect (within the tolerance)
        assert xs.min() >= rect[t, 0] - tol[0] and xs.max() <= rect[t, 2] + tol[0]
        assert ys.min() >= rect[t, 1] - tol[1] and ys.max() <= rect[t, 3] + tol[1]
        checked += 1
    assert checked > 0 and interior > 0


# ---------------------------------------------------------------- cases

# One image per llava-v1.6 pinpoint (each is the best resolution for it), plus odd shapes.
NEXT_SIZES = [
    (300, 600),    # [336, 672]
    (600, 300),    # [672, 336]
    (640, 640),    # [672, 672]
    (900, 300),    # [1008, 336]
    (300, 900),    # [336, 1008]
    (97, 1500),    # very wide: most canvas rows are padding
    (1400, 61),    # very tall
    (23, 31),      # tiny: upscaled
    (479, 641),    # non-integer scale, odd sizes
    (333, 500),    # COCO-like
]
ONEVISION_SIZES = [
    (384, 384),    # one tile
    (500, 383),    # non-integer scale
    (120, 2000),   # very wide
    (2000, 150),   # very tall
    (31, 17),      # tiny
    (480, 640),    # COCO-like: 2x2 tiles unpadded, under the max
    (1100, 1500),  # triggers anyres_max_9 bilinear downsampling
    (2304, 2304),  # the largest pinpoint: 6x6 tiles, downsampled
]
LLAVA_SIZES = [(480, 640), (640, 480), (336, 336), (50, 1000), (20, 21)]


def _pinpoint_of(config, hw):
    from transformers.image_processing_utils import select_best_resolution

    return list(select_best_resolution(hw, config.image_grid_pinpoints))


def test_llava_next_sizes_cover_every_real_pinpoint():
    config, _ = build("llava_next")
    chosen = {tuple(_pinpoint_of(config, hw)) for hw in NEXT_SIZES}
    assert chosen == {tuple(p) for p in LLAVA_NEXT_PINPOINTS}


@pytest.mark.parametrize("image_hw", NEXT_SIZES)
def test_llava_next_matches_transformers_packing(image_hw):
    layout = check_against_transformers("llava_next", image_hw)
    assert layout.view_shapes[0] == (24, 24)


@pytest.mark.parametrize("image_hw", ONEVISION_SIZES)
def test_llava_onevision_matches_transformers_packing(image_hw):
    layout = check_against_transformers("llava_onevision", image_hw)
    assert layout.view_shapes[0] == (27, 27)


def test_onevision_downsampling_cases_really_downsample():
    from pipeline.vlm_families._anyres import downsampled_hw, unpadded_span

    config, _ = build("llava_onevision")
    from transformers.models.llava_next.modeling_llava_next import get_anyres_image_grid_shape

    hits = []
    for hw in ONEVISION_SIZES:
        ty, tx = get_anyres_image_grid_shape(list(hw), config.image_grid_pinpoints, 384)
        r0, r1, c0, c1 = unpadded_span(hw, (ty * 27, tx * 27))
        hits.append(downsampled_hw(r1 - r0, c1 - c0, 27, 9) is not None)
    assert sum(hits) >= 2 and not all(hits)


@pytest.mark.parametrize("image_hw", LLAVA_SIZES)
def test_llava15_center_crop_matches_transformers(image_hw):
    layout = check_against_transformers("llava", image_hw)
    assert layout.view_shapes == {0: (24, 24)} and layout.keep.all()
    height, width = image_hw
    rect = layout.placement.rect
    # The tokens see only the centred square crop of the image.
    side = min(height, width)
    x0 = (width - side) / 2 if width > height else 0.0
    y0 = (height - side) / 2 if height > width else 0.0
    assert rect[:, 0].min() == pytest.approx(x0, abs=width / 336 + 1e-3)
    assert rect[:, 2].max() == pytest.approx(x0 + side, abs=width / 336 + 1e-3)
    assert rect[:, 1].min() == pytest.approx(y0, abs=height / 336 + 1e-3)


@pytest.mark.parametrize("image_hw", [(480, 640), (700, 90)])
def test_llava15_pad_to_square_variant(image_hw):
    layout = check_against_transformers("llava", image_hw, variant="pad")
    rect = layout.placement.rect
    assert rect[:, 0].min() == 0 and rect[:, 1].min() == 0
    assert rect[:, 2].max() == image_hw[1] and rect[:, 3].max() == image_hw[0]


def test_llava15_full_strategy_keeps_cls_as_non_spatial_token():
    layout = check_against_transformers("llava", (300, 400), variant="full")
    assert layout.n_image_tokens == 577 and not layout.keep[0] and layout.keep[1:].all()


def test_llava_siglip_default_strategy_drops_the_first_patch():
    """A tower without CLS under "default": transformers drops patch (0, 0), so must the layout."""
    layout = check_against_transformers("llava", (300, 400), variant="siglip")
    assert layout.n_image_tokens == 27 * 27 - 1 and layout.keep.all()
    assert (layout.placement.row[0], layout.placement.col[0]) == (0, 1)


@pytest.mark.parametrize("family", ["llava", "llava_next", "llava_onevision"])
def test_token_count_equals_processor_for_many_sizes(family):
    """placement_for checks its count against the processor's own; exercise it on 150 sizes."""
    config, processor = build(family)
    rng = np.random.default_rng(7)
    sizes = [tuple(int(v) for v in rng.integers(1, 4000, 2)) for _ in range(150)]
    sizes += [(1, 1), (1, 3999), (3999, 1), (336, 672), (2304, 384)]
    for hw in sizes:
        layout = placement_for(config, processor, hw)
        shapes = layout.view_shapes
        assert len(layout.placement) == sum(r * c for r, c in shapes.values())
        assert layout.n_image_tokens - len(layout.placement) == shapes.get(1, (0, 0))[0]


def test_anyres_rects_cover_the_image():
    """Base view tiles the (seen part of the) image exactly; the high-res view covers it up to
    the slivers that feature-level unpadding cuts."""
    for family, hw in [("llava_next", (479, 641)), ("llava_onevision", (1100, 1500))]:
        config, processor = build(family)
        layout = placement_for(config, processor, hw)
        rect = layout.placement.rect.astype(np.float64)
        area = (rect[:, 2] - rect[:, 0]) * (rect[:, 3] - rect[:, 1])
        base = layout.placement.view == 0
        side, patch = config.vision_config.image_size, config.vision_config.patch_size
        seen = ((side // patch) * patch / side) ** 2  # SigLIP 384/14: 27 patches see 378 of 384 px
        assert area[base].sum() == pytest.approx(seen * hw[0] * hw[1], rel=1e-5)
        assert area[~base].sum() == pytest.approx(seen * hw[0] * hw[1], rel=0.03)


def test_onevision_default_strategy_is_rejected():
    import transformers as tf

    config, processor = build("llava_onevision")
    config.vision_feature_select_strategy = "default"
    processor.vision_feature_select_strategy = "default"
    with pytest.raises(PlacementError, match="cannot pack"):
        placement_for(config, processor, (300, 400))
    assert isinstance(config, tf.LlavaOnevisionConfig)
