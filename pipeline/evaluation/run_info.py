"""metrics.json's "run": which models, layers, prompts and completion made the predictions.

The VLM part (id, revision, family, dtype, the resolved layers, sink removal, occlusion
listing) is read from the attention cache the extract stage wrote: what actually ran, not
what the parameter file says now. The segmenter (family, id), the EfficientSAM variant, the prompt mode and the
completion settings come from the parameter file's `models`, `prompt_mode` and `decode`
sections (the ones the decode stage read), `models.profile: auto` resolved as decode resolved it.
"""

from __future__ import annotations

import os
from pathlib import Path

from pipeline.decoding.params import DecodeParams, sam_models_from_section, segmenter_from_section
from pipeline.params_file import section


def describe_run(params: dict, cache: str | os.PathLike, source: str | os.PathLike = "params") -> dict:
    """The "run" of metrics.json from a whole parameter dict and the attention cache."""
    from pipeline.attention.cache import read_info
    from pipeline.profiles import with_resolved_profile

    annotations = (params.get("dataset") or {}).get("annotations")
    models = with_resolved_profile(section(params, "models", source), annotations, str(source))
    profile, sam = sam_models_from_section(models)
    segmenter = segmenter_from_section(models)
    decode = DecodeParams.from_dict(section(params, "decode", source), params.get("prompt_mode"))
    info = read_info(cache)
    extract = info.params.get("extract", {})
    model = info.params.get("model", {})
    return {
        "source": f"VLM and extract settings from {cache}; segmenter and decode settings from {source}",
        "profile": profile,
        "vlm": {"id": info.model_id, "revision": info.model_revision,
                "family": model.get("family"), "dtype": model.get("dtype")},
        "segmenter": {"family": segmenter.family, "id": segmenter.id},
        "efficient_sam": {"variant": sam.variant, "checkpoint": sam.checkpoint,
                          "amodal_decoder": sam.amodal_decoder},
        "layers": [int(x) for x in info.layers],
        "sink_removal": extract.get("sink_removal"),
        "sink_method": extract.get("sink_method") if extract.get("sink_removal") else None,
        "head_aggregation": extract.get("head_aggregation"),
        "occlusion_listing": extract.get("occlusion_listing") if extract.get("ask_occlusion") else "not asked",
        "prompt_mode": decode.prompt_mode,
        "negatives": decode.negatives,
        "completion": decode.completion,
        "occluder_rule": decode.occluders,
        "modal_given": decode.modal_given,
        "smoke": bool(info.smoke or profile == "smoke"),
    }


def undescribed_run(why: str) -> dict:
    """The "run" of an evaluation that was given no run to describe, saying why."""
    return {"source": f"unknown: {why}"}
