"""The decode stage: point/box prompts -> EfficientSAM visible and amodal masks -> COCO RLE.

Modules: `params` (DecodeParams, SamModelParams), `prompts` (prompt tensors per image),
`completion` (training-free amodal completion), `occluders` (which masks occlude an
instance), `sam` (loading EfficientSAM and decoding one image), `parts` (resumable
per-image results), `run` (the stage loop), `cli` (`vlmsam decode`).
"""
