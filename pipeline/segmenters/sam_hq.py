"""SAM-HQ (transformers `SamHQModel`, syscv-community/sam-hq-vit-*) behind the segmenter interface.

As SAM (`pipeline.segmenters.sam`: same preprocessing, point scaling and post-processing), plus the
HQ branch: the mask decoder reads the ViT's global-attention block outputs
(`intermediate_embeddings`), so they are kept in `ImageEmbedding.extras` beside the cached
embedding; a decode without them fails instead of silently skipping the HQ branch. The forward's
default `hq_token_only=False` is kept.
"""

from __future__ import annotations

from pipeline.segmenters.sam import SamSegmenter
from pipeline.segmenters.segmenter import ImageEmbedding

INTERMEDIATE = "intermediate_embeddings"


class SamHqSegmenter(SamSegmenter):
    family = "sam_hq"
    model_types = ("sam_hq",)
    default_id = "syscv-community/sam-hq-vit-huge"
    variants = ("syscv-community/sam-hq-vit-base", "syscv-community/sam-hq-vit-large", "syscv-community/sam-hq-vit-huge")

    @staticmethod
    def model_class():
        from transformers import SamHQModel

        return SamHQModel

    @staticmethod
    def published_config(vision: dict):
        """A SAM-HQ config with the ViT `vision`; the HQ decoder's `vit_dim` is its width."""
        from transformers import SamHQConfig, SamHQMaskDecoderConfig, SamHQVisionConfig

        vision = SamHQVisionConfig(**vision)
        decoder = SamHQMaskDecoderConfig(vit_dim=vision.hidden_size)
        return SamHQConfig(vision_config=vision.to_dict(), mask_decoder_config=decoder.to_dict())

    def image_features(self, pixels):
        embeddings, intermediate = self.model.get_image_embeddings(pixels)
        return embeddings, {INTERMEDIATE: intermediate}

    def decoder_inputs(self, embedding: ImageEmbedding) -> dict:
        if not embedding.extras.get(INTERMEDIATE):
            raise ValueError("SAM-HQ embedding without its intermediate_embeddings: the HQ branch would be skipped")
        return {"image_embeddings": embedding.embeddings, INTERMEDIATE: embedding.extras[INTERMEDIATE]}

    real_width_variants = variants  # built from sam.PUBLISHED_VISION, vit_dim = the ViT's width


FAMILY = SamHqSegmenter
