"""The official EfficientSAM mask-decoder computation, written plainly: the image embedding tiled
per query and every attention through the q/k/v/out projections of all its inputs.

The reference that `token_image_attention` (the decoder we run) is tested and benchmarked
against: same weights, same numbers up to float rounding, more work. Not used by the pipeline.
"""

from __future__ import annotations

import torch

from pipeline.models.efficient_sam.mask_decoder import MaskDecoder
from pipeline.models.efficient_sam.two_way_transformer import TwoWayTransformer


def official_two_way_transformer(
    transformer: TwoWayTransformer, image_embedding: torch.Tensor, image_pe: torch.Tensor, tokens: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """image_embedding [n, C, H, W] (one per query), image_pe [1, C, H, W], tokens [n, T, C]
    → (tokens [n, T, C], image tokens [n, H·W, C])."""
    keys = image_embedding.flatten(2).transpose(1, 2)
    key_pe = image_pe.flatten(2).transpose(1, 2)
    queries = tokens
    for layer in transformer.layers:
        if not layer.skip_first_layer_pe:
            queries = queries + tokens
        queries = layer.norm1(queries + layer.self_attn(queries, queries, queries))
        queries = layer.norm2(queries + layer.cross_attn_token_to_image(queries + tokens, keys + key_pe, keys))
        queries = layer.norm3(queries + layer.mlp(queries))
        keys = layer.norm4(keys + layer.cross_attn_image_to_token(keys + key_pe, queries + tokens, queries))
    attended = transformer.final_attn_token_to_image(queries + tokens, keys + key_pe, keys)
    return transformer.norm_final_attn(queries + attended), keys


def official_mask_decoder(
    decoder: MaskDecoder, image_embeddings: torch.Tensor, image_pe: torch.Tensor, prompt_tokens: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """As `MaskDecoder.predict_all_masks` with the image tiled per query: image_embeddings [B, C, H, W],
    prompt_tokens [B, Q, P, C] → masks [B·Q, 4, 4H, 4W], IoU [B·Q, 4]."""
    q = prompt_tokens.shape[1]
    tiled = image_embeddings.repeat_interleave(q, dim=0)
    tokens = decoder.with_output_tokens(prompt_tokens).flatten(0, 1)
    hs, src = official_two_way_transformer(decoder.transformer, tiled, image_pe, tokens)
    return decoder.masks_and_iou(hs, src, *image_embeddings.shape[-2:])
