"""EfficientSAM, our implementation with the official state-dict layout (see `model` for conventions)."""

from pipeline.models.efficient_sam.checkpoint import CheckpointError, read_state_dict
from pipeline.models.efficient_sam.mask_decoder import MaskDecoder, build_mask_decoder, load_mask_decoder
from pipeline.models.efficient_sam.model import (
    DECODER_MAX_NUM_INPUT_POINTS,
    OUTPUT_UPSAMPLE_MODE,
    VARIANTS,
    EfficientSam,
    Variant,
    build_efficient_sam,
    get_variant,
    load_efficient_sam,
)
from pipeline.models.efficient_sam.seeded import build_seeded_efficient_sam, seeded_state_dict

__all__ = [
    "CheckpointError",
    "DECODER_MAX_NUM_INPUT_POINTS",
    "EfficientSam",
    "MaskDecoder",
    "OUTPUT_UPSAMPLE_MODE",
    "VARIANTS",
    "Variant",
    "build_efficient_sam",
    "build_mask_decoder",
    "build_seeded_efficient_sam",
    "get_variant",
    "load_efficient_sam",
    "load_mask_decoder",
    "read_state_dict",
    "seeded_state_dict",
]
