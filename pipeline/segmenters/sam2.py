"""SAM 2.1 Hiera T/S/B+/L (transformers `Sam2Model`, e.g. facebook/sam2.1-hiera-large) behind the
segmenter interface.

Preprocessing, point scaling and mask post-processing are `Sam2Processor`'s, written without
torchvision in `_sam2_processing` (square resize to 1024 without padding, ImageNet normalisation;
x * T / W, y * T / H with T the processor's target size; bilinear from the 256x256 logits straight to
the original size). `get_image_embeddings` gives three feature maps: the two high-resolution ones
(already projected by the mask decoder's conv_s0 / conv_s1) go into `ImageEmbedding.extras`
beside the 64x64 embedding, and a decode without them fails. The decoder also returns SAM 2's
object-score logit per query. The published hub configs are `model_type: sam2_video`; they load
into `Sam2Model` (the video memory modules are not read). SAM 2 was trained on negative points,
reads any number of points per query, and a box is a separate prompt.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from pipeline.segmenters._sam2_processing import PREPROCESSOR_FILE, PROCESSOR_FILE, Sam2Processing
from pipeline.segmenters._transformers_family import TransformersSegmenter
from pipeline.segmenters.segmenter import ImageEmbedding

HIGH_RES = "high_resolution_features"
# the smoke model's Hiera: narrow, 1-2 blocks per stage (global attention in stage 3), with the full 1024 input (64x64 embedding)
SMOKE_HIERA = {"hidden_size": 12, "embed_dim_per_stage": [12, 24, 48, 96], "num_attention_heads_per_stage": [1, 1, 2, 2],
               "blocks_per_stage": [1, 1, 2, 1], "global_attention_blocks": [3]}
# facebook/sam2.1-hiera-large's Hiera (its published config), for full-width random-weight runs
LARGE_HIERA = {"hidden_size": 144, "num_attention_heads": 2, "embed_dim_per_stage": [144, 288, 576, 1152],
               "num_attention_heads_per_stage": [2, 4, 8, 16], "blocks_per_stage": [2, 6, 36, 4],
               "window_size_per_stage": [8, 4, 16, 8], "global_attention_blocks": [23, 33, 43]}


def sam2_config(hiera: dict):
    """A `Sam2Config` with the Hiera backbone `hiera` (Sam2HieraDetConfig keywords), the FPN fed
    by its stage widths, and the published 1024 input, 256-wide prompt encoder and mask decoder."""
    from transformers import Sam2Config, Sam2HieraDetConfig, Sam2VisionConfig

    backbone = Sam2HieraDetConfig(**hiera)
    vision = Sam2VisionConfig(backbone_config=backbone.to_dict(), backbone_channel_list=backbone.embed_dim_per_stage[::-1])
    return Sam2Config(vision_config=vision.to_dict())


class Sam2Segmenter(TransformersSegmenter):
    family = "sam2"
    model_types = ("sam2_video", "sam2")  # the hub's checkpoints, and Sam2Model.save_pretrained's
    default_id = "facebook/sam2.1-hiera-large"
    variants = ("facebook/sam2.1-hiera-tiny", "facebook/sam2.1-hiera-small", "facebook/sam2.1-hiera-base-plus",
                "facebook/sam2.1-hiera-large")

    @staticmethod
    def model_class():
        from transformers import Sam2Model

        return Sam2Model

    @classmethod
    def smoke_model(cls):
        return cls.model_class()(sam2_config(SMOKE_HIERA)), Sam2Processing.published()

    # --- real-width models with random weights (benchmarks, gpu_check) ------------------------------
    real_width_variants = ("facebook/sam2.1-hiera-large",)  # built from LARGE_HIERA

    @classmethod
    def seeded_real_width(cls, variant: str, device: str = "cpu", encoder_blocks: int | None = None) -> "Sam2Segmenter":
        """facebook/sam2.1-hiera-large at its real widths with seeded random weights, built on
        `device`; `encoder_blocks` keeps that many blocks (at least 2) in Hiera's third stage and one in
        each other stage, its second block global (a stage's first block pools, so it is windowed);
        every feature map keeps its real shape."""
        from pipeline.attention.vlm import resolve_device
        from pipeline.segmenters._transformers_family import SMOKE_SEED

        if variant not in cls.real_width_variants:
            raise ValueError(f"{cls.family} variant {variant!r}: expected one of {cls.real_width_variants}")
        hiera = dict(LARGE_HIERA)
        if encoder_blocks:
            hiera.update(blocks_per_stage=[1, 1, max(2, encoder_blocks), 1], global_attention_blocks=[3])
        torch.manual_seed(SMOKE_SEED)
        with torch.device(resolve_device(device)):
            model = cls.model_class()(sam2_config(hiera))
        provenance = {"family": cls.family, "id": f"random/{variant}", "profile": "smoke", "variant": variant,
                      "encoder_blocks": sum(hiera["blocks_per_stage"])}
        return cls(model.eval(), Sam2Processing.published(), True, provenance)

    @classmethod
    def image_processor_from(cls, model_id: str, local_files_only: bool) -> Sam2Processing:
        folder = Path(model_id)
        if not folder.is_dir():  # a hub id: the snapshot folder of the cached processor files
            from transformers.utils import cached_file

            folder = Path(cached_file(model_id, PREPROCESSOR_FILE, local_files_only=local_files_only)).parent
            cached_file(model_id, PROCESSOR_FILE, local_files_only=local_files_only,
                        _raise_exceptions_for_missing_entries=False)
        return Sam2Processing.from_folder(folder)

    # --- encode / decode -------------------------------------------------------------------------
    @torch.inference_mode()
    def embed(self, image: np.ndarray) -> ImageEmbedding:
        pixels = self.image_processor.pixel_values(image)
        pixels = pixels.to(self.device, dtype=next(self.model.parameters()).dtype)
        *high_res, embeddings = self.model.get_image_embeddings(pixels)
        return ImageEmbedding(embeddings, tuple(image.shape[:2]), self.image_processor.size, {HIGH_RES: high_res})

    def decoder_inputs(self, embedding: ImageEmbedding) -> dict:
        high_res = embedding.extras.get(HIGH_RES)
        if not high_res:
            raise ValueError("SAM 2 embedding without its high_resolution_features: the mask decoder needs them")
        return {"image_embeddings": [*high_res, embedding.embeddings]}

    def scale(self, embedding: ImageEmbedding, xy: np.ndarray) -> torch.Tensor:
        return self.image_processor.scale_points(torch.from_numpy(np.asarray(xy, np.float32)), embedding.original_size).to(self.device)

    @torch.inference_mode()
    def upscale(self, embedding: ImageEmbedding, low_res_logits: torch.Tensor) -> torch.Tensor:
        return Sam2Processing.logits_to_original(low_res_logits[:, None].float(), embedding.original_size)[:, 0]


FAMILY = Sam2Segmenter
