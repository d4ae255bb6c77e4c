"""Build the gallery of a finished run: cards, images, index.html and gallery.csv."""

from __future__ import annotations

import csv
import io
import logging
import os
import shutil
from pathlib import Path

import numpy as np
from tqdm import tqdm

from pipeline.atomic import replace_dir, write_text
from pipeline.gallery.page import render_page
from pipeline.gallery.params import GalleryParams
from pipeline.gallery.select import choose
from pipeline.gallery.thumbnails import CardImage, write_card_images

log = logging.getLogger(__name__)

CSV_FIELDS = ("gt_id", "image_id", "category", "iou_amodal", "iou_visible", "iou_occluded",
              "occlusion_rate", "bucket", "occluders", "occluder_source", "amodal_source",
              "completion", "fallback", "exemplar_fallback", "occlusion_error", "on_page")


def card_fields(inst, image_id: int, iou, amodal: dict, visible: dict, occluders: list[str],
                occlusion_error: str) -> dict:
    """The facts of one card (what the page shows, filters and sorts on; gallery.csv's row).
    `iou` None: a proposal query matched to no ground truth (no IoUs, occlusion or bucket)."""
    from pipeline.evaluation.miou import bucket_of

    source = str(amodal.get("amodal_source", "not recorded"))
    completion = str(amodal.get("completion", ""))
    return {
        "gt_id": int(inst.id), "image_id": int(image_id), "category": inst.category_name,
        "iou_amodal": iou and iou.amodal_full, "iou_visible": iou and iou.visible,
        "iou_occluded": iou and iou.amodal_occluded, "occlusion_rate": iou and iou.occlusion_rate,
        "bucket": bucket_of(iou.occlusion_rate) if iou else None,
        "occluders": list(occluders), "occluder_source": str(amodal.get("occluder_source") or "not used"),
        "amodal_source": source, "completion": completion,
        "fallback": str(visible.get("fallback", "") or amodal.get("fallback", "") or ""),
        "exemplar_fallback": completion == "exemplar" and source != "exemplar",
        "occlusion_error": occlusion_error,
    }


def build_gallery(dataset, outputs, out_dir: str | os.PathLike, params: GalleryParams = GalleryParams(),
                  metrics: dict | None = None) -> dict:
    """Write the gallery of the run `outputs` (`pipeline.visualize.RunOutputs`) on `dataset`
    into `out_dir` (replaced atomically); returns {'cards', 'instances', 'smoke'}.
    `metrics` (metrics.json of the same run, optional) puts its mIoUs in the page's header."""
    from pipeline import masks as rle
    from pipeline.api import load_input_image, whole_image_maps
    from pipeline.attention.cache import read_images
    from pipeline.finished_run import read_finished_run

    run = read_finished_run(dataset, outputs)
    amodal, visible, smoke = run.amodal, run.visible, run.smoke
    image_of = {inst.id: im for im in dataset.images for inst in im.instances}
    instances = {inst.id: inst for im in dataset.images for inst in im.instances}
    cards = [card_fields(instances[g], image_of[g].id, iou, amodal.by_gt_id[g], visible.by_gt_id[g],
                         *run.occlusion.get(g, ([], "not in the attention cache")))
             for g, iou in run.ious.items()]
    chosen = choose(cards, params.max_cards)
    on_page = {c["gt_id"] for c in chosen}

    out_dir = Path(out_dir)
    tmp_dir = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp_dir, ignore_errors=True)
    (tmp_dir / "cards").mkdir(parents=True)
    by_image: dict[int, list[dict]] = {}
    for c in chosen:
        by_image.setdefault(c["image_id"], []).append(c)
    records = {im.id: im for im in dataset.images}
    progress = tqdm(total=len(chosen), desc="gallery", unit="card")
    for attention in read_images(outputs.cache, list(by_image)):
        record = records[attention.image_id]
        rgb = load_input_image(record.path).rgb
        for c in by_image[attention.image_id]:
            g = c["gt_id"]
            inst = instances[g]
            att = (whole_image_maps(attention, g, run.info.layers, run.choice.rows, run.choice.weights,
                                    run.sample)[1] if g in attention.instances else None)
            pts = run.points.get(g, [])
            image = CardImage(
                rgb=rgb, box_xywh=tuple(inst.bbox),
                masks={"gt_amodal": rle.decode(inst.amodal_rle), "gt_visible": rle.decode(inst.visible_rle),
                       "pred_amodal": rle.decode(amodal.by_gt_id[g]["segmentation"]),
                       "pred_visible": rle.decode(visible.by_gt_id[g]["segmentation"])},
                points=np.array([p[1:3] for p in pts], np.float32).reshape(-1, 2),
                labels=np.array([p[3] for p in pts], np.int8), attention=att)
            c["crop"], c["attention"] = f"cards/{g}.jpg", f"cards/{g}_att.png"
            write_card_images(image, tmp_dir / c["crop"], tmp_dir / c["attention"], params.margin, params.thumb_px)
            progress.update(1)
    progress.close()
    summary = (f"{len(chosen)} of {len(cards)} instances with a prediction "
               f"({dataset.instance_count()} in {dataset.annotation_file.name}); all in gallery.csv; "
               "worst amodal IoU first")
    if metrics:
        means = metrics.get("miou", {})
        summary += " · mIoU " + ", ".join(f"{k} {v:.3f}" for k, v in means.items() if isinstance(v, float))
    write_text(tmp_dir / "index.html", render_page(chosen, smoke=smoke, page_size=params.page_size,
                                                     title=f"vlmsam gallery: {dataset.name}", summary=summary))
    write_text(tmp_dir / "gallery.csv", _csv(cards, on_page))
    replace_dir(tmp_dir, out_dir)
    log.info("gallery written to %s (%d cards)%s", out_dir / "index.html", len(chosen), " SMOKE" if smoke else "")
    return {"cards": len(chosen), "instances": len(cards), "smoke": smoke}


def _csv(cards: list[dict], on_page: set[int]) -> str:
    from pipeline.gallery.select import worst_first

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for c in worst_first(cards):
        writer.writerow({**c, "occluders": ";".join(c["occluders"]), "on_page": c["gt_id"] in on_page,
                         **{k: "" if c[k] is None else c[k] for k in ("iou_occluded",)}})
    return buf.getvalue()

