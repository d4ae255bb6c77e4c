"""Loading the VLM: a real checkpoint of a registered family (HF cache or local folder) or a smoke model.

Real profile: the family is the registered one (`pipeline.vlm_families`) whose model classes
include the checkpoint's `config.model_type`; the model class is the family's
`*ForConditionalGeneration` for that model type in `dtype` (bf16 on CUDA), placed by transformers'
`device_map` (weights load straight onto the device; needs `accelerate`), with SDPA attention (the
capture switches only the language model to its own attention function later); the processor is
the family's (`VlmFamily.load_processor`: PIL image-processor backend, no torchvision; the pixel
budget `models.vlm.min_pixels` / `max_pixels` where the family has one).

Hub access: none unless `models.vlm.allow_download` is true; otherwise (and always with
HF_HUB_OFFLINE set) every `from_pretrained` gets `local_files_only=True`, so only the local
folder or cache is consulted and nothing is retried over the network. Any failure to find the
checkpoint becomes a `VlmNotAvailableError` saying which repo to download, where it must land
and that `vlmsam weights` lists what is missing. The revision recorded is the commit
hash of the cache snapshot when known ('' for a plain local folder).

Smoke profile: `pipeline.vlm_families.build_smoke_vlm(family, seed)`; `LoadedVlm.smoke` is True and
the model id is `smoke/<family>`.
"""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pipeline.attention.params import FAMILIES, VlmModelParams
from pipeline.errors import VlmsamError
from pipeline.vlm_families import build_smoke_vlm, family_of_model_type, family_of_smoke_id, get_family

log = logging.getLogger(__name__)


class VlmNotAvailableError(VlmsamError, RuntimeError):
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
    if not params.smoke:
        access = HubAccess(params.allow_download and not hub_offline(), hub_offline())
        _check_cached(params, access)  # before importing torch/transformers: a missing model fails at once
    device = resolve_device(params.device)
    dtype = resolve_dtype(params.dtype, device)
    if params.smoke:
        return _load_smoke(params, device, dtype)
    with hub_requests_blocked(not access.download):
        return _load_real(params, device, dtype, access)


def _check_cached(params: VlmModelParams, access: HubAccess) -> None:
    """VlmNotAvailableError when downloads are off and `params.id` is neither a folder nor has
    its config.json in the hub cache."""
    if access.download or Path(params.id).is_dir():
        return
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(params.id, "config.json", cache_dir=params.cache_dir, revision=params.revision)
    if not isinstance(found, str):
        raise _not_available(params, FileNotFoundError(f"no config.json of {params.id} in the cache"), access)


@dataclass(frozen=True)
class HubAccess:
    """Whether loading may download (`download`), and whether HF_HUB_OFFLINE is what forbids it."""

    download: bool
    env_offline: bool


@contextmanager
def hub_requests_blocked(blocked: bool):
    """While `blocked`, huggingface_hub runs in offline mode: its HTTP session refuses every
    request, including the ones it makes besides file downloads (e.g. while building headers)."""
    import huggingface_hub.constants as hc

    if not blocked:
        yield
        return
    before = hc.HF_HUB_OFFLINE
    hc.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        hc.HF_HUB_OFFLINE = before


def _load_smoke(params: VlmModelParams, device: str, dtype) -> LoadedVlm:
    family = params.family or family_of_smoke_id(params.id) or params.resolved_family()
    if family is None:
        raise ValueError(
            f"models.profile is 'smoke' but the family is unknown: set models.vlm.family to one "
            f"of {FAMILIES} (id {params.id!r} is not a known model id)"
        )
    model, processor = build_smoke_vlm(family, seed=params.seed, min_pixels=params.min_pixels,
                                       max_pixels=params.max_pixels)
    model.to(device=device, dtype=dtype)
    log.warning("SMOKE run: random weights (tiny %s VLM, seed %d)", family, params.seed)
    return LoadedVlm(model, processor, family, get_family(family).smoke_id, f"seed={params.seed}", True)


def _not_available(params: VlmModelParams, err: Exception, access: HubAccess) -> VlmNotAvailableError:
    import huggingface_hub.constants as hc

    cache = params.cache_dir or hc.HF_HUB_CACHE
    rev = f" --revision {params.revision}" if params.revision else ""
    offline = "" if access.download else (
        " (downloads are off: " + ("HF_HUB_OFFLINE is set" if access.env_offline else
                                   "models.vlm.allow_download is false")
        + ", so only the local cache was searched)")
    return VlmNotAvailableError(
        f"VLM {params.id!r} could not be loaded: it is not a local folder and not (completely) in the "
        f"Hugging Face cache {cache}{offline}.\n"
        f"Download it on a machine with network:  hf download {params.id}{rev}   "
        f"(older huggingface_hub: huggingface-cli download {params.id}{rev})\n"
        f"and make its cache folder models--{params.id.replace('/', '--')} land in {cache} on this machine "
        f"(or set HF_HOME / models.vlm.cache_dir to where it is), or download it into a folder "
        f"(--local-dir DIR) and set models.vlm.id to DIR. `vlmsam weights` lists every checkpoint the "
        f"run needs and where it looks.\nCause: {type(err).__name__}: {err}"
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


def _load_real(params: VlmModelParams, device: str, dtype, access: HubAccess) -> LoadedVlm:
    import transformers as tf

    local = Path(params.id).is_dir()
    hub_kwargs = {"local_files_only": not access.download}
    if not local:
        hub_kwargs.update(revision=params.revision, cache_dir=params.cache_dir)
    try:
        config = tf.AutoConfig.from_pretrained(params.id, **hub_kwargs)
    except (OSError, ValueError) as e:  # ValueError: a folder without a usable config.json
        if local:
            raise VlmNotAvailableError(f"{params.id}: not a loadable model folder ({e}); "
                                       "`vlmsam weights` lists what the run needs") from e
        if isinstance(e, ValueError):
            raise
        raise _not_available(params, e, access) from e
    vlm_family = family_of_model_type(config.model_type)
    if vlm_family is None:
        raise ValueError(f"{params.id}: model_type {config.model_type!r} is not a supported VLM family {FAMILIES}")
    family = vlm_family.name
    if params.family is not None and params.family != family:
        raise ValueError(f"{params.id}: models.vlm.family is {params.family!r} but the checkpoint is {family!r}")
    try:
        processor = vlm_family.load_processor(params.id, params.min_pixels, params.max_pixels, **hub_kwargs)
        model_cls = getattr(tf, vlm_family.model_classes[config.model_type])
        model = model_cls.from_pretrained(
            params.id, config=config, dtype=dtype, attn_implementation="sdpa",
            device_map=device, **hub_kwargs,
        )
    except OSError as e:
        if local:
            raise VlmNotAvailableError(f"{params.id}: incomplete model folder ({e})") from e
        raise _not_available(params, e, access) from e
    model.eval()
    model.requires_grad_(False)
    revision = snapshot_revision(params.id, params.cache_dir, params.revision)
    log.info("loaded %s (%s, revision %s) on %s as %s", params.id, family, revision or "?", device, dtype)
    return LoadedVlm(model, processor, family, params.id, revision, False)
