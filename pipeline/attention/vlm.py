"""Loading the VLM: a real LLaVA-family or Qwen2-VL / Qwen2.5-VL checkpoint (HF cache or local
folder) or a smoke model.

Real profile: the family comes from the checkpoint's `config.model_type` ('llava',
'llava_next', 'llava_onevision', 'qwen2_vl', 'qwen2_5_vl'); the model class is the family's
`*ForConditionalGeneration` with SDPA attention (the capture switches only the language
model to its own attention function later); the processor uses the PIL image-processor
backend (no torchvision). OneVision's real processor class requires a video processor
that needs torchvision, so its image-only subclass from `smoke_models` is used; the same
holds for the Qwen processors (`qwen_family.qwen_processor_class`), which also get the pixel
budget `models.vlm.min_pixels` / `max_pixels`.

Hub access: with HF_HUB_OFFLINE set, only the local cache is consulted
(`local_files_only=True`). Any failure to find the checkpoint becomes a `VlmNotAvailableError`
saying which repo to download and where it must land. The revision recorded is the commit
hash of the cache snapshot when known ('' for a plain local folder).

Smoke profile: F1's `build_smoke_vlm(family, seed)`; `LoadedVlm.smoke` is True and the
model id is `smoke/<family>`.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from pipeline.attention.params import FAMILIES, VlmModelParams

log = logging.getLogger(__name__)

_MODEL_CLASSES = {
    "llava": "LlavaForConditionalGeneration",
    "llava_next": "LlavaNextForConditionalGeneration",
    "llava_onevision": "LlavaOnevisionForConditionalGeneration",
    "qwen2_vl": "Qwen2VLForConditionalGeneration",
    "qwen2_5_vl": "Qwen2_5_VLForConditionalGeneration",
}
_PROCESSOR_CLASSES = {"llava": "LlavaProcessor", "llava_next": "LlavaNextProcessor"}


class VlmNotAvailableError(RuntimeError):
    """The requested checkpoint is neither a local folder nor in the Hugging Face cache."""


@dataclass
class LoadedVlm:
    """A model ready for extraction and what the cache records about it."""

    model: object
    processor: object
    family: str
    model_id: str
    revision: str
    smoke: bool


def hub_offline() -> bool:
    """True when HF_HUB_OFFLINE is set (read now, not only at import of huggingface_hub)."""
    import huggingface_hub.constants as hc

    env = os.environ.get("HF_HUB_OFFLINE", "").strip().lower()
    return bool(hc.HF_HUB_OFFLINE) or env in ("1", "true", "yes", "on")


def resolve_dtype(dtype: str, device: str):
    """torch dtype of a dtype name; 'auto' = bfloat16 on CUDA, float32 on CPU."""
    import torch

    if dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]


def resolve_device(device: str) -> str:
    """'auto' = 'cuda' when available, else 'cpu'; a clear error for CUDA without a GPU."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"models.vlm.device is {device!r} but no CUDA device is available")
    return device


def load_vlm(params: VlmModelParams) -> LoadedVlm:
    """Load the VLM the parameters describe (see module docstring)."""
    device = resolve_device(params.device)
    dtype = resolve_dtype(params.dtype, device)
    if params.smoke:
        return _load_smoke(params, device, dtype)
    return _load_real(params, device, dtype)


def _load_smoke(params: VlmModelParams, device: str, dtype) -> LoadedVlm:
    from pipeline.attention.smoke_models import SMOKE_MODEL_IDS, build_smoke_vlm, smoke_family

    family = params.family or smoke_family(params.id) or params.resolved_family()
    if family is None:
        raise ValueError(
            f"models.profile is 'smoke' but the family is unknown: set models.vlm.family to one "
            f"of {FAMILIES} (id {params.id!r} is not a known model id)"
        )
    model, processor = build_smoke_vlm(family, seed=params.seed, **_pixel_budget(params, family))
    model.to(device=device, dtype=dtype)
    log.warning("SMOKE run: random weights (tiny %s VLM, seed %d)", family, params.seed)
    return LoadedVlm(model, processor, family, SMOKE_MODEL_IDS[family], f"seed={params.seed}", True)


def _not_available(params: VlmModelParams, err: Exception) -> VlmNotAvailableError:
    import huggingface_hub.constants as hc

    cache = params.cache_dir or hc.HF_HUB_CACHE
    rev = f" --revision {params.revision}" if params.revision else ""
    offline = " (HF_HUB_OFFLINE is set, so only the local cache was searched)" if hub_offline() else ""
    return VlmNotAvailableError(
        f"VLM {params.id!r} could not be loaded: it is not a local folder and not (completely) in the "
        f"Hugging Face cache {cache}{offline}.\n"
        f"Download it on a machine with network:  hf download {params.id}{rev}   "
        f"(older huggingface_hub: huggingface-cli download {params.id}{rev})\n"
        f"and make its cache folder models--{params.id.replace('/', '--')} land in {cache} on this machine "
        f"(or set HF_HOME / models.vlm.cache_dir to where it is), or download it into a folder "
        f"(--local-dir DIR) and set models.vlm.id to DIR.\nCause: {type(err).__name__}: {err}"
    )


