"""A finished run as a FiftyOne dataset folder, written without FiftyOne installed.

Open it with `fo.Dataset.from_dir(DIR, dataset_type=fo.types.FiftyOneDataset)`. Layout:

    metadata.json    {"name", "media_type": "image", "info"}; without a "version" key, which
                     FiftyOne's FiftyOneDataset importer reads as its schema-free layout and
                     infers each field from the samples (`Sample.from_dict`)
    samples.json     {"samples": [...]}: one sample per image, labels as FiftyOne serialises
                     them (`_cls` names the label class)
    data/<image_id>_<name>         the images (or absolute paths to them, copy_images=False)
    fields/attention/<image_id>.png   the attention heatmaps (8-bit, range [0, 255])

Sample fields (every box and point relative to the image, in [0, 1]):

    ground_truth_amodal, ground_truth_visible   Detections of the annotated masks
    pred_amodal, pred_visible                   Detections of the decode stage's masks
    points        Keypoints: per instance one Keypoint "positive" and one "negative"
    attention     Heatmap: per pixel the largest of the image's instance maps (each the
                  sampler's aggregated map, min-max normalised over the image)

A Detection's `bounding_box` [x, y, w, h] is the tight box of its mask's pixels and `mask` the
mask cropped to it (FiftyOne's `Detection.from_mask` convention), a zlib-compressed `.npy` as
BSON binary; an empty mask has box [0, 0, 0, 0], no `mask`, and `mask_empty` true. Every label
carries `gt_id`. A smoke run's samples are tagged SMOKE and the dataset's info and tags say so.
Under dataset.proposals the ground truth is the annotated instances and the predictions are
every proposal query's (`gt_id` the query's id), with `detector_score` and `matched` (paired with
an annotated instance as evaluate pairs them; the IoUs are None when not).
"""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import shutil
import zlib
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from pipeline.atomic import replace_dir, write_json
from pipeline.errors import VlmsamError

log = logging.getLogger(__name__)

SMOKE_TAG = "SMOKE"
SMOKE_NOTE = "SMOKE RUN: random weights, not results"
HEATMAP_DIR = "fields/attention"
FIELDS = {
    "ground_truth_amodal": "annotated amodal masks (Detections)",
    "ground_truth_visible": "annotated visible masks (Detections)",
    "pred_amodal": "predicted amodal masks, with IoU, amodal_source and the VLM's occluders (Detections)",
    "pred_visible": "predicted visible masks, with IoU and the points fallback (Detections)",
    "points": "point prompts: per instance a Keypoint 'positive' and one 'negative' (Keypoints)",
    "attention": "per pixel the largest normalised attention map of the image's instances (Heatmap)",
}


class ExportError(VlmsamError, ValueError):
    """An export that cannot be written where it was asked for."""


def encode_array(array: np.ndarray) -> dict:
    """`array` as FiftyOne stores an array field in JSON: BSON binary of the zlib-compressed
    `.npy` bytes (`fiftyone.core.utils.serialize_numpy_array`)."""
    buf = io.BytesIO()
    np.save(buf, np.asarray(array), allow_pickle=False)
    data = base64.b64encode(zlib.compress(buf.getvalue())).decode("ascii")
    return {"$binary": {"base64": data, "subType": "00"}}


def mask_detection(mask: np.ndarray, label: str, **attributes) -> dict:
    """A `Detection` of the full-image bool mask `mask` (see the module docstring)."""
    height, width = mask.shape
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    detection = {"_cls": "Detection", "label": label}
    if rows.size == 0:
        detection.update(bounding_box=[0.0, 0.0, 0.0, 0.0], mask_empty=True)
    else:
        y0, y1, x0, x1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
        detection.update(bounding_box=[x0 / width, y0 / height, (x1 - x0) / width, (y1 - y0) / height],
                         mask=encode_array(mask[y0:y1, x0:x1]), mask_empty=False)
    return {**detection, **attributes}


def instance_keypoints(points: list[tuple[int, float, float, int]], width: int, height: int,
                       **attributes) -> list[dict]:
    """The `Keypoint`s of one instance's (rank, x, y, label) points in pixels: one labelled
    "positive" (label 1) and one "negative" (label 0), each only when it has points."""
    out = []
    for name, want in (("positive", 1), ("negative", 0)):
        xy = [[x / width, y / height] for _, x, y, lab in points if lab == want]
        if xy:
            out.append({"_cls": "Keypoint", "label": name, "points": xy, **attributes})
    return out


