"""SAM ViT-B/L/H (transformers `SamModel`, e.g. facebook/sam-vit-huge) behind the segmenter interface.

Preprocessing is the checkpoint's own image processor (`SamImageProcessorPil`: longest side to
1024, rescale, ImageNet normalisation, pad bottom-right to 1024x1024); points and boxes are scaled
as `SamProcessor._normalize_coordinates` does (x * new_w / W, y * new_h / H with (new_h, new_w)
the resized size); masks come back as `post_process_masks` makes them (bilinear to the padded
1024 grid, crop to the resized size, bilinear to the original size). SAM was trained on negative
points; it reads any number of points per query, and a box is a separate prompt. Loading and the
grouped decode are shared with the other transformers families (`_transformers_family`).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.segmenters._transformers_family import TransformersSegmenter
from pipeline.segmenters.segmenter import ImageEmbedding

# the smoke model's vision encoder: narrow and 2 blocks deep, with the full 1024 input (64x64 embedding)
SMOKE_VISION = {"hidden_size": 48, "num_hidden_layers": 2, "num_attention_heads": 2, "mlp_dim": 96,
                "global_attn_indexes": [1], "window_size": 14}
# the published ViTs (config.json `vision_config` of facebook/sam-vit-* and syscv-community/sam-hq-vit-*,
# mlp_dim = 4 x hidden_size), by the last part of the hub id; their prompt encoder and mask decoder
# are transformers' defaults, the same for all three
PUBLISHED_VISION = {
    "base": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "global_attn_indexes": [2, 5, 8, 11]},
    "large": {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16, "global_attn_indexes": [5, 11, 17, 23]},
    "huge": {"hidden_size": 1280, "num_hidden_layers": 32, "num_attention_heads": 16, "global_attn_indexes": [7, 15, 23, 31]},
}
REAL_WIDTH_SEED = 0


def cut_vision(vision: dict, blocks: int | None) -> dict:
    """`vision` with only its first `blocks` blocks (widths kept), the last of them global when
    none of the published global blocks is left (SAM-HQ reads the first global block's output)."""
    if blocks is None or blocks >= vision["num_hidden_layers"]:
        return dict(vision)
    kept = [i for i in vision["global_attn_indexes"] if i < blocks] or [blocks - 1]
    return {**vision, "num_hidden_layers": blocks, "global_attn_indexes": kept}


class SamSegmenter(TransformersSegmenter):
    family = "sam"
    model_types = ("sam",)
    default_id = "facebook/sam-vit-huge"
    variants = ("facebook/sam-vit-base", "facebook/sam-vit-large", "facebook/sam-vit-huge")

    # --- family classes (SAM-HQ overrides these) ---------------------------------------------------
    @staticmethod
    def model_class():
        from transformers import SamModel

        return SamModel

    @classmethod
    def smoke_config(cls):
        """A small SAM config (narrow ViT, full 1024 input and 256-wide decoder) for smoke runs."""
        return cls.published_config(SMOKE_VISION)

    @staticmethod
    def published_config(vision: dict):
        """A SAM config with the ViT `vision` (SamVisionConfig keywords) and the published prompt
        encoder and mask decoder (1024 input, 256 wide)."""
        from transformers import SamConfig, SamVisionConfig

        return SamConfig(vision_config=SamVisionConfig(**vision).to_dict())

    @staticmethod
    def image_processor_class():
        from transformers import SamImageProcessorPil

        return SamImageProcessorPil

    @classmethod
    def smoke_model(cls):
        return cls.model_class()(cls.smoke_config()), cls.image_processor_class()()

    @classmethod
    def image_processor_from(cls, model_id: str, local_files_only: bool):
        return cls.image_processor_class().from_pretrained(model_id, local_files_only=local_files_only)

    # --- encode / decode -------------------------------------------------------------------------
    @torch.inference_mode()
    def embed(self, image: np.ndarray) -> ImageEmbedding:
        inputs = self.image_processor(images=image, return_tensors="pt")
        pixels = inputs["pixel_values"].to(self.device, dtype=next(self.model.parameters()).dtype)
        embeddings, extras = self.image_features(pixels)
        size = tuple(int(v) for v in inputs["reshaped_input_sizes"][0])
        return ImageEmbedding(embeddings, tuple(image.shape[:2]), size, extras)

    def image_features(self, pixels: torch.Tensor):
        """(image embedding, extras) of preprocessed pixels; SAM needs no extras."""
        return self.model.get_image_embeddings(pixels), {}

    def scale(self, embedding: ImageEmbedding, xy: np.ndarray) -> torch.Tensor:
        """Original-pixel (x, y) [..., 2] -> the resized grid, as SamProcessor._normalize_coordinates."""
        (old_h, old_w), (new_h, new_w) = embedding.original_size, embedding.input_size
        coords = xy.astype(np.float64).copy()
        coords[..., 0] *= new_w / old_w
        coords[..., 1] *= new_h / old_h
        return torch.from_numpy(coords).float().to(self.device)

    @torch.inference_mode()
    def upscale(self, embedding: ImageEmbedding, low_res_logits: torch.Tensor) -> torch.Tensor:
        pad = self.image_processor.pad_size
        h, w = embedding.input_size
        up = F.interpolate(low_res_logits[:, None].float(), (pad["height"], pad["width"]), mode="bilinear", align_corners=False)
        return F.interpolate(up[..., :h, :w], embedding.original_size, mode="bilinear", align_corners=False)[:, 0]

    # --- real-width models with random weights (benchmarks) ---------------------------------------
    real_width_variants = variants  # built from PUBLISHED_VISION

    @classmethod
    def seeded_real_width(cls, variant: str, device: str = "cpu", encoder_blocks: int | None = None) -> "SamSegmenter":
        from pipeline.attention.vlm import resolve_device

        if variant not in cls.real_width_variants:
            raise ValueError(f"{cls.family} variant {variant!r}: expected one of {cls.real_width_variants}")
        vision = cut_vision(PUBLISHED_VISION[variant.rsplit("-", 1)[-1]], encoder_blocks)
        torch.manual_seed(REAL_WIDTH_SEED)
        model = cls.model_class()(cls.published_config(vision))
        provenance = {"family": cls.family, "id": None, "profile": "smoke", "variant": variant,
                      "encoder_blocks": vision["num_hidden_layers"]}
        return cls(model.to(resolve_device(device)).eval(), cls.image_processor_class()(), True, provenance)


FAMILY = SamSegmenter