def snapshot_revision(model_id: str, cache_dir: str | None, revision: str | None) -> str:
    """Commit hash of the cached snapshot of `model_id` ('' when not from the hub cache)."""
    from huggingface_hub import try_to_load_from_cache

    if Path(model_id).is_dir():
        parent = Path(model_id).resolve()
        return parent.name if parent.parent.name == "snapshots" else ""
    path = try_to_load_from_cache(model_id, "config.json", cache_dir=cache_dir, revision=revision)
    if isinstance(path, str):
        parent = Path(path).parent
        if parent.parent.name == "snapshots":
            return parent.name
    return revision or ""


def _load_real(params: VlmModelParams, device: str, dtype) -> LoadedVlm:
    import transformers as tf

    local = Path(params.id).is_dir()
    hub_kwargs = {} if local else dict(
        revision=params.revision, cache_dir=params.cache_dir, local_files_only=hub_offline()
    )
    try:
        config = tf.AutoConfig.from_pretrained(params.id, **hub_kwargs)
    except OSError as e:
        if local:
            raise VlmNotAvailableError(f"{params.id}: not a loadable model folder ({e})") from e
        raise _not_available(params, e) from e
    family = config.model_type
    if family not in FAMILIES:
        raise ValueError(f"{params.id}: model_type {family!r} is not a supported VLM family {FAMILIES}")
    if params.family is not None and params.family != family:
        raise ValueError(f"{params.id}: models.vlm.family is {params.family!r} but the checkpoint is {family!r}")
    try:
        processor = _load_processor(params, family, hub_kwargs)
        model_cls = getattr(tf, _MODEL_CLASSES[family])
        model = model_cls.from_pretrained(
            params.id, config=config, dtype=dtype, attn_implementation="sdpa",
            device_map=device if device != "cpu" else None, **hub_kwargs,
        )
    except OSError as e:
        if local:
            raise VlmNotAvailableError(f"{params.id}: incomplete model folder ({e})") from e
        raise _not_available(params, e) from e
    if device == "cpu":
        model.to(device)
    model.eval()
    model.requires_grad_(False)
    revision = snapshot_revision(params.id, params.cache_dir, params.revision)
    log.info("loaded %s (%s, revision %s) on %s as %s", params.id, family, revision or "?", device, dtype)
    return LoadedVlm(model, processor, family, params.id, revision, False)


def _pixel_budget(params: VlmModelParams, family: str) -> dict:
    """min_pixels / max_pixels of a Qwen family; {} for LLaVA (an error unless left at the defaults)."""
    from pipeline.attention.qwen_family import DEFAULT_MAX_PIXELS, DEFAULT_MIN_PIXELS, QWEN_FAMILIES

    if family in QWEN_FAMILIES:
        return {"min_pixels": params.min_pixels, "max_pixels": params.max_pixels}
    if (params.min_pixels, params.max_pixels) != (DEFAULT_MIN_PIXELS, DEFAULT_MAX_PIXELS):
        raise ValueError(f"models.vlm.min_pixels / max_pixels apply to the Qwen families only; {family} "
                         "has a fixed input resolution: remove them")
    return {}


def _load_processor(params: VlmModelParams, family: str, hub_kwargs: dict):
    """The family's processor from the checkpoint (PIL backend; Qwen: with the pixel budget)."""
    from pipeline.attention.qwen_family import QWEN_FAMILIES, load_qwen_image_processor

    budget = _pixel_budget(params, family)
    if family in QWEN_FAMILIES:
        image_processor = load_qwen_image_processor(params.id, **budget, **hub_kwargs)
        return _processor_class(family).from_pretrained(params.id, image_processor=image_processor, **hub_kwargs)
    return _processor_class(family).from_pretrained(params.id, backend="pil", **hub_kwargs)


def _processor_class(family: str):
    import transformers as tf
    from pipeline.attention.qwen_family import QWEN_FAMILIES, qwen_processor_class

    if family in QWEN_FAMILIES:
        return qwen_processor_class(family)
    if family == "llava_onevision":
        from pipeline.attention.smoke_models import onevision_image_only_processor_class

        return onevision_image_only_processor_class()
    return getattr(tf, _PROCESSOR_CLASSES[family])
