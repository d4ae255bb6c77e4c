"""Whether a checkpoint that `pipeline.weights` found actually loads (`vlmsam weights`).

EfficientSAM and the amodal decoder are loaded strictly into their modules (small models). A VLM
is checked without materialising its weights: its config must parse with transformers, and every
weight file must open (safetensors headers; `.bin` files memory-mapped with weights_only=True).
"""

from __future__ import annotations

from pathlib import Path

from pipeline.weights import AMODAL_DECODER, EFFICIENT_SAM, SEGMENTER, VLM, WeightStatus, vlm_weight_files


def load_problem(row: WeightStatus) -> str:
    """'' when the checkpoint of `row` (present) loads, else why it does not, on one line."""
    try:
        if row.kind == EFFICIENT_SAM:
            from pipeline.models.efficient_sam import load_efficient_sam

            load_efficient_sam(row.variant, row.path)
        elif row.kind == AMODAL_DECODER:
            from pipeline.models.efficient_sam import load_mask_decoder

            load_mask_decoder(row.path)
        elif row.kind in (VLM, SEGMENTER):  # transformers folders: config parses, weight files open
            check_vlm_folder(Path(row.path))
        else:
            raise ValueError(f"{row.name}: unknown checkpoint kind {row.kind!r}")
    except Exception as e:  # any failure to load is the answer, reported on one line
        return " ".join(f"{type(e).__name__}: {e}".split())
    return ""


def check_vlm_folder(folder: Path) -> None:
    """Raise when the VLM in `folder` has a config transformers cannot read or a weight file that
    does not open."""
    import torch
    from safetensors import safe_open
    from transformers import AutoConfig

    AutoConfig.from_pretrained(folder, local_files_only=True)
    files = vlm_weight_files(folder)
    if not files:
        raise FileNotFoundError(f"{folder}: no weight files")
    for path in files:
        if path.suffix == ".safetensors":
            with safe_open(str(path), framework="pt") as f:
                f.keys()
        else:
            torch.load(path, map_location="cpu", weights_only=True, mmap=True)
