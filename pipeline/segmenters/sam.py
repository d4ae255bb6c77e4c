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

    @staticmethod
    def smoke_config():
        """A small SAM config (narrow ViT, full 1024 input and 256-wide decoder) for smoke runs."""
        from transformers import SamConfig, SamVisionConfig

        return SamConfig(vision_config=SamVisionConfig(**SMOKE_VISION).to_dict())

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


FAMILY = SamSegmenter
