"""Point prompts on simulated attention over a grid of what the literature leaves open: old
defaults vs new, side by side, worst cell first.

Scenes of ellipses (`synthetic.random_scene`, or heavily occluded pairs `synthetic.occluded_scene`)
get head maps from the attention simulator (`pipeline/sampling/attention_simulator.py`: sinks,
sparse evidence, spill, head and layer diversity); each configuration turns them into maps
exactly as the extract stage does (`maps.instance_maps`) and into points as the sample stage
does (`run.sample_image`). A cell is the simulator's default world with one knob moved (KNOBS:
evidence sparsity and place, same-class and occluder spill, sinks, low-frequency background and
noise, token size and views, object size, heavy occlusion), or one of `--mixed` seeded random
draws that move every knob at once. Per cell and configuration it prints the fraction of
positives inside the ground-truth visible part (pos_in), of negatives off it (neg_out) and the
fallback rate (fb); then the worst level of every knob, the worst cell and the mean over cells.
SMOKE: the attention is simulated, these are not results on a real model.

    .venv/bin/python benchmarks/bench_prompts.py [--images 24] [--mixed 6] [--seed 0]
        [--configs old new ...] [--sample key=value ...]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import yaml

from pipeline.attention.params import ExtractParams
from pipeline.sampling import attention_simulator as S
from pipeline.sampling import synthetic
from pipeline.sampling.params import SampleParams
from pipeline.sampling.run import LayerChoice, sample_image

WIDTH, HEIGHT = 672, 504
POS_TARGET, NEG_TARGET = 0.95, 0.98
N_OBJECTS = 4

OLD_EXTRACT = dict(layers=[-16, -12, -8], head_aggregation="mean", top_k_heads=8, sink_removal=False)
# the sampler's positive rules before the robustness grid
GRID_OLD_SAMPLE = dict(pos_margin=0.0, contrast="occluders", snap=False)
OLD_SAMPLE = dict(box_enlarge=1.0, bg_region="search_region", occ_margin=0.0, **GRID_OLD_SAMPLE)
CONFIGS: dict[str, tuple[dict, dict]] = {
    "old": (OLD_EXTRACT, OLD_SAMPLE),
    "pre-grid": ({}, GRID_OLD_SAMPLE),  # today's extract defaults, the sampler before the grid
    "new": ({}, {}),
    "new/pos_margin=0": ({}, {"pos_margin": 0.0}),
    "new/contrast=occluders": ({}, {"contrast": "occluders"}),
    "new/no-snap": ({}, {"snap": False}),
    "new/n_pos=1": ({}, {"n_pos": 1}),
    "new/subtract": ({"sink_method": "subtract"}, {}),
    "new/heads=localization": ({"head_aggregation": "localization", "top_k_heads": 3}, {}),
    "new/no-sink-removal": ({"sink_removal": False}, {}),
    "new/old-layers": ({"layers": [-16, -12, -8]}, {}),
}


@dataclass(frozen=True)
class Cell:
    """One world of the grid: simulator parameters, scenes and token layout."""

    sim: dict = field(default_factory=dict)
    size: tuple[float, float] = (0.08, 0.22)  # semi-axes of the ellipses, fractions of the image
    occluded: bool = False  # heavily occluded pairs (a visible crescent of ~10%) instead
    tokens: str = "llava"  # 'llava' (24x24 base view + 14-px tiles) or a single-view patch side '14' ...


# the knobs the literature leaves open, each with the levels tried (the default world is the
# simulator's defaults, LLaVA-NeXT tokens and ellipses of 8-22% of the image)
KNOBS: dict[str, dict[str, Cell]] = {
    "sparsity": {"hot 0.02": Cell({"hot_fraction": 0.02}), "hot 0.3": Cell({"hot_fraction": 0.3})},
    "evidence place": {"edges": Cell({"hot_place": "edges"}), "labels": Cell({"hot_place": "labels"})},
    "same-class spill": {"spill 0.15": Cell({"spill": 0.15}), "spill 0.7": Cell({"spill": 0.7}),
                         "spill 1.2": Cell({"spill": 1.2})},
    "occluder spill": {"occ 0.8": Cell({"occluder_spill": 0.8}), "occ 1.2": Cell({"occluder_spill": 1.2})},
    "sinks": {"share 0.85": Cell({"sink_share": 0.85}), "16 sinks": Cell({"n_sinks": 16}),
              "on objects": Cell({"sink_place": "objects"}), "residual 0.5": Cell({"sink_residual": 0.5})},
    "background": {"lowfreq 0.5": Cell({"lowfreq": 0.5}), "lowfreq 1.0": Cell({"lowfreq": 1.0}),
                   "noise 1.0": Cell({"noise": 1.0})},
    "tokens": {"14 px": Cell(tokens="14"), "28 px": Cell(tokens="28"), "32 px": Cell(tokens="32")},
    "object size": {"small": Cell(size=(0.025, 0.05)), "large": Cell(size=(0.2, 0.35))},
    "occlusion": {"heavy": Cell(occluded=True)},
}


def mixed_cells(n: int, seed: int) -> dict[str, Cell]:
    """`n` seeded random worlds: every knob at one of its levels or its default."""
    rng = np.random.default_rng(seed + 1000)
    out = {}
    for k in range(n):
        cell = Cell()
        sim = {}
        for levels in KNOBS.values():
            pick = int(rng.integers(len(levels) + 1))
            if pick == len(levels):
                continue
            level = list(levels.values())[pick]
            sim.update(level.sim)
            if level.size != Cell.size:
                cell = replace(cell, size=level.size)
            if level.occluded:
                cell = replace(cell, occluded=True)
            if level.tokens != Cell.tokens:
                cell = replace(cell, tokens=level.tokens)
        out[f"mixed {k}"] = replace(cell, sim=sim)
    return out


def subset(sim: S.SimulatedImage, layers: list[int]) -> S.SimulatedImage:
    """The simulated image restricted to `layers` (a subset of those simulated)."""
    rows = [sim.layers.index(layer) for layer in layers]
    return S.SimulatedImage(layers, {g: m[rows] for g, m in sim.target.items()}, sim.generic[rows],
                            sim.sinks, sim.kinds)


def placement_of(cell: Cell):
    if cell.tokens == "llava":
        return synthetic.grid_placement(WIDTH, HEIGHT, fine=(36, 48))
    return synthetic.patch_placement(WIDTH, HEIGHT, int(cell.tokens))


def evaluate(cell: Cell, configs: dict, n_images: int, seed: int) -> dict[str, np.ndarray]:
    """{config: [pos_in, n_pos, neg_out, n_neg, fallbacks, instances]} over `n_images` images."""
    sim_params = S.SimulatorParams(**cell.sim)
    params = {name: (ExtractParams(**e), SampleParams(**s)) for name, (e, s) in configs.items()}
    layers = {name: S.simulated_layers(sim_params, e) for name, (e, _) in params.items()}
    # every configuration's layers are simulated whichever are run, so a configuration sees
    # the same scenes and draws in every run of one seed
    union = sorted({layer for e, _ in CONFIGS.values() for layer in S.simulated_layers(sim_params, ExtractParams(**e))})
    rng = np.random.default_rng(seed)
    placement = placement_of(cell)
    counts = {name: np.zeros(6) for name in configs}
    for image_id in range(1, n_images + 1):
        if cell.occluded:
            scene = synthetic.occluded_scene(rng, WIDTH, HEIGHT, N_OBJECTS // 2, first_id=image_id * 10)
        else:
            scene = synthetic.random_scene(rng, WIDTH, HEIGHT, N_OBJECTS, first_id=image_id * 10, size=cell.size)
        record = synthetic.scene_record(scene, image_id, Path("unused"))
        sim = S.simulate_image(scene, placement, sim_params, union, rng)
        for name, (extract, sample) in params.items():
            image = S.image_attention(subset(sim, layers[name]), scene, placement, extract, image_id)
            choice = LayerChoice(list(range(len(layers[name]))), np.ones(len(layers[name])))
            points = sample_image(image, record, sample, choice)
            c = counts[name]
            for gt, pts in points.items():
                if cell.occluded and not scene.occluders[gt]:
                    continue  # the heavy-occlusion cell scores the occluded objects only
                vis = scene.visible[gt]
                xi = np.clip(pts.x.astype(int), 0, WIDTH - 1)
                yi = np.clip(pts.y.astype(int), 0, HEIGHT - 1)
                on = vis[yi, xi]
                pos = pts.label == 1
                c += [on[pos].sum(), pos.sum(), (~on[~pos]).sum(), (~pos).sum(), bool(pts.fallback), 1]
    return counts


def rates(c: np.ndarray) -> dict[str, float]:
    return {"pos_in": c[0] / max(c[1], 1), "neg_out": c[2] / max(c[3], 1) if c[3] else 1.0,
            "fb": c[4] / max(c[5], 1), "pos": c[1] / max(c[5], 1), "neg": c[3] / max(c[5], 1)}


def _row(label: str, res: dict[str, dict[str, float]], names: list[str]) -> str:
    return f"{label:28s}" + "".join(
        f" | {res[n]['pos_in']:6.3f} {res[n]['neg_out']:6.3f} {res[n]['fb']:5.3f} {res[n]['pos']:4.2f}"
        for n in names)


def parse_overrides(items: list[str]) -> dict:
    """key=value pairs (YAML values) -> dict."""
    out = {}
    for item in items:
        key, _, value = item.partition("=")
        out[key] = yaml.safe_load(value)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=24, help=f"simulated images per cell ({N_OBJECTS} objects each)")
    ap.add_argument("--mixed", type=int, default=6, help="seeded random cells that move every knob")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--configs", nargs="+", default=["old", "pre-grid", "new"], choices=list(CONFIGS))
    ap.add_argument("--sample", nargs="*", default=[], metavar="KEY=VALUE",
                    help="add a configuration 'try': the new defaults with these sample overrides")
    ap.add_argument("--knobs", nargs="+", default=list(KNOBS), choices=list(KNOBS))
    args = ap.parse_args()
    configs = {c: CONFIGS[c] for c in args.configs}
    if args.sample:
        configs["try"] = ({}, parse_overrides(args.sample))
    names = list(configs)
    cells: dict[str, tuple[str, Cell]] = {"default": ("default", Cell())}
    for knob in args.knobs:
        for level, cell in KNOBS[knob].items():
            cells[level] = (knob, cell)
    for name, cell in mixed_cells(args.mixed, args.seed).items():
        cells[name] = ("mixed", cell)

    print("SMOKE: simulated attention (pipeline/sampling/attention_simulator.py), not a real model")
    print(f"{args.images} images x {N_OBJECTS} objects per cell; pos_in = positives inside the visible part, "
          f"neg_out = negatives off it, fb = fallback rate, pos = positives per instance; "
          f"targets pos_in >= {POS_TARGET}, neg_out >= {NEG_TARGET}\n")
    t0 = time.perf_counter()
    print(f"{'cell':28s}" + "".join(f" | {n[:22]:>22s}     " for n in names))
    print(f"{'':28s}" + " | pos_in neg_ou    fb  pos" * len(names))
    results: dict[str, dict[str, dict[str, float]]] = {}
    for label, (knob, cell) in cells.items():
        counts = evaluate(cell, configs, args.images, args.seed)
        results[label] = {n: rates(c) for n, c in counts.items()}
        print(_row(f"{knob[:10]}: {label}" if knob != "default" else label, results[label], names), flush=True)

    print("\nper knob, worst level (pos_in, neg_out: the lowest; fb: the highest)")
    for knob in ["default", *args.knobs, "mixed"]:
        labels = [lb for lb, (k, _) in cells.items() if k == knob]
        if not labels:
            continue
        worst = {n: {"pos_in": min(results[lb][n]["pos_in"] for lb in labels),
                     "neg_out": min(results[lb][n]["neg_out"] for lb in labels),
                     "fb": max(results[lb][n]["fb"] for lb in labels),
                     "pos": min(results[lb][n]["pos"] for lb in labels)} for n in names}
        print(_row(knob, worst, names))
    print()
    for n in names:
        pos = {lb: r[n]["pos_in"] for lb, r in results.items()}
        neg = {lb: r[n]["neg_out"] for lb, r in results.items()}
        wp, wn = min(pos, key=pos.get), min(neg, key=neg.get)
        print(f"{n:24s} worst pos_in {pos[wp]:.3f} ({wp}), worst neg_out {neg[wn]:.3f} ({wn}); "
              f"mean pos_in {np.mean(list(pos.values())):.3f}, neg_out {np.mean(list(neg.values())):.3f}, "
              f"fb {np.mean([r[n]['fb'] for r in results.values()]):.3f}")
    print(f"\n{time.perf_counter() - t0:.1f} s")
    if "new" in names:
        short = [f"{lb}: pos_in {r['new']['pos_in']:.3f}, neg_out {r['new']['neg_out']:.3f}"
                 for lb, r in results.items()
                 if r["new"]["pos_in"] < POS_TARGET or r["new"]["neg_out"] < NEG_TARGET]
        print("done-when (new, every cell): " + ("PASS" if not short else "cells short of the targets\n  "
                                                  + "\n  ".join(short)))


if __name__ == "__main__":
    main()
