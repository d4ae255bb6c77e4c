"""Parameters of the sample stage (params.yaml section `sample`): each defined here and only here.

params.yaml layout read by the sample stage::

    prompt_mode: points          # optional top-level value shared with the decode stage
    sample:                      # SampleParams
      strategy: peak
      layers: null
      ...

The top-level `prompt_mode` (when present) is the one value the integrator shares between
`sample` and `decode`: it sets how many points the sampler may emit (`pipeline.prompt_limits.point_budget`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from pipeline.attention.cache import params_hash
from pipeline.params_file import reject_unknown, with_shared
from pipeline.prompt_limits import PROMPT_MODES, point_budget

STRATEGIES = ("peak", "kmeans")
VIEW_NORMS = ("mean", "max")
NEG_SOURCES = ("occluder", "background")
BG_REGIONS = ("outside_box", "search_region")
CONTRASTS = ("occluders", "same_category")


@dataclass(frozen=True)
class SampleParams:
    """How attention maps become point prompts.

    Attention map (see `pixel_map.py`):
    layers          language-model layers to use (each must be stored in the cache; named by
                    the stored number or as extract.layers wrote it, e.g. -8);
                    None = every layer of the cache (default None)
    layer_weights   one weight per entry of `layers` for their weighted mean; None = equal
                    (default None)
    view_norm       how each view's token map is scaled before views are mixed, so coarse and
                    fine maps are comparable: 'mean' (divide by the view's mean token value:
                    1 = uniform attention) or 'max' (divide by its max) (default 'mean')
    view_weights    [coarse, fine] weights of the base view (0) and the high-resolution view (1)
                    in the per-pixel mix; where only one view covers a pixel it alone counts
                    (default [0.5, 0.5])
    box_enlarge     the search region is the instance's amodal box scaled by this factor about
                    its centre, clipped to the image; >= 1. Positives are only taken inside
                    the box; the margin around it is where 'outside_box' background negatives
                    come from (default 1.3)
    max_cells       the search region is sampled on a grid of at most this many cells along its
                    longer side (cells are never smaller than one pixel) (default 64)
    smooth          sigma of the Gaussian smoothing of the map before peak finding, in units of
                    the side of the finest token (0 = none) (default 0.5)

    Points:
    strategy        'peak': local maxima of the map; 'kmeans': centres of KMeans clusters of the
                    high-attention cells (default 'peak')
    n_pos           at most this many positive points (>= 1) (default 2)
    n_neg           at most this many negative points (default 2)
    neg_sources     where negatives come from, in priority order: 'occluder' (peaks of the maps
                    of the instance's occluders where they exceed the instance's own map) and
                    'background' (low-attention places of the instance's map) (default both)
    bg_region       where background negatives may lie: 'outside_box' (the search region minus
                    the amodal box: the target cannot be there, since sparse attention is low on
                    much of the target itself and a low place inside the box is often the
                    target) or 'search_region' (anywhere in it) (default 'outside_box')
    occ_margin      an occluder negative needs the occluder's map to exceed the instance's own
                    there by more than this relative margin (occluder > (1 + occ_margin) x
                    instance, both on the scale of `pixel_map.token_values`, 1 = uniform
                    attention), and the occluder's map, scaled to its peak over the whole
                    image, must be above the instance's map scaled to its peak in the search
                    region (so the occluder's spill onto the instance's own evidence is no
                    negative): attention spills between neighbouring objects of one kind, so a
                    small excess is no evidence. Positives are never taken where an occluder's
                    map is above the instance's (default 0.3)
    pos_margin      a positive needs the instance's map above (1 + pos_margin) x the map of
                    every occluder (and rival, see `contrast`) at its place; 0 = merely above
                    (default 0.2)
    contrast        whose maps veto positives: 'occluders' (the instance's occluders) or
                    'same_category' (also every other instance of its category in the image:
                    attention spills onto look-alikes, and those the instance occludes lie in
                    its box) (default 'same_category')
    snap            move each positive to the centre of the hottest finest-view token among
                    the 3 x 3 around it (centre in the amodal box, not outranked by an occluder
                    or rival, see pos_margin): a token's attention speaks of its patch, and the
                    painted, smoothed peak drifts to a patch's border (default True)
    min_distance    minimum distance between peaks and between emitted points, as a fraction of
                    the search region's longer side (default 0.15)
    rel_threshold   a peak (or a kmeans cell) must reach lo + rel_threshold * (hi - lo), where lo
                    and hi are the map's min and max over the search region (default 0.3)
    bg_max_level    background negatives only where the instance's map is at most
                    lo + bg_max_level * (hi - lo) (default 0.1)
    flat_cv         the map is 'flat' (-> fallback) when its coefficient of variation (std/mean)
                    over the covered cells of the search region is below this (default 0.05)
    seed            random seed of KMeans (default 0)
    prompt_mode     one of PROMPT_MODES; with a box the decoder reads 2 fewer points, so
                    n_pos + n_neg must fit `point_budget(prompt_mode)` (default 'points')

    Points are ranked best first by their score: for peaks the mean normalised map value in a
    square window of half-side min_distance / 2 around the peak (attention mass); for kmeans
    the cluster's share of the attention mass; for negatives how strongly the spot belongs to
    an occluder or to the background.
    """

    layers: tuple[int, ...] | None = None
    layer_weights: tuple[float, ...] | None = None
    view_norm: str = "mean"
    view_weights: tuple[float, float] = (0.5, 0.5)
    box_enlarge: float = 1.3
    max_cells: int = 64
    smooth: float = 0.5
    strategy: str = "peak"
    n_pos: int = 2
    n_neg: int = 2
    neg_sources: tuple[str, ...] = NEG_SOURCES
    bg_region: str = "outside_box"
    occ_margin: float = 0.3
    pos_margin: float = 0.2
    contrast: str = "same_category"
    snap: bool = True
    min_distance: float = 0.15
    rel_threshold: float = 0.3
    bg_max_level: float = 0.1
    flat_cv: float = 0.05
    seed: int = 0
    prompt_mode: str = "points"

    def __post_init__(self) -> None:
        # YAML gives lists: store tuples so the dataclass stays hashable and comparable
        for name in ("layers", "layer_weights", "view_weights", "neg_sources"):
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))
        self._validate()

    def _validate(self) -> None:
        def fail(msg: str) -> None:
            raise ValueError(f"sample.{msg}")

        def is_int(v) -> bool:
            return isinstance(v, int) and not isinstance(v, bool)

        def is_num(v) -> bool:
            return (isinstance(v, (int, float)) and not isinstance(v, bool)) and math.isfinite(v)

        if self.strategy not in STRATEGIES:
            fail(f"strategy {self.strategy!r}: expected one of {STRATEGIES}")
        if self.prompt_mode not in PROMPT_MODES:
            fail(f"prompt_mode {self.prompt_mode!r}: expected one of {PROMPT_MODES}")
        if self.view_norm not in VIEW_NORMS:
            fail(f"view_norm {self.view_norm!r}: expected one of {VIEW_NORMS}")
        if self.layers is not None:
            if not isinstance(self.layers, tuple) or not self.layers or not all(map(is_int, self.layers)):
                fail(f"layers must be null or a non-empty list of layer numbers, got {self.layers!r}")
            if len(set(self.layers)) != len(self.layers):
                fail(f"layers {list(self.layers)} repeat a layer")
        if self.layer_weights is not None:
            if self.layers is None:
                fail("layer_weights needs an explicit `layers` list of the same length")
            if not isinstance(self.layer_weights, tuple) or len(self.layer_weights) != len(self.layers):
                fail(f"layer_weights {self.layer_weights!r} must have one weight per layer {list(self.layers)}")
            if not all(is_num(w) and w >= 0 for w in self.layer_weights) or sum(self.layer_weights) <= 0:
                fail(f"layer_weights {list(self.layer_weights)} must be >= 0 with a positive sum")
        if (
            not isinstance(self.view_weights, tuple) or len(self.view_weights) != 2
            or not all(is_num(w) and w >= 0 for w in self.view_weights) or sum(self.view_weights) <= 0
        ):
            fail(f"view_weights must be [coarse, fine], both >= 0 with a positive sum, got {self.view_weights!r}")
        if not is_num(self.box_enlarge) or self.box_enlarge < 1:
            fail(f"box_enlarge must be a number >= 1, got {self.box_enlarge!r}")
        if not is_int(self.max_cells) or self.max_cells < 4:
            fail(f"max_cells must be an integer >= 4, got {self.max_cells!r}")
        if not is_num(self.smooth) or self.smooth < 0:
            fail(f"smooth must be a number >= 0, got {self.smooth!r}")
        if not is_int(self.n_pos) or self.n_pos < 1:
            fail(f"n_pos must be an integer >= 1, got {self.n_pos!r}")
        if not is_int(self.n_neg) or self.n_neg < 0:
            fail(f"n_neg must be an integer >= 0, got {self.n_neg!r}")
        budget = point_budget(self.prompt_mode)
        if self.n_pos + self.n_neg > budget:
            fail(
                f"n_pos + n_neg = {self.n_pos} + {self.n_neg} exceeds the {budget} points EfficientSAM "
                f"reads per prompt in prompt_mode {self.prompt_mode!r}"
            )
        if not isinstance(self.neg_sources, tuple) or any(s not in NEG_SOURCES for s in self.neg_sources):
            fail(f"neg_sources {self.neg_sources!r}: expected a list drawn from {NEG_SOURCES}")
        if self.bg_region not in BG_REGIONS:
            fail(f"bg_region {self.bg_region!r}: expected one of {BG_REGIONS}")
        if not is_num(self.occ_margin) or self.occ_margin < 0:
            fail(f"occ_margin must be a number >= 0, got {self.occ_margin!r}")
        if not is_num(self.pos_margin) or self.pos_margin < 0:
            fail(f"pos_margin must be a number >= 0, got {self.pos_margin!r}")
        if not isinstance(self.snap, bool):
            fail(f"snap must be true or false, got {self.snap!r}")
        if self.contrast not in CONTRASTS:
            fail(f"contrast {self.contrast!r}: expected one of {CONTRASTS}")
        if len(set(self.neg_sources)) != len(self.neg_sources):
            fail(f"neg_sources {list(self.neg_sources)} repeat a source")
        if self.n_neg > 0 and not self.neg_sources:
            fail("n_neg > 0 needs at least one of neg_sources")
        if not is_num(self.min_distance) or not 0 < self.min_distance <= 1:
            fail(f"min_distance must be in (0, 1] (fraction of the region's longer side), got {self.min_distance!r}")
        for name in ("rel_threshold", "bg_max_level"):
            v = getattr(self, name)
            if not is_num(v) or not 0 <= v < 1:
                fail(f"{name} must be in [0, 1), got {v!r}")
        if not is_num(self.flat_cv) or self.flat_cv < 0:
            fail(f"flat_cv must be a number >= 0, got {self.flat_cv!r}")
        if not is_int(self.seed):
            fail(f"seed must be an integer, got {self.seed!r}")

    @classmethod
    def from_dict(cls, d: dict | None, shared_prompt_mode: str | None = None) -> "SampleParams":
        """From the `sample` section; `shared_prompt_mode` is params.yaml's top-level prompt_mode.

        Unknown keys are an error; a `sample.prompt_mode` that contradicts the shared one too.
        """
        d = with_shared(d, "prompt_mode", shared_prompt_mode, "sample")
        reject_unknown("sample", d, cls)
        return cls(**d)

    def to_dict(self) -> dict:
        """JSON-ready dict (lists, not tuples) that `from_dict` reads back."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @property
    def hash(self) -> str:
        """`params_hash` column value: stable hash of `to_dict()`."""
        return params_hash(self.to_dict())