def heatmap_image(maps: list[np.ndarray]) -> np.ndarray:
    """uint8 [H, W]: per pixel the largest of `maps`, each min-max normalised (NaN as 0)."""
    out = None
    for m in maps:
        m = np.nan_to_num(np.asarray(m, np.float32), nan=0.0)
        lo, hi = float(m.min()), float(m.max())
        m = (m - lo) / (hi - lo) if hi > lo else np.zeros_like(m)
        out = m if out is None else np.maximum(out, m)
    return np.round(out * 255).astype(np.uint8)


def export_fiftyone(dataset, outputs, out_dir: str | os.PathLike, copy_images: bool = True) -> dict:
    """Write the run `outputs` (`pipeline.visualize.RunOutputs`) on `dataset` as a FiftyOne
    dataset folder `out_dir` (replaced as a whole; an existing folder that is not such an
    export is refused). Returns {'samples', 'instances', 'predictions', 'smoke'}."""
    from pipeline import masks as rle
    from pipeline.api import whole_image_maps
    from pipeline.attention.cache import read_images
    from pipeline.finished_run import read_finished_run
    from pipeline.gallery.build import card_fields

    out_dir = Path(out_dir)
    _check_target(out_dir)
    run = read_finished_run(dataset, outputs)
    tmp_dir = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp_dir, ignore_errors=True)
    (tmp_dir / HEATMAP_DIR).mkdir(parents=True)
    (tmp_dir / "data").mkdir()
    truth = {im.id: im for im in (dataset.ground_truth or dataset).images}  # proposals: the annotated instances
    predictions = {}
    for entry in run.amodal.entries:
        predictions.setdefault(entry["image_id"], []).append(entry)
    attention = read_images(outputs.cache, [im.id for im in dataset.images if _in_cache(im, run)])
    pending = next(attention, None)
    samples, n_predictions = [], 0
    for record in tqdm(dataset.images, desc="fiftyone export", unit="img"):
        if record.path is None or not Path(record.path).exists():
            raise ExportError(f"{dataset.annotation_file}: image {record.id} file {record.path} not found")
        size = (record.width, record.height)
        sample = {"filepath": _media_path(record, tmp_dir, copy_images),
                  "tags": [SMOKE_TAG] if run.smoke else [],
                  "metadata": {"_cls": "ImageMetadata", "width": record.width, "height": record.height},
                  "image_id": record.id}
        gt_amodal, gt_visible = [], []
        for inst in truth[record.id].instances:
            facts = {"gt_id": inst.id, "occlusion_rate": inst.occlusion_rate}
            gt_amodal.append(mask_detection(rle.decode(inst.amodal_rle), inst.category_name, **facts))
            gt_visible.append(mask_detection(rle.decode(inst.visible_rle), inst.category_name, **facts))
        sample["ground_truth_amodal"] = {"_cls": "Detections", "detections": gt_amodal}
        sample["ground_truth_visible"] = {"_cls": "Detections", "detections": gt_visible}
        pred_amodal, pred_visible, keypoints = [], [], []
        instances = {inst.id: inst for inst in record.instances}
        for entry in predictions.get(record.id, []):
            g = entry.get("gt_id")
            if g is None:
                raise ExportError(f"{outputs.amodal}: an entry of image {record.id} has no gt_id; "
                                  "the export pairs each prediction with its instance")
            visible = run.visible.by_gt_id[g]
            label = dataset.categories[entry["category_id"]]
            card = card_fields(instances[g], record.id, run.ious.get(g), entry, visible,
                               *run.occlusion.get(g, ([], "not in the attention cache")))
            proposal = {} if dataset.proposals is None else {
                "detector_score": entry.get("detector_score"), "matched": g in run.ious}
            pred_amodal.append(mask_detection(
                rle.decode(entry["segmentation"]), label, confidence=float(entry["score"]), gt_id=g,
                iou=card["iou_amodal"], iou_occluded=card["iou_occluded"],
                amodal_source=card["amodal_source"], completion=card["completion"],
                exemplar_fallback=card["exemplar_fallback"], vlm_occluders=card["occluders"],
                occluder_source=card["occluder_source"], occlusion_error=card["occlusion_error"], **proposal))
            pred_visible.append(mask_detection(
                rle.decode(visible["segmentation"]), label, confidence=float(visible["score"]), gt_id=g,
                iou=card["iou_visible"], fallback=card["fallback"]))
            keypoints += instance_keypoints(run.points.get(g, []), *size, gt_id=g, instance_label=label)
        n_predictions += len(pred_amodal)
        sample["pred_amodal"] = {"_cls": "Detections", "detections": pred_amodal}
        sample["pred_visible"] = {"_cls": "Detections", "detections": pred_visible}
        sample["points"] = {"_cls": "Keypoints", "keypoints": keypoints}
        if pending is not None and pending.image_id == record.id:
            maps = [whole_image_maps(pending, g, run.info.layers, run.choice.rows, run.choice.weights,
                                     run.sample)[1] for g in pending.instances]
            sample["attention"] = _write_heatmap(tmp_dir, record.id, heatmap_image(maps))
            pending = next(attention, None)
        samples.append(sample)
    write_json(tmp_dir / "samples.json", {"samples": samples}, indent=None)
    write_json(tmp_dir / "metadata.json", _metadata(dataset, outputs, run.smoke, copy_images))
    replace_dir(tmp_dir, out_dir)
    log.info("FiftyOne dataset written to %s (%d samples)%s", out_dir, len(samples), " SMOKE" if run.smoke else "")
    return {"samples": len(samples), "instances": dataset.instance_count(), "predictions": n_predictions,
            "smoke": run.smoke}


