"""Cards per second of the gallery's per-card work at D2SA image size, on 2 cores.

    .venv/bin/python benchmarks/bench_gallery.py [--cards 200] [--width 1920] [--height 1440]

Per card the gallery decodes four COCO RLEs of the whole image (ground-truth and predicted,
visible and amodal), then crops, draws contours and points and encodes the crop JPEG and the
attention PNG (`pipeline/gallery/thumbnails.py`). Input: one random photo-like image and
random elliptic masks per card (the sizes of D2SA val: 1920x1440, objects of 5-30% of the
side), a whole-image float attention map. OpenCV runs with 2 threads. Printed: cards per
second, and the share of the time in RLE decoding and in drawing/encoding, side by side.
The attention painting (`pipeline.api.whole_image_maps`) is the sampler's and is timed by
benchmarks/bench_sample.py.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from pipeline import masks as rle
from pipeline.gallery.thumbnails import CardImage, write_card_images


def _ellipse(shape, rng) -> np.ndarray:
    h, w = shape
    m = np.zeros(shape, np.uint8)
    r = int(rng.uniform(0.05, 0.3) * min(h, w))
    centre = (int(rng.uniform(r, w - r)), int(rng.uniform(r, h - r)))
    cv2.ellipse(m, centre, (r, int(r * rng.uniform(0.5, 1.0))), float(rng.uniform(0, 180)), 0, 360, 1, -1)
    return m.astype(bool)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cards", type=int, default=200)
    parser.add_argument("--width", type=int, default=1920)
    parser.add_argument("--height", type=int, default=1440)
    args = parser.parse_args()
    cv2.setNumThreads(2)
    rng = np.random.default_rng(0)
    shape = (args.height, args.width)
    rgb = cv2.GaussianBlur(rng.integers(0, 255, (*shape, 3), dtype=np.uint8), (0, 0), 3)
    attention = cv2.GaussianBlur(rng.random(shape, dtype=np.float32), (0, 0), 25)
    cards = [[rle.encode(_ellipse(shape, rng)) for _ in range(4)] for _ in range(args.cards)]
    names = ("gt_amodal", "gt_visible", "pred_amodal", "pred_visible")
    decode_s = draw_s = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for i, rles in enumerate(cards):
            t0 = time.perf_counter()
            masks = {n: rle.decode(r) for n, r in zip(names, rles)}
            t1 = time.perf_counter()
            ys, xs = np.nonzero(masks["gt_amodal"])
            box = (float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1))
            points = np.array([[box[0] + box[2] / 2, box[1] + box[3] / 2], [box[0], box[1]]], np.float32)
            write_card_images(CardImage(rgb, box, masks, points, np.array([1, 0]), attention),
                              Path(tmp) / f"{i}.jpg", Path(tmp) / f"{i}_att.png", 0.15, 224)
            t2 = time.perf_counter()
            decode_s += t1 - t0
            draw_s += t2 - t1
    total = decode_s + draw_s
    print(f"{args.cards} cards at {args.width}x{args.height}, 2 OpenCV threads")
    print(f"cards per second        {args.cards / total:8.1f}")
    print(f"RLE decoding            {decode_s / total:8.1%} of the time ({1000 * decode_s / args.cards:.1f} ms/card)")
    print(f"crop, draw, encode      {draw_s / total:8.1%} of the time ({1000 * draw_s / args.cards:.1f} ms/card)")
    print(f"D2SA val, 15,654 cards  {15654 * total / args.cards / 60:8.1f} min (2000 cards, the default cap: "
          f"{2000 * total / args.cards:.0f} s)")


if __name__ == "__main__":
    main()
