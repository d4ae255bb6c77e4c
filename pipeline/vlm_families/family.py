"""The `VlmFamily` interface: everything the pipeline needs to know about one VLM family.

A family module (`pipeline/vlm_families/<family>.py`) defines `FAMILY = <a VlmFamily instance>`.
Capture, prefix reuse, extract and sampling ask the family (through the registry in
`pipeline.vlm_families`) and never name it.
"""

from __future__ import annotations

from dataclasses import dataclass


def check_budget_values(min_pixels, max_pixels, least: int, what: str = "") -> None:
    """A clear error unless min_pixels is an integer >= `least` (`what` says why) and
    max_pixels an integer >= min_pixels."""
    if not (isinstance(min_pixels, int) and isinstance(max_pixels, int)) or min_pixels < least:
        raise ValueError(f"models.vlm.min_pixels must be an integer >= {least}{what}, got {min_pixels!r}")
    if max_pixels < min_pixels:
        raise ValueError(f"models.vlm.max_pixels ({max_pixels}) must be >= models.vlm.min_pixels ({min_pixels})")


@dataclass(frozen=True)
class LayerDepths:
    """Default layers as fractions of the language model's depth, and what they rest on."""

    fractions: tuple[float, ...]
    source: str


class VlmFamily:
    """One VLM family. Subclasses set the class attributes and implement the methods.

    name            the family name (`models.vlm.family`), equal to its module's name
    model_classes   config.model_type -> transformers `*ForConditionalGeneration` class name
    default_id      the hub id used when `models.vlm.id` names no other checkpoint
    checkpoints     every supported hub id (`vlmsam weights` lists them)
    token_size      what one image token covers, in words (README's family table)
    layer_depths    default layers (`extract.layers: auto`) with their source
    pixel_budget    (min_pixels, max_pixels) of a family whose processor resizes within a pixel
                    budget; None for a fixed input resolution
    per_token_inputs  processor outputs aligned with input_ids (cut and padded like the ids)
    """

    name: str = ""
    model_classes: dict[str, str] = {}
    default_id: str = ""
    checkpoints: tuple[str, ...] = ()
    token_size: str = ""
    layer_depths: LayerDepths = LayerDepths((), "")
    pixel_budget: tuple[int, int] | None = None
    per_token_inputs: tuple[str, ...] = ()

    # ------------------------------------------------------------ processor

    def processor_class(self):
        """The processor class used for this family (image-only where the real one needs torchvision)."""
        raise NotImplementedError

    def load_processor(self, model_id: str, min_pixels: int | None = None, max_pixels: int | None = None,
                       **hub_kwargs):
        """A checkpoint's processor (PIL image backend), with the pixel budget where the family has one."""
        raise NotImplementedError

    def check_pixel_budget(self, min_pixels: int, max_pixels: int) -> None:
        """A clear error for a budget this family cannot honour (any budget, for a fixed resolution)."""
        raise ValueError(f"models.vlm.min_pixels / max_pixels apply to the families with a pixel budget; "
                         f"{self.name} has a fixed input resolution: remove them")

    def budget_kwargs(self, min_pixels: int | None, max_pixels: int | None) -> dict:
        """min_pixels / max_pixels for the processor: the given ones (checked) or the family's own;
        {} for a fixed-resolution family (an error unless both are None)."""
        if min_pixels is None and max_pixels is None:
            if self.pixel_budget is None:
                return {}
            min_pixels, max_pixels = self.pixel_budget
        self.check_pixel_budget(min_pixels, max_pixels)
        return {"min_pixels": min_pixels, "max_pixels": max_pixels}

    # ------------------------------------------------------------ placement

    def place(self, config, processor, image_hw: tuple[int, int], tokens) -> dict:
        """Append the image tokens of one image to `tokens` (`_placement.Tokens`) in sequence order;
        returns {view: (rows, cols)} of the token grids."""
        raise NotImplementedError

    # ------------------------------------------------------------ generation inputs

    def rope_state(self, model):
        """What the model keeps between a prefill and the forwards on its cache (M-RoPE offsets);
        None for a family whose positions follow from the cache length alone."""
        return None

    def restore_rope_state(self, model, state) -> None:
        """Give the model back the state `rope_state` returned after this prefix's prefill."""

    # ------------------------------------------------------------ smoke model

    def build_smoke(self, seed: int, attn_implementation: str, **pixel_budget):
        """Tiny random-weight (model, processor) of the family's real classes; float32, `eval()`."""
        raise NotImplementedError

    def build_smoke_tokenizer(self):
        """The smoke model's tokenizer: a locally trained byte-level BPE with the family's special tokens."""
        raise NotImplementedError

    @property
    def smoke_id(self) -> str:
        """The model id naming the family's smoke VLM."""
        return f"smoke/{self.name}"