def _in_cache(record, run) -> bool:
    """Whether the attention cache holds the image (it holds the VLM's answer for its instances)."""
    return any(inst.id in run.occlusion for inst in record.instances)


def _media_path(record, tmp_dir: Path, copy_images: bool) -> str:
    source = Path(record.path)
    if not copy_images:
        return str(source.resolve())
    name = f"data/{record.id}_{source.name}"
    shutil.copyfile(source, tmp_dir / name)
    return name


def _write_heatmap(tmp_dir: Path, image_id: int, image: np.ndarray) -> dict:
    name = f"{HEATMAP_DIR}/{image_id}.png"
    ok, buf = cv2.imencode(".png", image)
    if not ok:
        raise RuntimeError(f"{tmp_dir / name}: the heatmap could not be encoded")
    (tmp_dir / name).write_bytes(buf.tobytes())
    return {"_cls": "Heatmap", "map_path": name, "range": [0, 255]}


def _metadata(dataset, outputs, smoke: bool, copy_images: bool) -> dict:
    name = f"vlmsam-{dataset.name}" + ("-SMOKE" if smoke else "")
    info = {
        "description": (f"{SMOKE_NOTE}. " if smoke else "") + f"vlmsam run on {dataset.annotation_file.name}",
        "tags": [SMOKE_TAG] if smoke else [],
        "default_classes": sorted(set(dataset.categories.values())),
        "smoke": smoke,
        "vlmsam": {
            "annotation_file": str(dataset.annotation_file), "flavour": dataset.flavour,
            "amodal": str(outputs.amodal), "visible": str(outputs.visible),
            "points": str(outputs.points), "attention_cache": str(outputs.cache),
            "images_copied": copy_images, "fields": FIELDS,
        },
    }
    if smoke:
        info["smoke_note"] = SMOKE_NOTE
    return {"name": name, "media_type": "image", "info": info}


def _check_target(out_dir: Path) -> None:
    """Refuse to replace a folder that holds anything but an earlier export."""
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise ExportError(f"{out_dir}: exists and is not a folder")
    if not any(out_dir.iterdir()):
        return
    try:
        ours = "vlmsam" in json.loads((out_dir / "metadata.json").read_text(encoding="utf-8"))["info"]
    except (OSError, ValueError, KeyError, TypeError):
        ours = False
    if not ours:
        raise ExportError(f"{out_dir}: exists and is not a vlmsam FiftyOne export; give a new or empty folder")
