"""Qwen2-VL / Qwen2.5-VL image-token placement proven against transformers' processor and merger.

Real vision geometry (Qwen/Qwen2-VL-7B-Instruct and Qwen/Qwen2.5-VL-7B-Instruct configs: 14-px
patches, temporal patch 2, 2x2 merge, Qwen2.5-VL's 112-px attention windows; the image
processors' settings) with no vision blocks, a patch embedding REPLACED by `IndexEmbed`
(feature 0 of a patch = its index in the processor's flat `pixel_values`) and the merger's
learned parts (norm, MLP) replaced by identities, so the real merger code only groups 4
consecutive patches into one token (and Qwen2.5-VL's real window permutation and its reversal
run around it). The real `model.model.forward` then builds `inputs_embeds` (masked_scatter);
a pre-hook on the language model catches them, and every image token is decoded into the 4
processor patches it holds.

Pixel check: the image is painted with its own coordinates (R = x, G = y codes) and run through
the real image processor; the decoded patches' pixels must lie at the 4 quadrants of the
token's rect, for several aspect ratios and pixel budgets (upscaling and downscaling).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from pipeline.attention.placement import placement_for
from pipeline.vlm_families import get_family
from pipeline.vlm_families.qwen2_vl import FAMILY as QWEN2_VL

DEFAULT_MIN_PIXELS, DEFAULT_MAX_PIXELS = QWEN2_VL.pixel_budget
from test_placement_packing import CLIP_MEAN, CLIP_STD, coordinate_image

D = 4  # vision feature size: [patch index, 1, 0, 0]; the text hidden size is 4 * D

REAL_PROCESSOR_BUDGET = (56 * 56, 28 * 28 * 16384)  # preprocessor_config.json of the real checkpoints
BUDGETS = [
    REAL_PROCESSOR_BUDGET,
    (DEFAULT_MIN_PIXELS, DEFAULT_MAX_PIXELS),  # ours: upscales small images to >= 1024 tokens
    (56 * 56, 28 * 28 * 24),  # a small budget: downscales
]
SIZES = [(240, 320), (320, 240), (90, 250), (250, 37), (113, 113)]


class IndexEmbed(nn.Module):
    """Stands in for the patch embedding: patch i of the flat `pixel_values` -> [i, 1, 0, 0]."""

    def __init__(self):
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(1))  # the tower reads its dtype from a parameter

    def forward(self, hidden_states):
        n = hidden_states.shape[0]
        out = torch.zeros(n, D, dtype=torch.float32)
        out[:, 0] = torch.arange(n, dtype=torch.float32)
        out[:, 1] = 1.0
        return out


def _tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<|image_pad|>": 1, "<|video_pad|>": 2, "describe": 3, "it": 4,
             "<|vision_start|>": 5, "<|vision_end|>": 6}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>",
                                   additional_special_tokens=["<|image_pad|>", "<|video_pad|>",
                                                              "<|vision_start|>", "<|vision_end|>"])


_MODELS: dict = {}


def identity_model(family: str):
    """The real model class (cached) with real vision geometry, IndexEmbed and identity merger parts."""
    import transformers as tf

    if family not in _MODELS:
        text = dict(vocab_size=8, hidden_size=4 * D, intermediate_size=8, num_hidden_layers=1,
                    num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=32768,
                    bos_token_id=None, eos_token_id=None,
                    rope_parameters={"rope_type": "default", "mrope_section": [1, 1, 0], "rope_theta": 1e6})
        ids = dict(image_token_id=1, video_token_id=2, vision_start_token_id=5, vision_end_token_id=6)
        if family == "qwen2_vl":
            vision = tf.Qwen2VLVisionConfig(depth=0, embed_dim=D, hidden_size=4 * D, num_heads=1,
                                            patch_size=14, spatial_merge_size=2, temporal_patch_size=2)
            config = tf.Qwen2VLConfig(text_config=tf.Qwen2VLTextConfig(**text), vision_config=vision, **ids)
            cls = tf.Qwen2VLForConditionalGeneration
        else:
            vision = tf.Qwen2_5_VLVisionConfig(depth=0, hidden_size=D, intermediate_size=8, num_heads=1,
                                               out_hidden_size=4 * D, patch_size=14, spatial_merge_size=2,
                                               temporal_patch_size=2, window_size=112,
                                               fullatt_block_indexes=[7, 15, 23, 31])
            config = tf.Qwen2_5_VLConfig(text_config=tf.Qwen2_5_VLTextConfig(**text), vision_config=vision, **ids)
            cls = tf.Qwen2_5_VLForConditionalGeneration
        torch.manual_seed(0)
        model = cls._from_config(config).eval()
        visual = model.model.visual
        visual.patch_embed = IndexEmbed()
        visual.merger.ln_q = nn.Identity()
        visual.merger.mlp = nn.Identity()
        _MODELS[family] = (model, config)
    return _MODELS[family]


def processor_for(family: str, budget):
    import transformers as tf

    image_processor = tf.Qwen2VLImageProcessorPil(min_pixels=budget[0], max_pixels=budget[1], patch_size=14,
                                                  temporal_patch_size=2, merge_size=2)
    return get_family(family).processor_class()(image_processor=image_processor, tokenizer=_tokenizer())


class _Caught(Exception):
    pass


def image_embeds(model, config, inputs) -> np.ndarray:
    seen = {}

    def hook(module, args, kwargs):
        seen["embeds"] = kwargs["inputs_embeds"]
        raise _Caught

    handle = model.model.language_model.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        with torch.no_grad(), pytest.raises(_Caught):
            model.model(**inputs)
    finally:
        handle.remove()
    ids = inputs["input_ids"][0]
    return seen["embeds"][0][ids == config.image_token_id].double().numpy()


def patch_centres(pixel_values: np.ndarray, image_hw) -> np.ndarray:
    """(x, y) centroid in original pixels of each flat processor patch, decoded from its colours."""
    height, width = image_hw
    patches = pixel_values.reshape(-1, 3, 2, 14, 14)[:, :, 0]  # both temporal copies are the same frame
    values = (patches * CLIP_STD[None, :, None, None] + CLIP_MEAN[None, :, None, None]) * 255.0
    return np.stack([values[:, 0].mean(axis=(1, 2)) / 255.0 * width,
                     values[:, 1].mean(axis=(1, 2)) / 255.0 * height], axis=1)


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl"])
@pytest.mark.parametrize("budget", BUDGETS, ids=["real-default", "ours", "small"])
def test_placement_equals_transformers_processor_and_merger(family, budget):
    model, config = identity_model(family)
    processor = processor_for(family, budget)
    for image_hw in SIZES:
        height, width = image_hw
        inputs = processor(images=coordinate_image(height, width),
                           text="<|vision_start|><|image_pad|><|vision_end|> describe it", return_tensors="pt")
        layout = placement_for(config, processor, image_hw)
        positions = layout.image_positions(inputs["input_ids"])
        assert np.all(np.diff(positions) == 1) and layout.keep.all()
        grid_t, grid_h, grid_w = inputs["image_grid_thw"][0].tolist()
        assert grid_t == 1 and layout.view_shapes == {0: (grid_h // 2, grid_w // 2)}
        n_tokens = layout.n_image_tokens
        if budget == (DEFAULT_MIN_PIXELS, DEFAULT_MAX_PIXELS):
            assert 1024 <= n_tokens <= 1280

        # the 4 processor patches transformers merged into each token, in token order
        emb = image_embeds(model, config, inputs).reshape(n_tokens, 4, D)
        assert np.all(emb[:, :, 1] == 1.0)
        merged = np.rint(emb[:, :, 0]).astype(int)  # [T, 4]
        assert sorted(merged.ravel().tolist()) == list(range(4 * n_tokens))

        # their pixels lie at the 4 quadrants (row-major 2x2) of the token's rect
        centres = patch_centres(inputs["pixel_values"].numpy(), image_hw)[merged]  # [T, 4, 2]
        rect = layout.placement.rect.astype(np.float64)
        qx = np.array([0.25, 0.75, 0.25, 0.75])
        qy = np.array([0.25, 0.25, 0.75, 0.75])
        want_x = rect[:, 0:1] + qx[None] * (rect[:, 2:3] - rect[:, 0:1])
        want_y = rect[:, 1:2] + qy[None] * (rect[:, 3:4] - rect[:, 1:2])
        # 8-bit coordinate codes averaged over a patch, resampling blur at the borders: at most
        # 0.6 px off here; neighbouring quadrants are >= 1.4 px apart (up to 32 px)
        tol = 0.8
        np.testing.assert_array_less(np.abs(centres[..., 0] - want_x), tol, err_msg=f"{family} {image_hw} x")
        np.testing.assert_array_less(np.abs(centres[..., 1] - want_y), tol, err_msg=f"{family} {image_hw} y")

        # rows/cols: the full row-major raster; rects tile the image
        n_rows, n_cols = layout.view_shapes[0]
        flat = np.arange(n_rows * n_cols)
        np.testing.assert_array_equal(layout.placement.row, flat // n_cols)
        np.testing.assert_array_equal(layout.placement.col, flat % n_cols)
        area = (rect[:, 2] - rect[:, 0]) * (rect[:, 3] - rect[:, 1])
        assert area.sum() == pytest.approx(height * width, rel=1e-6)
