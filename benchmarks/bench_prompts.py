"""Point prompts on realistic simulated attention: old defaults vs new, side by side.

Scenes of overlapping ellipses (`synthetic.random_scene`) get head maps from the attention
simulator (`pipeline/sampling/attention_simulator.py`: sinks, sparse evidence, spill, head and
layer diversity) on LLaVA-NeXT-like tokens; each configuration turns them into maps exactly as
the extract stage does (`maps.instance_maps`) and into points as the sample stage does
(`run.sample_image`). Per setting and configuration it prints the fraction of positives inside
the ground-truth visible mask, of negatives outside it, and the fallback rate. Settings vary one
simulator property at a time around its default (sink strength, sparsity, spill). SMOKE: the
attention is simulated, these are not results on a real model.

    .venv/bin/python benchmarks/bench_prompts.py [--images 60] [--seed 0] [--configs old new ...]
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np

from pipeline.attention.params import ExtractParams
from pipeline.sampling import attention_simulator as S
from pipeline.sampling import synthetic
from pipeline.sampling.params import SampleParams
from pipeline.sampling.run import LayerChoice, sample_image

WIDTH, HEIGHT = 672, 504
FINE = (36, 48)
TARGET = 0.95

OLD_EXTRACT = dict(layers=[-16, -12, -8], head_aggregation="mean", top_k_heads=8, sink_removal=False)
OLD_SAMPLE = dict(box_enlarge=1.0, bg_region="search_region", occ_margin=0.0)
CONFIGS: dict[str, tuple[dict, dict]] = {
    "old": (OLD_EXTRACT, OLD_SAMPLE),
    "new": ({}, {}),
    "new/subtract": ({"sink_method": "subtract"}, {}),
    "new/heads=localization": ({"head_aggregation": "localization", "top_k_heads": 3}, {}),
    "new/heads=lowest_entropy": ({"head_aggregation": "lowest_entropy", "top_k_heads": 3}, {}),
    "new/no-sink-removal": ({"sink_removal": False}, {}),
    "new/old-layers": ({"layers": [-16, -12, -8]}, {}),
    "new/3-middle-layers": ({"layers": [0.31, 0.38, 0.44]}, {}),
    "new/old-sampler": ({}, OLD_SAMPLE),
}
SETTINGS: dict[str, dict] = {
    "default": {},
    "sinks 0.3": {"sink_share": 0.3},
    "sinks 0.85": {"sink_share": 0.85},
    "sparse 0.03": {"hot_fraction": 0.03},
    "dense 0.3": {"hot_fraction": 0.3},
    "spill 0.15": {"spill": 0.15},
    "spill 0.7": {"spill": 0.7},
}


def subset(sim: S.SimulatedImage, layers: list[int]) -> S.SimulatedImage:
    """The simulated image restricted to `layers` (a subset of those simulated)."""
    rows = [sim.layers.index(layer) for layer in layers]
    return S.SimulatedImage(layers, {g: m[rows] for g, m in sim.target.items()}, sim.generic[rows],
                            sim.sinks, sim.kinds)


def evaluate(setting: dict, configs: dict, n_images: int, seed: int) -> dict[str, dict[str, float]]:
    """{config: {pos_in, neg_out, fallback, n_pos, n_neg}} over `n_images` simulated images."""
    sim_params = S.SimulatorParams(**setting)
    params = {name: (ExtractParams(**e), SampleParams(**s)) for name, (e, s) in configs.items()}
    layers = {name: S.simulated_layers(sim_params, e) for name, (e, _) in params.items()}
    # every configuration's layers are simulated whichever are run, so a configuration sees
    # the same scenes and draws in every run of one seed
    union = sorted({layer for e, _ in CONFIGS.values() for layer in S.simulated_layers(sim_params, ExtractParams(**e))})
    rng = np.random.default_rng(seed)
    placement = synthetic.grid_placement(WIDTH, HEIGHT, fine=FINE)
    counts = {name: np.zeros(5) for name in configs}  # pos_in, n_pos, neg_out, n_neg, fallbacks
    for image_id in range(1, n_images + 1):
        scene = synthetic.random_scene(rng, WIDTH, HEIGHT, 4, first_id=image_id * 10)
        record = synthetic.scene_record(scene, image_id, Path("unused"))
        sim = S.simulate_image(scene, placement, sim_params, union, rng)
        for name, (extract, sample) in params.items():
            image = S.image_attention(subset(sim, layers[name]), scene, placement, extract, image_id)
            choice = LayerChoice(list(range(len(layers[name]))), np.ones(len(layers[name])))
            points = sample_image(image, record, sample, choice)
            c = counts[name]
            for gt, pts in points.items():
                vis = scene.visible[gt]
                xi = np.clip(pts.x.astype(int), 0, WIDTH - 1)
                yi = np.clip(pts.y.astype(int), 0, HEIGHT - 1)
                on = vis[yi, xi]
                pos = pts.label == 1
                c += [on[pos].sum(), pos.sum(), (~on[~pos]).sum(), (~pos).sum(), bool(pts.fallback)]
    n_inst = 4 * n_images
    return {
        name: {"pos_in": c[0] / max(c[1], 1), "neg_out": c[2] / max(c[3], 1), "fallback": c[4] / n_inst,
               "n_pos": c[1] / n_inst, "n_neg": c[3] / n_inst}
        for name, c in counts.items()
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=60, help="simulated images per setting (4 objects each)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    ap.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    args = ap.parse_args()
    configs = {c: CONFIGS[c] for c in args.configs}
    print("SMOKE: simulated attention (pipeline/sampling/attention_simulator.py), not a real model")
    print(f"{args.images} images x 4 objects per setting; pos_in = positives inside the visible mask, "
          f"neg_out = negatives outside it, fb = fallback rate; targets pos_in, neg_out >= {TARGET}\n")
    t0 = time.perf_counter()
    failures = []
    header = f"{'setting':12s} {'config':26s} {'pos_in':>7s} {'neg_out':>7s} {'fb':>6s} {'pos/inst':>8s} {'neg/inst':>8s}"
    print(header)
    for setting in args.settings:
        res = evaluate(SETTINGS[setting], configs, args.images, args.seed)
        for name, r in res.items():
            print(f"{setting:12s} {name:26s} {r['pos_in']:7.3f} {r['neg_out']:7.3f} {r['fallback']:6.3f} "
                  f"{r['n_pos']:8.2f} {r['n_neg']:8.2f}")
        if "new" in res and "old" in res:
            new, old = res["new"], res["old"]
            if setting == "default" and (new["pos_in"] < TARGET or new["neg_out"] < TARGET):
                failures.append(f"{setting}: new defaults below {TARGET}")
            for key in ("pos_in", "neg_out"):
                if new[key] < old[key]:
                    failures.append(f"{setting}: new {key} {new[key]:.3f} < old {old[key]:.3f}")
            if new["fallback"] > old["fallback"]:
                failures.append(f"{setting}: new fallback rate {new['fallback']:.3f} > old {old['fallback']:.3f}")
        print()
    print(f"{time.perf_counter() - t0:.1f} s; simulator defaults: "
          f"{dataclasses.asdict(S.SimulatorParams())}")
    print("done-when: " + ("PASS" if not failures else "FAIL\n  " + "\n  ".join(failures)))


if __name__ == "__main__":
    main()
