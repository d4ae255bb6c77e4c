"""Write golden.npz: outputs of transformers' real `Sam2Processor` on a few images and prompts.

Run it in a side environment that has torchvision (it does not import beside the project's CPU
torch), from the repository root:

    python3 -m venv /work/sam2-side-venv
    /work/sam2-side-venv/bin/pip install torch==2.14.1 torchvision==0.29.1
    /work/sam2-side-venv/bin/pip install 'transformers>=5.24,<5.25' numpy pillow==13.0.0
    /work/sam2-side-venv/bin/python tests/data/sam2_processor/make_golden.py

What is stored is described in README.md beside this file; `tests/test_sam2_processing.py` compares
`pipeline/segmenters/_sam2_processing.py` with it.
"""

from __future__ import annotations

import hashlib
import json
import platform
from pathlib import Path

import numpy as np
import torch
import torchvision
import transformers
from PIL import Image
from transformers import Sam2ImageProcessor, Sam2Processor

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
D2SA = REPO.parent / "shared" / "reference" / "amodal_real_data" / "D2SA" / "images_sln_amodal"
FIXTURE = REPO / "tests" / "data" / "segmenter_folders" / "sam2"
SAMPLES = 2000
STRIDE = 1_000_003  # a prime: sample k is flat index k * STRIDE mod the array size
SEED = 20261202

# (name, source file, crop box or None, stored size or None): full-size images are read from
# ../shared at test time; small ones are stored in the npz.
IMAGES = [
    ("d2s_026022_full", "D2S_026022.jpg", None, None),
    ("d2s_068312_full", "D2S_068312.jpg", None, None),
    ("d2s_004811_small", "D2S_004811.jpg", (400, 300, 1400, 1050), (200, 150)),
    ("d2s_058302_portrait", "D2S_058302.jpg", (700, 200, 1300, 1200), (97, 161)),
]


def load(source: str, crop, size) -> np.ndarray:
    with Image.open(D2SA / source) as im:
        im = im.convert("RGB")
        if crop is not None:
            im = im.crop(crop).resize(size, Image.BILINEAR)
        return np.array(im)


def queries(rng: np.random.Generator, height: int, width: int):
    """Prompt queries of 1 to 4 points (positives, negatives, a box as corner labels 2 and 3), with
    fractional coordinates, and one box per query."""
    out_points, out_labels, boxes = [], [], []
    for n, labels in [(1, [1]), (3, [1, 0, 0]), (4, [1, 1, 0, 1]), (2, [2, 3])]:
        pts = rng.uniform([0, 0], [width, height], size=(n, 2)).round(2)
        if labels == [2, 3]:
            pts = np.sort(pts, axis=0)
        out_points.append(pts.tolist())
        out_labels.append(labels)
        x0, y0 = rng.uniform([0, 0], [width / 2, height / 2]).round(1)
        boxes.append([x0, y0, x0 + width / 3, y0 + height / 4])
    return out_points, out_labels, boxes


def smooth_logits(rng: np.random.Generator, channels: int, side: int) -> np.ndarray:
    """Blob-like low-resolution logits, exactly representable (multiples of 1/16)."""
    y, x = np.mgrid[0:side, 0:side] / side
    out = []
    for _ in range(channels):
        cx, cy, r = rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8), rng.uniform(0.1, 0.35)
        field = 6.0 * (r - np.hypot(x - cx, y - cy)) / r + np.sin(9 * x) + np.cos(7 * y)
        out.append(np.clip(np.round(field * 16), -127, 127).astype(np.int8))
    return np.stack(out)[None]  # [1, C, side, side]


def sample_index(size: int) -> np.ndarray:
    """The flat indices of the stored samples of an array of `size` values."""
    return (np.arange(SAMPLES, dtype=np.int64) * STRIDE) % size


def main() -> None:
    rng = np.random.default_rng(SEED)
    processors = {
        "published": Sam2Processor(Sam2ImageProcessor(), target_size=1024, point_pad_value=-10),
        "fixture": Sam2Processor.from_pretrained(FIXTURE),
    }
    data: dict[str, np.ndarray] = {}
    meta = {"transformers": transformers.__version__, "torch": torch.__version__,
            "torchvision": torchvision.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "machine": platform.machine(), "images": [], "settings": {}}
    for key, proc in processors.items():
        ip = proc.image_processor
        meta["settings"][key] = {"size": [ip.size["height"], ip.size["width"]], "target_size": proc.target_size,
                                 "mask_size": [ip.mask_size["height"], ip.mask_size["width"]]}
    for name, source, crop, size in IMAGES:
        image = load(source, crop, size)
        height, width = image.shape[:2]
        meta["images"].append({"name": name, "source": source, "crop": crop, "stored": size is not None,
                               "height": height, "width": width})
        data[f"{name}/sha256"] = np.frombuffer(hashlib.sha256(image.tobytes()).digest(), dtype=np.uint8)
        if size is not None:
            data[f"{name}/image"] = image
        for key, proc in processors.items():
            pv = proc(images=image, return_tensors="pt")["pixel_values"][0].numpy()
            data[f"{name}/{key}/pixel_values"] = pv.reshape(-1)[sample_index(pv.size)]
            data[f"{name}/{key}/pixel_channel_sums"] = pv.astype(np.float64).sum(axis=(1, 2))
            points, labels, boxes = queries(rng, height, width)
            enc = proc(images=None, original_sizes=[[height, width]], input_points=[points],
                       input_labels=[labels], input_boxes=[boxes], return_tensors="pt")
            padded = np.full((len(points), 4, 2), np.nan)
            for q, p in enumerate(points):
                padded[q, : len(p)] = p
            data[f"{name}/{key}/points"] = padded
            data[f"{name}/{key}/boxes"] = np.array(boxes)
            data[f"{name}/{key}/input_points"] = enc["input_points"][0].numpy()
            data[f"{name}/{key}/input_labels"] = enc["input_labels"][0].numpy()
            data[f"{name}/{key}/input_boxes"] = enc["input_boxes"][0].numpy()
            side = meta["settings"][key]["mask_size"][0]
            low = smooth_logits(rng, 1, side)
            low_f = torch.from_numpy(low.astype(np.float32) / 16)
            logits = proc.post_process_masks([low_f.clone()], [[height, width]], binarize=False)[0][0].numpy()
            binary = proc.post_process_masks([low_f.clone()], [[height, width]])[0][0].numpy()
            data[f"{name}/{key}/low_res_logits_x16"] = low
            data[f"{name}/{key}/mask_logits"] = logits.reshape(-1)[sample_index(logits.size)]
            data[f"{name}/{key}/mask_bits"] = np.packbits(binary.reshape(-1))
    data["meta"] = np.array(json.dumps(meta))
    np.savez_compressed(HERE / "golden.npz", **data)
    print(json.dumps(meta, indent=1))


if __name__ == "__main__":
    main()
