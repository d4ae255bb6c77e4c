"""Single-image API speed on the smoke profile (tiny random VLM, seeded random EfficientSAM
ViT-T, CPU), side by side in one run.

    .venv/bin/python benchmarks/bench_predict.py [--boxes 4] [--reps 2] [--size 640x480]

Prints the time of K separate `predict` calls (each runs the VLM prefix and the EfficientSAM
encoder again) against ONE `predict_objects` call with the same K boxes (one VLM prefix
prefill, one image embedding, all boxes as queries of one decoder call), their ratio, and the
share of the EfficientSAM encoder in one `predict`. Medians over --reps after one warm-up.
Random weights: speed only, no quality. The occlusion answer is capped at 8 new tokens so
the random model's babble does not dominate.
"""

from __future__ import annotations

import argparse
import time

from timing import median_time  # benchmarks/timing.py (the script's folder is on sys.path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--boxes", type=int, default=4, help="boxes predicted on the one image")
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--size", default="640x480", help="image size WxH")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))

    from pipeline.api import VLMSAM
    from pipeline.decoding.sam import image_tensor
    from pipeline.profiles import SMOKE_OVERRIDES, apply_overrides, default_params
    from pipeline.synth import synth_coco

    model = VLMSAM.from_params(apply_overrides(default_params(), {**SMOKE_OVERRIDES, "extract.max_new_tokens": 8}))
    data, images = synth_coco(1, seed=0, width=width, height=height, mean_instances=args.boxes + 2)
    names = {c["id"]: c["name"] for c in data["categories"]}
    objects = [((x, y, x + w, y + h), names[a["category_id"]])
               for a in data["annotations"] for x, y, w, h in [a["bbox"]]][: args.boxes]
    if len(objects) < args.boxes:
        raise SystemExit(f"the synthetic scene has only {len(objects)} objects; ask for fewer --boxes")
    rgb = images[0]
    k = len(objects)

    separate = median_time(lambda: [model.predict(rgb, box, name) for box, name in objects], args.reps)
    together = median_time(lambda: model.predict_objects(rgb, objects), args.reps)
    import torch

    with torch.inference_mode():
        encoder = median_time(lambda: model.sam.model.get_image_embeddings(image_tensor(rgb)), args.reps)
    one = separate / k
    print(f"image {width}x{height}, {k} boxes, CPU threads {torch.get_num_threads()}")
    print(f"{k} x predict (one box each):      {separate:7.2f} s   ({one:.2f} s per box)")
    print(f"1 x predict_objects ({k} boxes):    {together:7.2f} s")
    print(f"ratio separate / together:         {separate / together:7.2f}x")
    print(f"EfficientSAM encoder, one image:   {encoder:7.2f} s   ({100 * encoder / one:.0f}% of one predict)")


if __name__ == "__main__":
    main()
