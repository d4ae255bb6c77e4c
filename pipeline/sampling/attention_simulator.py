"""A stand-in for real VLM attention, per layer and head, for the target and the generic prompt.

The Gaussian blobs of `synthetic.py` test the sampler's mechanics; this simulator imitates what
is published about real attention maps (../shared/notes/attention_literature.md), so that sink
removal, layer and head choices and point sampling can be compared by measurement. It is a
stand-in: everything made from it is marked SMOKE (`cache_info`).

One image (`simulate_image`) gets, for every instance's target prompt and for the one generic
prompt of the image, head maps [L, H, T] over the image tokens of a placement, each the image
part of a softmax row (non-negative, summing to `image_share`):

    head map = image_share * (sink_share * sinks + (1 - sink_share) * content)

- sinks: the same few tokens with the same relative weights for every prompt of the image;
  `sink_share` is a per-head constant, jittered per prompt (softmax competition);
- content of a target prompt: evidence * hot + (1 - evidence) * diffuse, where `hot` holds
  sparse hot tokens on the target's visible part plus weaker ones (`spill`) on same-category
  objects and on the target's occluders (each object's hot tokens are drawn once per image:
  the same for its own prompt and for the spill of others), `evidence` = the head's localising strength times the
  layer's depth profile, and `diffuse` is log-normal noise over all tokens (objects a little
  above the background);
- content of the generic prompt: diffuse only (it names no object).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from pipeline.attention import maps as M
from pipeline.attention.cache import CacheInfo, ImageAttention, InstanceAttention, TokenPlacement
from pipeline.attention.params import ExtractParams, resolve_layers
from pipeline.sampling.synthetic import CATEGORY, Scene

HEAD_LOCALISING, HEAD_DIFFUSE, HEAD_SINK = 0, 1, 2
SINK_PLACES = ("background", "anywhere", "objects")
HOT_PLACES = ("texture", "edges", "labels")


@dataclass(frozen=True)
class SimulatorParams:
    """Every property of the simulated attention, with the fact it imitates.

    family, num_layers  the simulated model: its layers are resolved as the extract stage
                        resolves them (default LLaVA-NeXT, 32 layers)
    num_heads           heads per layer (real 7B models have 32; fewer keep the benchmark quick)
    localising_heads    fraction of heads that localise: the localisation-head study finds
                        a few heads per model carry the grounding signal (L14H24, L14H26, ...
                        of LLaVA-1.5's 1,024 heads) (default 0.15)
    sink_heads          fraction of heads dominated by sinks (LocalizationHeads drops heads
                        whose attention on the bottom image row exceeds 0.05 anywhere) (default 0.3)
    n_sinks             sink tokens per image: "a few image tokens take a large share of the
                        attention of any text query" (See What You Are Told) (default 4)
    sink_share          share of a head's image attention taken by the sinks, for ordinary heads
                        ("sink strength") (default 0.6)
    sink_share_dominated  the same for sink-dominated heads (default 0.95)
    sink_jitter         relative spread of a head's sink share between prompts (uniform in
                        1 +- sink_jitter): the sinks are the same for every prompt, their share
                        moves a little with what else the query attends to (default 0.1)
    sink_place          where the sinks sit: 'background' (tokens no object covers, when there
                        are enough: massive activations appear on uninformative patches),
                        'anywhere', or 'objects' (tokens on objects; the literature does not
                        pin the place down) (default 'background')
    sink_residual       sigma of a log-normal jitter of each sink's weight per prompt: the part
                        of the sinks that a generic-prompt removal cannot cancel (default 0)
    hot_fraction        fraction of the target's visible tokens that carry its evidence
                        ("sparsity"; evidence for the object is sparse) (default 0.1)
    hot_place           where on the visible part the evidence sits: 'texture' (anywhere on
                        it), 'edges' (tokens at the border of the visible part, the occlusion
                        border included) or 'labels' (one compact patch, like a printed label)
                        (default 'texture')
    spill               weight of the hot tokens on same-category objects and on occluders
                        relative to the target's own; above 1 the spill outshines the
                        target's own evidence (default 0.4)
    occluder_spill      the same for occluders only (of any category); None = `spill`
                        (default None)
    lowfreq             amplitude (in log units) of a smooth random field that multiplies the
                        diffuse part, drawn per prompt: low-frequency background attention
                        (default 0)
    lowfreq_scale       length scale of that field as a fraction of the image diagonal
                        (default 0.25)
    object_gain         diffuse attention on objects relative to the background, for every
                        prompt: objects draw attention whatever the question (default 1.5)
    noise               sigma of the log-normal token noise of the diffuse part (default 0.6)
    peak_depth          relative depth where layers localise best: the middle layers (LLaVA-1.5
                        layers 10-14 of 32; Kaduri et al.'s middle quarter) (default 0.38)
    depth_width         Gaussian width of that depth profile, in relative depth (default 0.18)
    evidence            content share of the hot tokens for a localising head at peak_depth
                        (default 0.7)
    weak_evidence       the same for diffuse and sink-dominated heads (default 0.1)
    image_share         share of the query row's attention that falls on image tokens (default 0.5)
    """

    family: str = "llava_next"
    num_layers: int = 32
    num_heads: int = 16
    localising_heads: float = 0.15
    sink_heads: float = 0.3
    n_sinks: int = 4
    sink_share: float = 0.6
    sink_share_dominated: float = 0.95
    sink_jitter: float = 0.1
    sink_place: str = "background"
    sink_residual: float = 0.0
    hot_fraction: float = 0.1
    hot_place: str = "texture"
    spill: float = 0.4
    occluder_spill: float | None = None
    lowfreq: float = 0.0
    lowfreq_scale: float = 0.25
    object_gain: float = 1.5
    noise: float = 0.6
    peak_depth: float = 0.38
    depth_width: float = 0.18
    evidence: float = 0.7
    weak_evidence: float = 0.1
    image_share: float = 0.5

    def __post_init__(self) -> None:
        for name in ("localising_heads", "sink_heads", "sink_share", "sink_share_dominated", "sink_jitter",
                     "hot_fraction", "evidence", "weak_evidence", "image_share", "peak_depth"):
            v = getattr(self, name)
            if not 0 <= v <= 1:
                raise ValueError(f"simulator.{name} must be in [0, 1], got {v!r}")
        if self.localising_heads + self.sink_heads > 1:
            raise ValueError("simulator.localising_heads + sink_heads must be at most 1")
        for name in ("num_layers", "num_heads", "n_sinks"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"simulator.{name} must be a positive integer, got {getattr(self, name)!r}")
        if self.spill < 0 or self.object_gain < 0 or self.noise < 0 or self.depth_width <= 0:
            raise ValueError("simulator.spill, object_gain, noise must be >= 0 and depth_width > 0")
        if self.occluder_spill is not None and self.occluder_spill < 0:
            raise ValueError(f"simulator.occluder_spill must be None or >= 0, got {self.occluder_spill!r}")
        if self.sink_residual < 0 or self.lowfreq < 0 or self.lowfreq_scale <= 0:
            raise ValueError("simulator.sink_residual, lowfreq must be >= 0 and lowfreq_scale > 0")
        if self.sink_place not in SINK_PLACES:
            raise ValueError(f"simulator.sink_place {self.sink_place!r}: expected one of {SINK_PLACES}")
        if self.hot_place not in HOT_PLACES:
            raise ValueError(f"simulator.hot_place {self.hot_place!r}: expected one of {HOT_PLACES}")

    def head_kinds(self) -> np.ndarray:
        """[H] kind of each head (HEAD_LOCALISING, HEAD_DIFFUSE, HEAD_SINK), the same in every layer."""
        n_loc = max(1, round(self.localising_heads * self.num_heads))
        n_sink = round(self.sink_heads * self.num_heads)
        kinds = np.full(self.num_heads, HEAD_DIFFUSE, np.int8)
        kinds[:n_loc] = HEAD_LOCALISING
        kinds[n_loc:n_loc + n_sink] = HEAD_SINK
        return kinds

    def depth_profile(self, layer: int) -> float:
        """Localising strength of a layer relative to the best one (1 at peak_depth)."""
        d = layer / self.num_layers
        return math.exp(-0.5 * ((d - self.peak_depth) / self.depth_width) ** 2)


@dataclass
class SimulatedImage:
    """Head maps of one image: target prompts per instance and the image's generic prompt."""

    layers: list[int]
    target: dict[int, np.ndarray]  # gt id -> float32 [L, H, T]
    generic: np.ndarray  # float32 [L, H, T]
    sinks: np.ndarray  # int [n_sinks] token indices
    kinds: np.ndarray  # int8 [H]


def token_centres(placement: TokenPlacement) -> np.ndarray:
    """(x, y) centres [T, 2] of the placement's token rects."""
    rect = np.asarray(placement.rect, np.float64)
    return np.stack([(rect[:, 0] + rect[:, 2]) / 2, (rect[:, 1] + rect[:, 3]) / 2], 1)


def _tokens_on(mask: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """bool [T]: tokens whose centre lies on the mask."""
    h, w = mask.shape
    x = np.clip(centres[:, 0].astype(int), 0, w - 1)
    y = np.clip(centres[:, 1].astype(int), 0, h - 1)
    return mask[y, x]


def _hot(on: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """float [T]: 1 on a random `fraction` (at least one) of the tokens marked `on`."""
    out = np.zeros(on.shape[0])
    idx = np.flatnonzero(on)
    if idx.size:
        out[rng.choice(idx, max(1, round(fraction * idx.size)), replace=False)] = 1.0
    return out


def _edge_tokens(mask: np.ndarray, placement: TokenPlacement, centres: np.ndarray) -> np.ndarray:
    """bool [T]: tokens whose centre lies on `mask` and one of whose side midpoints does not."""
    rect = np.asarray(placement.rect, np.float64)
    hx, hy = 0.45 * (rect[:, 2] - rect[:, 0]), 0.45 * (rect[:, 3] - rect[:, 1])
    zero = np.zeros_like(hx)
    off = np.zeros(centres.shape[0], bool)
    for dx, dy in ((hx, zero), (-hx, zero), (zero, hy), (zero, -hy)):
        off |= ~_tokens_on(mask, centres + np.stack([dx, dy], 1))
    return _tokens_on(mask, centres) & off


def _placed_hot(on: np.ndarray, edges: np.ndarray, centres: np.ndarray, params: "SimulatorParams",
                rng: np.random.Generator) -> np.ndarray:
    """float [T]: the evidence tokens of one object (see SimulatorParams.hot_place)."""
    if params.hot_place == "texture" or not on.any():
        return _hot(on, params.hot_fraction, rng)
    idx = np.flatnonzero(on)
    k = max(1, round(params.hot_fraction * idx.size))
    out = np.zeros(on.shape[0])
    if params.hot_place == "edges":
        pool = np.flatnonzero(edges) if edges.any() else idx
        out[rng.choice(pool, min(k, pool.size), replace=False)] = 1.0
    else:  # labels: the k visible tokens nearest one of them
        seed = centres[rng.choice(idx)]
        out[idx[np.argsort(((centres[idx] - seed) ** 2).sum(1), kind="stable")[:k]]] = 1.0
    return out


def _low_frequency(centres: np.ndarray, diagonal: float, params: "SimulatorParams",
                   rng: np.random.Generator) -> np.ndarray:
    """float [T]: exp(lowfreq * field), the field a sum of 6 random Gaussian bumps of width
    lowfreq_scale * diagonal, scaled to unit standard deviation over the tokens."""
    lo, hi = centres.min(0), centres.max(0)
    bumps = rng.uniform(lo, hi, (6, 2))
    sign = rng.choice([-1.0, 1.0], 6)
    s = params.lowfreq_scale * diagonal
    field = (sign * np.exp(-((centres[:, None] - bumps[None]) ** 2).sum(-1) / (2 * s * s))).sum(1)
    field = (field - field.mean()) / max(field.std(), 1e-12)
    return np.exp(params.lowfreq * field)


def simulate_image(
    scene: Scene, placement: TokenPlacement, params: SimulatorParams, layers: list[int],
    rng: np.random.Generator, categories: dict[int, str] | None = None,
) -> SimulatedImage:
    """Head maps of every instance of `scene` and of the generic prompt (see module docstring).

    `categories`: gt id -> category name (same-category objects receive spill); None = one
    category for all.
    """
    centres = token_centres(placement)
    T, H, L = centres.shape[0], params.num_heads, len(layers)
    categories = categories or {g: CATEGORY for g in scene.visible}
    on_visible = {g: _tokens_on(v, centres) for g, v in scene.visible.items()}
    on_object = np.zeros(T, bool)
    for g, a in scene.amodal.items():
        on_object |= _tokens_on(a, centres)
    allowed = {"background": ~on_object, "objects": on_object, "anywhere": np.ones(T, bool)}[params.sink_place]
    pool = np.flatnonzero(allowed) if allowed.sum() >= params.n_sinks else np.arange(T)
    sinks = rng.choice(pool, min(params.n_sinks, pool.size), replace=False)
    sink_map = np.zeros(T)
    sink_map[sinks] = rng.dirichlet(np.full(sinks.size, 2.0))
    kinds = params.head_kinds()
    base_share = np.where(kinds == HEAD_SINK, params.sink_share_dominated, params.sink_share)  # [H]
    strength = np.where(kinds == HEAD_LOCALISING, params.evidence, params.weak_evidence)  # [H]
    depth = np.array([params.depth_profile(layer) for layer in layers])  # [L]
    object_weight = np.where(on_object, params.object_gain, 1.0)

    diagonal = math.hypot(scene.width, scene.height)

    def compose(hot: np.ndarray | None) -> np.ndarray:
        weight = object_weight
        if params.lowfreq > 0:
            weight = weight * _low_frequency(centres, diagonal, params, rng)
        sinks_here = sink_map
        if params.sink_residual > 0:
            sinks_here = sink_map * rng.lognormal(0.0, params.sink_residual, T)
            sinks_here = sinks_here / sinks_here.sum()
        diffuse = weight * rng.lognormal(0.0, params.noise, (L, H, T))
        content = diffuse / diffuse.sum(-1, keepdims=True)
        if hot is not None:
            hot = hot * rng.lognormal(0.0, params.noise / 2, (L, H, T))
            hot = hot / hot.sum(-1, keepdims=True)
            ev = (depth[:, None] * strength[None, :])[..., None]  # [L, H, 1]
            content = ev * hot + (1 - ev) * content
        share = base_share[None, :] * rng.uniform(1 - params.sink_jitter, 1 + params.sink_jitter, (L, H))
        share = np.clip(share, 0.0, 0.999)[..., None]
        return (params.image_share * (share * sinks_here + (1 - share) * content)).astype(np.float32)

    # each object's evidence tokens are a property of the object: the same for its own prompt
    # and for the spill of other prompts onto it
    edges = {g: _edge_tokens(scene.visible[g], placement, centres) if params.hot_place == "edges" else None
             for g in scene.visible}
    salient = {g: _placed_hot(on_visible[g], edges[g], centres, params, rng) for g in scene.visible}
    occluder_spill = params.spill if params.occluder_spill is None else params.occluder_spill
    target = {}
    for g in scene.visible:
        hot = salient[g].copy()
        spill = {o: params.spill for o in scene.visible if o != g and categories[o] == categories[g]}
        for o in scene.occluders[g]:
            spill[o] = max(spill.get(o, 0.0), occluder_spill)
        for o in sorted(spill):
            hot = np.maximum(hot, spill[o] * salient[o])
        if not hot.any():  # a target no token centre falls on: its evidence is its nearest token
            ys, xs = np.nonzero(scene.visible[g])
            d = ((centres - [xs.mean() + 0.5, ys.mean() + 0.5]) ** 2).sum(1)
            hot[np.argmin(d)] = 1.0
        target[g] = compose(hot)
    return SimulatedImage(list(layers), target, compose(None), sinks, kinds)


def image_attention(
    sim: SimulatedImage, scene: Scene, placement: TokenPlacement, extract: ExtractParams, image_id: int,
    categories: dict[int, str] | None = None,
) -> ImageAttention:
    """The cache entry the extract stage would write for the simulated image: each instance's
    head maps go through the same `maps.instance_maps` with the `extract` parameters."""
    options = extract.map_options()
    generic = sim.generic if extract.sink_removal else None
    instances = {}
    for g, heads in sim.target.items():
        name = (categories or {}).get(g, CATEGORY)
        res = M.instance_maps(heads, sink_heads=generic, **options)
        instances[g] = InstanceAttention(
            g, name, f"the {name}", [name], res.maps, occluder_names=[name] * len(scene.occluders[g]),
            occluder_ids=list(scene.occluders[g]), fallback=res.fallback,
        )
    return ImageAttention(image_id, scene.width, scene.height, placement, instances)


def simulated_layers(params: SimulatorParams, extract: ExtractParams) -> list[int]:
    """The layers `extract.layers` names on the simulated model."""
    return resolve_layers(extract.layers, params.num_layers, params.family)


def cache_info(params: SimulatorParams, extract: ExtractParams) -> CacheInfo:
    """Provenance of a simulated cache: marked smoke, with the simulator's parameters."""
    layers = simulated_layers(params, extract)
    return CacheInfo(
        model_id="simulated-attention", model_revision="", prompt_templates=extract.all_templates(),
        layers=layers, params={"simulated": asdict(params), "extract": extract.to_dict(), "layers_resolved": layers},
        smoke=True,
    )
