"""Parameters of the extract stage, defined once: the VLM part of `models` and the `extract` section.

params.yaml layout read here::

    models:
      profile: auto | real | smoke   # smoke = tiny random-weight VLM, everything marked SMOKE; auto: pipeline/profiles.py
      vlm:                           # VlmModelParams (only this sub-mapping is read here)
        family: null                 # llava | llava_next | llava_onevision | qwen2_vl | qwen2_5_vl
                                     # | qwen3_vl | null (= from config)
        id: llava-hf/llava-v1.6-mistral-7b-hf
        ...
      ...                            # other keys of `models` belong to other stages
    extract:                         # ExtractParams
      layers: auto                   # or e.g. [0.45, 0.55] (depth fractions) or [14, -8] (indices)
      ...

Prompt templates use named placeholders that are substituted literally (no str.format, so
JSON braces in a template need no escaping):
  target     {phrase} (required, exactly once: its tokens are the query rows) and {box}
             (optional: the amodal box, normalised coordinates)
  occlusion  {names} (the image's object phrases, comma separated)
  occlusion_free  no placeholder (single-image mode: the model lists the objects itself)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from pipeline.errors import ParamsError
from pipeline.params_file import reject_unknown
from pipeline.vlm_families import DEFAULT_FAMILY, family_names, get_family
from pipeline.vlm_families.family import check_budget_values

FAMILIES = family_names()
PROFILES = ("smoke", "real")
DTYPES = ("auto", "float32", "bfloat16", "float16")
HEAD_AGGREGATIONS = ("mean", "lowest_entropy", "localization")
SINK_METHODS = ("ratio", "subtract")
OCCLUSION_LISTINGS = ("listed", "free")

DEFAULT_MODEL_IDS = {family: get_family(family).default_id for family in FAMILIES}

DEFAULT_TEMPLATES = {
    "target": "Look at the box {box}. Where is the {phrase}?",
    "occlusion": (
        "The image shows these objects: {names}. Which of them are partly hidden behind "
        "which other objects? Answer with JSON only, in the form "
        '{"occlusions": [{"object": "<name>", "occluded_by": ["<name>", ...]}]}, '
        "using the names above and listing only objects that are partly hidden."
    ),
    "occlusion_free": (
        "List the objects in the image and which of them are partly hidden behind which "
        "other objects. Answer with JSON only, in the form "
        '{"occlusions": [{"object": "<name>", "occluded_by": ["<name>", ...]}]}.'
    ),
}
TEMPLATE_PLACEHOLDERS = {"target": ("{phrase}",), "occlusion": ("{names}",), "occlusion_free": ()}


@dataclass(frozen=True)
class VlmModelParams:
    """The VLM of the `models` section (`models.profile` + `models.vlm`).

    profile    'real' loads `id` from the Hugging Face cache or a local folder; 'smoke' builds
               a tiny random-weight model of `family` (default 'real'); params.yaml's 'auto' is
               resolved to one of them before (`pipeline.profiles.resolve_profile`)
    family     'llava' | 'llava_next' | 'llava_onevision' | 'qwen2_vl' | 'qwen2_5_vl' | 'qwen3_vl'; None = read
               from the checkpoint's config.model_type (real) or from `id` when it is a known
               default id (smoke)
    id         Hugging Face repo id or local folder (default LLaVA-NeXT Mistral-7B)
    revision   hub revision (branch, tag or commit); None = the cached 'main' (default None)
    dtype      'auto' (bfloat16 on CUDA, float32 on CPU) | 'float32' | 'bfloat16' | 'float16'
    device     'auto' (cuda when available, else cpu) | 'cpu' | 'cuda' | 'cuda:N'
    cache_dir  Hugging Face hub cache folder; None = the library default ($HF_HOME/hub)
    seed       seed of the smoke profile's random weights (default 0)
    allow_download  False (default): every `from_pretrained` runs with local_files_only=True, so
               loading never touches the network and a missing model fails at once with the
               `vlmsam weights` hint; True: a model missing from the cache is downloaded from the hub
    min_pixels Qwen families: pixel budget of the image processor; `smart_resize` scales
    max_pixels each image so that its area lies in [min_pixels, max_pixels]. None (default) =
               the family's own budget (`VlmFamily.pixel_budget`), 1,024 to 1,280 image tokens
               for each (grounding needs ~1,024): 1024*28*28 .. 1280*28*28 for Qwen2-VL /
               Qwen2.5-VL (28-px tokens), 1024*32*32 .. 1280*32*32 for Qwen3-VL (32-px tokens).
               The LLaVA families' processors have fixed resolutions: for them both must stay None.
    """

    profile: str = "real"
    family: str | None = None
    id: str = DEFAULT_MODEL_IDS[DEFAULT_FAMILY]
    revision: str | None = None
    dtype: str = "auto"
    device: str = "auto"
    cache_dir: str | None = None
    seed: int = 0
    allow_download: bool = False
    min_pixels: int | None = None
    max_pixels: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.allow_download, bool):
            raise ValueError(f"models.vlm.allow_download must be true or false, got {self.allow_download!r}")
        if (self.min_pixels is None) != (self.max_pixels is None):
            raise ValueError("models.vlm.min_pixels and max_pixels are set together (both null = the family's budget)")
        if self.profile not in PROFILES:
            raise ValueError(f"models.profile must be one of {PROFILES}, got {self.profile!r}")
        if self.family is not None and self.family not in FAMILIES:
            raise ValueError(f"models.vlm.family must be one of {FAMILIES} or null, got {self.family!r}")
        if self.min_pixels is not None:
            _check_pixel_budget(self.min_pixels, self.max_pixels, self.resolved_family())
        if self.dtype not in DTYPES:
            raise ValueError(f"models.vlm.dtype must be one of {DTYPES}, got {self.dtype!r}")
        if not isinstance(self.id, str) or not self.id:
            raise ValueError(f"models.vlm.id must be a repo id or a folder, got {self.id!r}")

    @classmethod
    def from_dict(cls, d: dict | None, profile: str = "real") -> "VlmModelParams":
        """Build from the `models.vlm` mapping; unknown keys are an error."""
        d = dict(d or {})
        reject_unknown("models.vlm", d, cls)
        d.setdefault("profile", profile)
        return cls(**d)

    @classmethod
    def from_models_section(cls, models: dict | None) -> "VlmModelParams":
        """Build from the whole `models` section: its `profile` and its `vlm` sub-mapping."""
        models = dict(models or {})
        vlm = models.get("vlm") or {}
        if not isinstance(vlm, dict):
            raise ValueError("models.vlm must be a mapping")
        if "profile" in vlm:
            raise ValueError("models.vlm: 'profile' belongs to the models section itself (models.profile)")
        return cls.from_dict(vlm, profile=models.get("profile", "real"))

    @property
    def smoke(self) -> bool:
        return self.profile == "smoke"

    def resolved_family(self) -> str | None:
        """The family when known without loading anything (explicit, or a default id)."""
        if self.family is not None:
            return self.family
        for family, model_id in DEFAULT_MODEL_IDS.items():
            if model_id == self.id:
                return family
        return None


def _check_pixel_budget(min_pixels, max_pixels, family: str | None) -> None:
    """The family's check of a pixel budget; without a known family, the checks every family makes."""
    if family is not None:
        get_family(family).check_pixel_budget(min_pixels, max_pixels)
    else:
        check_budget_values(min_pixels, max_pixels, 1)


