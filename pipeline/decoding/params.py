"""Parameters of the decode stage (params.yaml section `decode`) and the EfficientSAM part of
the `models` section: each defined here and only here.

params.yaml layout read by the decode stage::

    models:
      profile: auto | real | smoke   # smoke: seeded random EfficientSAM weights, outputs marked smoke;
                                     # auto: resolved by pipeline.profiles.resolve_profile
      segmenter:                     # SegmenterParams (pipeline/segmenters/params.py)
        family: efficient_sam        # efficient_sam | sam | sam_hq | sam2
        id: null                     # hub id or checkpoint folder
      efficient_sam:                 # SamModelParams
        variant: vitt                # vitt | vits
        checkpoint: null             # explicit checkpoint path (else the search order of
                                     # pipeline.weights.resolve_efficient_sam)
        amodal_decoder: null         # state dict of a second (amodal) mask decoder
    prompt_mode: points              # optional top-level value shared with the sample stage
    decode:                          # DecodeParams
      prompt_mode: points
      completion: occluder_hull
      ...
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from pipeline.decoding.completion import COMPLETIONS, DECODER, EXEMPLAR, TRAINING_FREE
from pipeline.decoding.occluders import OCCLUDER_RULES
from pipeline.decoding.routing import NEGATIVES
from pipeline.params_file import reject_unknown, with_shared
from pipeline.prompt_limits import PROMPT_MODES, uses_box

# Default file paths of the stage (inputs and outputs, relative to the project root).
DEFAULT_POINTS = Path("cache/points.parquet")
DEFAULT_CACHE = Path("cache/attention.h5")
DEFAULT_VISIBLE = Path("cache/pred_visible.json")
DEFAULT_AMODAL = Path("cache/pred_amodal.json")

PROFILES = ("smoke", "real")
SAM_VARIANTS = ("vitt", "vits")
SAM_SECTION = "efficient_sam"


def _from_dict(cls, d: dict | None, where: str):
    d = dict(d or {})
    reject_unknown(where, d, cls)
    return cls(**d)


@dataclass(frozen=True)
class DecodeParams:
    """How prompts become visible and amodal masks.

    prompt_mode           'points' (the sampler's points), 'box' (the dataset's amodal box as
                          EfficientSAM box corners, labels 2/3) or 'points+box'
    completion            how the amodal mask is made: 'decoder' (a second, learned mask decoder
                          given as models.efficient_sam.amodal_decoder) or a training-free
                          method of `completion.py`: visible | hull | occluder_hull | occluder_box
                          | exemplar (class exemplars of the run's unoccluded instances)
    occluders             whose masks count as occluders for occluder_hull / occluder_box:
                          'vlm' | 'gt' | 'overlap' (rules in `occluders.py`)
    modal_given           modal-given protocol (as reported by pix2gestalt, PCNet): complete the
                          amodal mask from the ground-truth visible masks of the instance and of
                          its occluders instead of decoded ones; training-free completions only;
                          amodal entries say `modal_given: true` and get score 1.0
    max_queries_per_call  None: all instances of an image in ONE decoder call (queries =
                          instances); an int caps the queries per call to bound memory
    negatives             which sampled negatives reach the segmenter (`routing.py`): 'auto' (only
                          families trained on them: none to EfficientSAM) | 'always' | 'never'
    device                torch device for EfficientSAM: 'auto' (CUDA when available, else
                          CPU; the VLM's `models.vlm.device` resolves the same way, so both
                          models share the GPU) | 'cpu' | 'cuda' | 'cuda:N'

    completion 'exemplar' (see `exemplars.py`, `exemplar_pass.py`):
    exemplar_fallback        training-free completion used first for every instance and kept
                             where no exemplar fits (visible | hull | occluder_hull | occluder_box)
    exemplar_min_fit         least fit (IoU of the placed exemplar and the visible mask, both
                             outside the occluders, inside the box) for the exemplar to be used
    exemplar_angle_step      rotation step in degrees (poses at 0, step, ... < 360)
    exemplar_flip            also try each exemplar mirrored
    exemplar_scale           false: a pose's box must match the instance's box in size (fixed
                             camera height, as D2S); true: in aspect only, the exemplar is
                             scaled into the box (objects at varying distance, as KINS cars)
    exemplar_size_tolerance  largest relative difference per side between a pose's box and the
                             instance's box; also how closely an exemplar's visible mask must
                             span its own box
    exemplar_bank_size       most exemplars per class (those closest to the class's median area)
    """

    prompt_mode: str = "points"
    completion: str = "occluder_hull"
    occluders: str = "vlm"
    modal_given: bool = False
    max_queries_per_call: int | None = None
    device: str = "auto"
    exemplar_fallback: str = "occluder_hull"
    exemplar_min_fit: float = 0.85
    exemplar_angle_step: float = 5.0
    exemplar_flip: bool = True
    exemplar_scale: bool = False
    exemplar_size_tolerance: float = 0.08
    exemplar_bank_size: int = 8
    negatives: str = "auto"

    def __post_init__(self):
        if self.negatives not in NEGATIVES:
            raise ValueError(f"decode.negatives {self.negatives!r}: expected one of {NEGATIVES}")
        if not isinstance(self.device, str) or not (self.device in ("auto", "cpu") or self.device.startswith("cuda")):
            raise ValueError(f"decode.device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {self.device!r}")
        if self.prompt_mode not in PROMPT_MODES:
            raise ValueError(f"decode.prompt_mode {self.prompt_mode!r}: expected one of {PROMPT_MODES}")
        if self.completion not in COMPLETIONS:
            raise ValueError(f"decode.completion {self.completion!r}: expected one of {COMPLETIONS}")
        if self.occluders not in OCCLUDER_RULES:
            raise ValueError(f"decode.occluders {self.occluders!r}: expected one of {OCCLUDER_RULES}")
        if not isinstance(self.modal_given, bool):
            raise ValueError(f"decode.modal_given must be true or false, got {self.modal_given!r}")
        if self.modal_given and self.completion == DECODER:
            raise ValueError("decode.modal_given applies to training-free completions, not 'decoder'")
        if self.max_queries_per_call is not None and (
            not isinstance(self.max_queries_per_call, int) or self.max_queries_per_call < 1
        ):
            raise ValueError(f"decode.max_queries_per_call must be null or a positive integer, got {self.max_queries_per_call!r}")
        self._check_exemplar()

    def _check_exemplar(self) -> None:
        if self.exemplar_fallback not in TRAINING_FREE:
            raise ValueError(f"decode.exemplar_fallback {self.exemplar_fallback!r}: expected one of {TRAINING_FREE}")
        if not 0.0 <= self.exemplar_min_fit <= 1.0:
            raise ValueError(f"decode.exemplar_min_fit must be in [0, 1], got {self.exemplar_min_fit!r}")
        if not 0.0 < self.exemplar_angle_step <= 360.0:
            raise ValueError(f"decode.exemplar_angle_step must be in (0, 360] degrees, got {self.exemplar_angle_step!r}")
        for name in ("exemplar_flip", "exemplar_scale"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"decode.{name} must be true or false, got {getattr(self, name)!r}")
        if not 0.0 <= self.exemplar_size_tolerance < 1.0:
            raise ValueError(f"decode.exemplar_size_tolerance must be in [0, 1), got {self.exemplar_size_tolerance!r}")
        if isinstance(self.exemplar_bank_size, bool) or not isinstance(self.exemplar_bank_size, int) or self.exemplar_bank_size < 1:
            raise ValueError(f"decode.exemplar_bank_size must be a positive integer, got {self.exemplar_bank_size!r}")

    def check_without_ground_truth(self, why: str) -> None:
        """ValueError when these settings need the queries' ground-truth masks or occluder ids,
        which queries made from detector proposals (`why`) do not have."""
        if self.modal_given:
            raise ValueError(f"decode.modal_given completes ground-truth visible masks; {why} queries have none")
        if self.occluders == "gt":
            raise ValueError(f"decode.occluders 'gt' reads the dataset's occluder ids; {why} queries have none "
                             "(use 'vlm' or 'overlap')")

    @property
    def first_pass_completion(self) -> str:
        """The completion each image gets when decoded: for 'exemplar' its fallback (the
        exemplar pass over the whole split, `exemplar_pass.py`, follows)."""
        return self.exemplar_fallback if self.completion == EXEMPLAR else self.completion

    @property
    def uses_points(self) -> bool:
        return self.prompt_mode != "box"

    @property
    def uses_box(self) -> bool:
        return uses_box(self.prompt_mode)

    @classmethod
    def from_dict(cls, d: dict | None, shared_prompt_mode: str | None = None) -> "DecodeParams":
        """From the `decode` section; `shared_prompt_mode` is params.yaml's top-level prompt_mode."""
        return _from_dict(cls, with_shared(d, "prompt_mode", shared_prompt_mode, "decode"), "decode")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class SamModelParams:
    """Which EfficientSAM to run (params.yaml `models.efficient_sam`).

    variant         'vitt' | 'vits'
    checkpoint      explicit path of the official checkpoint; None -> the search order of
                    `pipeline.weights.resolve_efficient_sam` (real profile only)
    amodal_decoder  path of a mask-decoder state dict for amodal masks (completion='decoder');
                    None in the smoke profile -> a copy of the seeded random mask decoder
    """

    variant: str = "vitt"
    checkpoint: str | None = None
    amodal_decoder: str | None = None

    def __post_init__(self):
        if self.variant not in SAM_VARIANTS:
            raise ValueError(f"models.{SAM_SECTION}.variant {self.variant!r}: expected one of {SAM_VARIANTS}")

    @classmethod
    def from_dict(cls, d: dict | None) -> "SamModelParams":
        return _from_dict(cls, d, f"models.{SAM_SECTION}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def segmenter_from_section(models: dict | None):
    """`SegmenterParams` of params.yaml's `models.segmenter` (absent: EfficientSAM)."""
    from pipeline.segmenters.params import SECTION, SegmenterParams

    return SegmenterParams.from_dict(dict(models or {}).get(SECTION))


def sam_models_from_section(models: dict | None) -> tuple[str, SamModelParams]:
    """(profile, SamModelParams) from params.yaml's `models` section (other keys belong to others)."""
    models = dict(models or {})
    if "profile" not in models:
        raise ValueError(f"models.profile is missing: expected one of {PROFILES}")
    profile = models["profile"]
    if profile not in PROFILES:
        raise ValueError(f"models.profile {profile!r}: expected one of {PROFILES}")
    return profile, SamModelParams.from_dict(models.get(SAM_SECTION))
