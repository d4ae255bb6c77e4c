"""Would EfficientSAM's freed slots be worth more positives? Precision of the sampler's 3rd and 4th
positive on simulated attention, per rank.

Under `decode.negatives: auto` EfficientSAM gets no negatives, so 2 of its 6 prompt slots are free.
They could carry more positives only if the sampler's later positives are as sure as its first
two. This asks the sampler (`run.sample_image`, defaults otherwise) for n_pos = 2, 3, 4 on the
attention simulator (`pipeline/sampling/attention_simulator.py`, the scenes and maps of
bench_prompts.py, default extract parameters) and prints, per n_pos and per rank of a positive
(best first), the fraction inside the ground-truth visible mask, and per instance:
  all_in  the share of instances whose every positive lies inside the visible mask (one positive
          on another object or the background pulls the mask there)
  spread  mean distance of the visible pixels to their nearest positive, over sqrt(visible area)
          (lower: the positives cover more of the object; a geometric proxy, not a mask quality)
SMOKE: the attention is simulated, not a real model.

    .venv/bin/python benchmarks/bench_freed_slots.py [--images 60] [--seed 0] [--n-pos 2 3 4]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from pipeline.attention.params import ExtractParams
from pipeline.sampling import attention_simulator as S
from pipeline.sampling import synthetic
from pipeline.sampling.params import SampleParams
from pipeline.sampling.run import LayerChoice, sample_image

WIDTH, HEIGHT = 672, 504
FINE = (36, 48)
OBJECTS = 4
SETTINGS: dict[str, dict] = {"default": {}, "sparse 0.03": {"hot_fraction": 0.03}, "spill 0.7": {"spill": 0.7}}


def spread(visible: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> float:
    """Mean distance of visible pixels to the nearest of the points, over sqrt(visible area)."""
    py, px = np.nonzero(visible)
    nearest = np.hypot(px[:, None] + 0.5 - xs[None], py[:, None] + 0.5 - ys[None]).min(1)
    return float(nearest.mean() / np.sqrt(visible.sum()))


def evaluate(setting: dict, n_pos_list: list[int], n_images: int, seed: int) -> dict[int, dict]:
    """{n_pos: {rank_in: [fraction per rank], rank_n: [count per rank], all_in, spread, fallback}}."""
    sim_params = S.SimulatorParams(**setting)
    extract = ExtractParams()
    layers = S.simulated_layers(sim_params, extract)
    choice = LayerChoice(list(range(len(layers))), np.ones(len(layers)))
    samplers = {k: SampleParams(n_pos=k) for k in n_pos_list}
    rng = np.random.default_rng(seed)
    placement = synthetic.grid_placement(WIDTH, HEIGHT, fine=FINE)
    top = max(n_pos_list)
    stats = {k: {"in": np.zeros(top), "n": np.zeros(top), "all_in": 0, "spread": 0.0, "fallback": 0} for k in n_pos_list}
    for image_id in range(1, n_images + 1):
        scene = synthetic.random_scene(rng, WIDTH, HEIGHT, OBJECTS, first_id=image_id * 10)
        record = synthetic.scene_record(scene, image_id, Path("unused"))
        image = S.image_attention(S.simulate_image(scene, placement, sim_params, layers, rng), scene, placement, extract, image_id)
        for k, params in samplers.items():
            st = stats[k]
            for gt, pts in sample_image(image, record, params, choice).items():
                pos = pts.label == 1
                xs, ys = pts.x[pos], pts.y[pos]
                vis = scene.visible[gt]
                on = vis[np.clip(ys.astype(int), 0, HEIGHT - 1), np.clip(xs.astype(int), 0, WIDTH - 1)]
                st["in"][: len(on)] += on
                st["n"][: len(on)] += 1
                st["all_in"] += bool(on.all())
                st["spread"] += spread(vis, xs, ys)
                st["fallback"] += bool(pts.fallback)
    n_inst = OBJECTS * n_images
    return {k: {"rank_in": st["in"] / np.maximum(st["n"], 1), "rank_n": st["n"], "all_in": st["all_in"] / n_inst,
                "spread": st["spread"] / n_inst, "fallback": st["fallback"] / n_inst} for k, st in stats.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=60, help="simulated images per setting (4 objects each)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-pos", type=int, nargs="+", default=[2, 3, 4], help="positives asked of the sampler")
    ap.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    args = ap.parse_args()
    print("SMOKE: simulated attention (pipeline/sampling/attention_simulator.py), not a real model")
    print(f"{args.images} images x {OBJECTS} objects per setting; in@r = share of rank-r positives inside the "
          "visible mask (instances with a rank-r positive)")
    top = max(args.n_pos)
    ranks = " ".join(f"{f'in@{r}':>6s} {f'n@{r}':>5s}" for r in range(1, top + 1))
    print(f"{'setting':12s} {'n_pos':>5s} {ranks} {'all_in':>6s} {'spread':>6s} {'fb':>5s}")
    for setting in args.settings:
        for k, r in evaluate(SETTINGS[setting], args.n_pos, args.images, args.seed).items():
            cells = " ".join(f"{r['rank_in'][i]:6.3f} {int(r['rank_n'][i]):5d}" for i in range(top))
            print(f"{setting:12s} {k:5d} {cells} {r['all_in']:6.3f} {r['spread']:6.3f} {r['fallback']:5.3f}", flush=True)


if __name__ == "__main__":
    main()