@dataclass(frozen=True)
class ExtractParams:
    """The `extract` section.

    layers             language-model layers whose attention is stored, resolved against the
                       loaded model's depth (`resolve_layers`): 'auto' = the family's default
                       relative depths (`VlmFamily.layer_depths`, from the literature); or a list
                       whose entries are integers (indices; negative = counted from the end,
                       -1 = last) or fractions 0 <= f < 1 of the depth (layer round(f * depth)).
                       Two integers naming one layer are an error; fractions that meet on
                       a shallow model are stored once (default 'auto')
    head_aggregation   'mean' over all heads; 'lowest_entropy': mean of the `top_k_heads`
                       heads whose (row-averaged) map has the lowest Shannon entropy over
                       the image tokens, chosen per layer and instance; 'localization'
                       (needs sink_removal): the same after dropping sink-dominated heads
                       (sink share above `max_sink_share`), entropy taken on the sink-removed
                       maps, as the localisation heads of Kang et al. (CVPR 2025) (default
                       'mean': after sink removal the mean was as good as or better than the
                       head selections at every simulated setting, clearly so under strong
                       spill, where a few chosen heads follow the spill; bench_prompts.py)
    top_k_heads        k for 'lowest_entropy' and 'localization' (default 8; LocalizationHeads
                       combines 3)
    include_last_token also use the last prompt token as a query row (default False)
    sink_removal       remove the attention sinks with the same head's map for a generic
                       prompt (the target template with `sink_phrase` and the whole-image box),
                       computed once per image: one extra prompt suffix on the shared image
                       prefix; each map is then rescaled to its original sum (default True:
                       sinks take much of any prompt's attention, ViCrop, DecAF)
    sink_method        'ratio': divide by the generic map + `sink_epsilon` (ViCrop's relative
                       attention); 'subtract': keep max(map - sink_weight * generic, 0) (DecAF)
                       (default 'ratio': on the attention simulator it put more positives on
                       the visible part at every setting; subtraction zeroes much of a sparse
                       map and falls back more often; benchmarks/bench_prompts.py)
    sink_phrase        the generic phrase of the sink prompt (default 'object')
    sink_epsilon       added to the generic map before dividing (default 1e-6)
    sink_weight        weight of the generic map in 'subtract' (default 1.0)
    sink_level         a head's sink tokens are those where its generic-prompt map exceeds
                       sink_level times that map's mean (default 20: sinks hold a large share
                       on a few of thousands of tokens, hundreds of times the mean)
    max_sink_share     'localization' drops heads whose target map puts more than this share of
                       its image attention on its sink tokens (default 0.8)
    store_heads        also store per-head maps [L, H, T] (default False)
    templates          prompt templates {target, occlusion, occlusion_free}; keys given here
                       replace the defaults (DEFAULT_TEMPLATES)
    phrase_overrides   {category_name: phrase} replacing the humanised category name; for
                       dataset flavour d2sa they win over the English phrase table
                       (pipeline/datasets/d2sa_phrases.py) used there by default
    box_decimals       decimals of the normalised box coordinates in the target prompt
    ask_occlusion      ask the occlusion question once per image (default True); when False
                       each image records occlusion_error 'not asked'
    occlusion_listing  'listed': the question names the image's object phrases (template
                       `occlusion`); 'free': the model lists the objects itself (template
                       `occlusion_free`, single-image mode); matching is by name either way
    max_new_tokens     greedy-generation budget of the occlusion answer (default 256); an
                       answer ends earlier at an end token or once its JSON is complete
    generation_batch   images whose occlusion answers are generated in one batched call
                       (left padding; answers equal one-at-a-time greedy ones; default 8)
    flat_ratio         an instance is flagged 'flat' when, for its layer-mean map,
                       max / mean < flat_ratio (a uniform map has ratio 1; default 1.5)
    """

    layers: str | list[int | float] = "auto"
    head_aggregation: str = "mean"
    top_k_heads: int = 8
    include_last_token: bool = False
    sink_removal: bool = True
    sink_method: str = "ratio"
    sink_phrase: str = "object"
    sink_epsilon: float = 1e-6
    sink_weight: float = 1.0
    sink_level: float = 20.0
    max_sink_share: float = 0.8
    store_heads: bool = False
    templates: dict[str, str] = field(default_factory=dict)
    phrase_overrides: dict[str, str] = field(default_factory=dict)
    box_decimals: int = 2
    ask_occlusion: bool = True
    occlusion_listing: str = "listed"
    max_new_tokens: int = 256
    flat_ratio: float = 1.5
    generation_batch: int = 8

    def __post_init__(self) -> None:
        check_layers(self.layers)
        if self.head_aggregation not in HEAD_AGGREGATIONS:
            raise ValueError(
                f"extract.head_aggregation must be one of {HEAD_AGGREGATIONS}, got {self.head_aggregation!r}"
            )
        if self.occlusion_listing not in OCCLUSION_LISTINGS:
            raise ValueError(
                f"extract.occlusion_listing must be one of {OCCLUSION_LISTINGS}, got {self.occlusion_listing!r}"
            )
        if self.head_aggregation == "localization" and not self.sink_removal:
            raise ValueError(
                "extract.head_aggregation 'localization' needs extract.sink_removal: true (the generic "
                "prompt's map tells the sink-dominated heads)"
            )
        if self.sink_method not in SINK_METHODS:
            raise ValueError(f"extract.sink_method must be one of {SINK_METHODS}, got {self.sink_method!r}")
        for name, low in (("sink_weight", 0.0), ("sink_level", 1.0)):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and not isinstance(v, bool) and v > low):
                raise ValueError(f"extract.{name} must be a number > {low:g}, got {v!r}")
        if not (isinstance(self.max_sink_share, (int, float)) and 0 < self.max_sink_share <= 1):
            raise ValueError(f"extract.max_sink_share must be in (0, 1], got {self.max_sink_share!r}")
        if not isinstance(self.top_k_heads, int) or self.top_k_heads < 1:
            raise ValueError(f"extract.top_k_heads must be a positive integer, got {self.top_k_heads!r}")
        if not (isinstance(self.sink_epsilon, (int, float)) and self.sink_epsilon > 0):
            raise ValueError(f"extract.sink_epsilon must be > 0, got {self.sink_epsilon!r}")
        if not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise ValueError(f"extract.max_new_tokens must be a positive integer, got {self.max_new_tokens!r}")
        if not isinstance(self.generation_batch, int) or isinstance(self.generation_batch, bool) \
                or self.generation_batch < 1:
            raise ValueError(f"extract.generation_batch must be a positive integer, got {self.generation_batch!r}")
        if not isinstance(self.box_decimals, int) or not 0 <= self.box_decimals <= 4:
            raise ValueError(f"extract.box_decimals must be an integer in 0..4, got {self.box_decimals!r}")
        if not (isinstance(self.flat_ratio, (int, float)) and self.flat_ratio >= 1):
            raise ValueError(f"extract.flat_ratio must be a number >= 1, got {self.flat_ratio!r}")
        if not isinstance(self.sink_phrase, str) or not self.sink_phrase.strip():
            raise ValueError("extract.sink_phrase must be a non-empty string")
        unknown = sorted(set(self.templates) - set(DEFAULT_TEMPLATES))
        if unknown:
            raise ValueError(f"extract.templates: unknown template(s) {unknown}; known: {sorted(DEFAULT_TEMPLATES)}")
        for name, text in self.all_templates().items():
            check_template(name, text)
        for cat, phrase in self.phrase_overrides.items():
            if not isinstance(phrase, str) or not phrase.strip():
                raise ValueError(f"extract.phrase_overrides[{cat!r}] must be a non-empty string")

    @classmethod
    def from_dict(cls, d: dict | None) -> "ExtractParams":
        """Build from the `extract` section; unknown keys are an error."""
        d = dict(d or {})
        reject_unknown("extract", d, cls)
        if "layers" in d and isinstance(d["layers"], tuple):
            d["layers"] = list(d["layers"])
        return cls(**d)

    def all_templates(self) -> dict[str, str]:
        """The defaults with this run's replacements applied."""
        return {**DEFAULT_TEMPLATES, **self.templates}

    def map_options(self) -> dict[str, Any]:
        """Keyword arguments of `maps.instance_maps` (all but the head maps and generic maps)."""
        return {
            "aggregation": self.head_aggregation, "k": self.top_k_heads, "sink_epsilon": self.sink_epsilon,
            "sink_method": self.sink_method, "sink_weight": self.sink_weight, "sink_level": self.sink_level,
            "max_sink_share": self.max_sink_share, "flat_ratio": self.flat_ratio,
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (stored in the cache's `params` attribute)."""
        return asdict(self)


def check_template(name: str, text: str) -> None:
    """A clear error when a template lacks a placeholder (or repeats `{phrase}`)."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"extract.templates.{name} must be a non-empty string")
    for ph in TEMPLATE_PLACEHOLDERS[name]:
        if ph not in text:
            raise ValueError(f"extract.templates.{name} must contain the placeholder {ph}: {text!r}")
    if name == "target" and text.count("{phrase}") != 1:
        raise ValueError(f"extract.templates.target must contain {{phrase}} exactly once: {text!r}")
    if name == "target" and "{box}" in text and text.rfind("{box}") > text.index("{phrase}"):
        raise ValueError(
            "extract.templates.target must put {box} before {phrase}: attention is causal, so the "
            f"phrase tokens (the query rows) would not see a box that follows them: {text!r}"
        )


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_fraction(x) -> bool:
    return isinstance(x, float) and 0.0 <= x < 1.0


def check_layers(layers) -> None:
    """A clear error unless `layers` is 'auto' or a non-empty list of indices / depth fractions."""
    if layers == "auto":
        return
    if not isinstance(layers, (list, tuple)) or not layers or not all(_is_int(x) or _is_fraction(x) for x in layers):
        raise ParamsError(
            "extract.layers must be 'auto' or a non-empty list of layer indices (integers, negative = "
            f"from the end) and depth fractions (0 <= f < 1), got {layers!r}"
        )


def default_layer_depths(family: str) -> tuple[float, ...]:
    """The family's default layers as depth fractions (`VlmFamily.layer_depths`, with their source);
    a clear error for an unknown family."""
    if family not in FAMILIES:
        raise ParamsError(f"extract.layers 'auto': no default layers for the VLM family {family!r}; list them")
    return get_family(family).layer_depths.fractions


def resolve_layers(layers, num_layers: int, family: str | None = None) -> list[int]:
    """Absolute layer indices of `layers` ('auto' needs `family`), in the given order; clear errors.

    Integers are indices (negative = from the end); fractions f name layer round(f * num_layers),
    and fractions that meet on a shallow model are kept once.
    """
    check_layers(layers)
    if layers == "auto":
        if family is None:
            raise ParamsError("extract.layers 'auto' needs the VLM family to resolve")
        layers = list(default_layer_depths(family))
    out, from_fraction = [], set()
    for layer in layers:
        if _is_fraction(layer):
            idx = min(int(round(layer * num_layers)), num_layers - 1)
            if idx in out and idx in from_fraction:
                continue
            from_fraction.add(idx)
        else:
            idx = layer + num_layers if layer < 0 else layer
            if not 0 <= idx < num_layers:
                raise ParamsError(
                    f"extract.layers: layer {layer} is out of range for a language model with "
                    f"{num_layers} layers (valid: {-num_layers}..{num_layers - 1}, or fractions 0..1)"
                )
        if idx in out:
            raise ParamsError(f"extract.layers: {list(layers)} name layer {idx} twice")
        out.append(idx)
    return out
