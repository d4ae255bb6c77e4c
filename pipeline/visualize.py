"""The 8-panel pipeline figure (`pipeline/figure.py`) for single-image predictions and for
instances of a finished run.

A finished run is read from its four outputs (`RunOutputs`): the attention cache (extract),
the points file (sample) and both prediction files (decode); the ground-truth panel comes
from the dataset. The attention maps are painted with the sample parameters stored in the
points file, i.e. as the sampler saw them. `select_instances` picks N instances spread over
the occlusion rates, deterministically.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.decoding.params import DEFAULT_AMODAL, DEFAULT_CACHE, DEFAULT_POINTS, DEFAULT_VISIBLE
from pipeline.figure import FigureData

log = logging.getLogger("vlmsam.visualize")

OCCLUSION_TEXT_MAX = 600  # characters of the raw answer shown in the figure


def occlusion_text(raw: str, parsed_json: str | None, error: str | None, names: list[str],
                   ids: list[int], id_word: str = "instance") -> str:
    """The occlusion panel's text: the outcome for this object first, then the raw answer."""
    lines = []
    if error:
        lines.append(f"no parsed answer: {error}")
    occluders = ", ".join(names) if names else "none named"
    lines.append(f"occluders: {occluders}")
    if names:
        lines.append(f"matched {id_word}s: {', '.join(map(str, ids)) if ids else 'none'}")
    if parsed_json:
        lines.append(f"parsed: {parsed_json}")
    shown = "".join(c if c.isprintable() else "\ufffd" for c in raw.strip())
    if len(shown) > OCCLUSION_TEXT_MAX:
        shown = shown[:OCCLUSION_TEXT_MAX] + "..."
    lines += ["", f"raw answer: {shown or '(empty)'}"]
    return "\n".join(lines)


def _notes(fallback: str, completion: str | None, occluder_source: str | None, prompt_mode: str | None,
           extra: list[str] = ()) -> list[str]:
    notes = [f"fallback: {fallback}"] if fallback else []
    if completion:
        notes.append(f"completion: {completion}" + (f" ({occluder_source})" if occluder_source else ""))
    if prompt_mode:
        notes.append(f"prompt: {prompt_mode}")
    return notes + list(extra)


def prediction_figure_data(prediction, rgb: np.ndarray) -> FigureData:
    """FigureData of a `pipeline.api.Prediction` on its image (no ground truth)."""
    occ = prediction.occlusion
    return FigureData(
        image=rgb, box_xyxy=prediction.box_xyxy, class_name=prediction.class_name,
        occlusion_text=occlusion_text(occ.raw, occ.parsed_json, occ.error, occ.occluder_names,
                                      occ.occluder_ids, id_word="object"),
        layer_maps=prediction.layer_maps, aggregated_map=prediction.aggregated_map,
        points=prediction.points, labels=prediction.labels,
        visible_mask=prediction.visible_mask, visible_score=prediction.visible_score,
        amodal_mask=prediction.amodal_mask, amodal_score=prediction.amodal_score, smoke=prediction.smoke,
        notes=_notes(prediction.fallback, prediction.completion, prediction.occluder_source,
                     prediction.prompt_mode, [f"occlusion question: {occ.listing}",
                                              f"amodal: {prediction.amodal_source}"]),
        occluder_masks=[(f"{o.name}{' (located)' if o.located else ''}", o.mask) for o in prediction.occluder_masks],
    )


# figure file formats by file extension
FIGURE_FORMATS = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg"}


def figure_format(out_path: str | os.PathLike) -> str:
    """The image format of a figure file by its extension; a ValueError for any other extension."""
    suffix = Path(out_path).suffix.lower()
    if suffix not in FIGURE_FORMATS:
        raise ValueError(f"{out_path}: figures are written as {', '.join(FIGURE_FORMATS)} (by the extension), "
                         f"not {suffix or 'a file without extension'}")
    return FIGURE_FORMATS[suffix]


def write_figure(data: FigureData, out_path: str | os.PathLike) -> Path:
    """Draw the pipeline figure into `out_path` atomically, PNG or JPEG by its extension."""
    from pipeline.atomic import atomic_path
    from pipeline.figure import draw_pipeline_figure

    out_path = Path(out_path)
    image_format = figure_format(out_path)
    with atomic_path(out_path) as tmp, open(tmp, "wb") as f:
        draw_pipeline_figure(data, f, image_format)  # a file object: the format is explicit, whatever the temp name
    return out_path


# ---------------------------------------------------------------- finished runs

@dataclass(frozen=True)
class RunOutputs:
    """The files of a finished run that the figure reads, and the stage writing each."""

    cache: Path = DEFAULT_CACHE
    points: Path = DEFAULT_POINTS
    visible: Path = DEFAULT_VISIBLE
    amodal: Path = DEFAULT_AMODAL

    def check(self) -> None:
        """FileNotFoundError naming every missing output and the stage that writes it."""
        writers = {self.cache: "extract", self.points: "sample", self.visible: "decode", self.amodal: "decode"}
        missing = [f"{path} (written by the {stage} stage: `vlmsam {stage}` or `dvc repro {stage}`)"
                   for path, stage in writers.items() if not Path(path).exists()]
        if missing:
            raise FileNotFoundError("finished run incomplete, missing: " + "; ".join(missing))

    def sampler_view(self):
        """(cache info, points table, points metadata, SampleParams, LayerChoice): the attention
        as the sampler saw it, from the parameters stored in the points file."""
        from pipeline.attention.cache import read_info
        from pipeline.sampling.params import SampleParams
        from pipeline.sampling.points_schema import read_points
        from pipeline.sampling.run import LayerChoice

        info = read_info(self.cache)
        table, meta = read_points(self.points)
        try:
            sample = SampleParams.from_dict(meta.get("params"))
        except (TypeError, ValueError) as e:
            raise ValueError(f"{self.points}: the stored sample parameters cannot be read ({e})") from e
        return info, table, meta, sample, LayerChoice.resolve(sample, info, self.cache)


def select_instances(candidates: list[tuple[float, int, int]], n: int) -> list[tuple[int, int]]:
    """`n` of the (occlusion_rate, image_id, gt_id) candidates spread evenly over the occlusion
    rates (sorted by rate, then ids; evenly spaced ranks, both ends included); all when fewer."""
    ordered = sorted(candidates)
    if n >= len(ordered):
        picks = range(len(ordered))
    else:
        picks = sorted(set(np.linspace(0, len(ordered) - 1, n).round().astype(int).tolist()))
    return [(ordered[i][1], ordered[i][2]) for i in picks]


def _by_key(entries: list[dict], path: Path) -> dict[tuple[int, int], dict]:
    out = {}
    for i, e in enumerate(entries):
        if "gt_id" not in e:
            raise ValueError(f"{path}: entry {i} (image_id {e['image_id']}) has no gt_id; cannot match it to an instance")
        out[(int(e["image_id"]), int(e["gt_id"]))] = e
    return out


def visualize_run(dataset, outputs: RunOutputs, n: int, out_dir: str | os.PathLike) -> list[Path]:
    """Figures of `n` instances of a finished run (see `select_instances`) into `out_dir`;
    returns the written PNG paths."""
    from tqdm import tqdm

    from pipeline import masks as rle
    from pipeline.api import load_input_image, whole_image_maps
    from pipeline.attention.cache import read_image
    from pipeline.datasets.record import DatasetError
    from pipeline.predictions import is_smoke, read_predictions

    if n < 1:
        raise ValueError(f"the number of figures must be >= 1, got {n}")
    outputs.check()
    info, table, meta, sample, choice = outputs.sampler_view()
    visible_entries, amodal_entries = read_predictions(outputs.visible), read_predictions(outputs.amodal)
    visible, amodal = _by_key(visible_entries, outputs.visible), _by_key(amodal_entries, outputs.amodal)
    smoke = bool(info.smoke or meta.get("smoke") or is_smoke(visible_entries) or is_smoke(amodal_entries))

    records = {im.id: im for im in dataset.images}
    instances = {(im.id, inst.id): inst for im in dataset.images for inst in im.instances}
    # a prediction and ground-truth masks (under dataset.proposals: a query paired with an instance)
    done = [k for k in instances if k in visible and k in amodal and instances[k].amodal_rle is not None]
    if not done and dataset.proposals is not None:
        raise ValueError(
            f"{outputs.amodal}: no proposal of {dataset.proposals['path']} matches a ground-truth "
            f"instance of {dataset.annotation_file} (as evaluate pairs them): nothing to draw"
        )
    if not done:
        raise ValueError(
            f"{outputs.visible} / {outputs.amodal}: no prediction matches an instance of "
            f"{dataset.annotation_file} (were the stages run on another dataset?)"
        )
    chosen = select_instances([(instances[k].occlusion_rate, *k) for k in done], n)
    if len(chosen) < n:
        log.info("only %d instances have predictions: drawing all of them", len(chosen))

    cols = table.select(["image_id", "gt_id", "rank", "x", "y", "label"]).to_pydict()
    point_rows: dict[tuple[int, int], list[int]] = {}
    for i, key in enumerate(zip(cols["image_id"], cols["gt_id"])):
        point_rows.setdefault(key, []).append(i)

    out_dir = Path(out_dir)
    written = []
    for rank, (image_id, gt_id) in enumerate(tqdm(chosen, desc="visualize", unit="fig")):
        record, inst = records[image_id], instances[(image_id, gt_id)]
        attention = read_image(outputs.cache, image_id)
        if gt_id not in attention.instances:
            raise ValueError(f"{outputs.cache}: image {image_id} has no maps for instance {gt_id} (re-run extract)")
        att = attention.instances[gt_id]
        layer_maps, aggregated = whole_image_maps(attention, gt_id, info.layers, choice.rows, choice.weights, sample)
        rows = sorted(point_rows.get((image_id, gt_id), []), key=lambda i: cols["rank"][i])
        vis, amo = visible[(image_id, gt_id)], amodal[(image_id, gt_id)]
        if record.path is None:
            raise ValueError(f"{dataset.annotation_file}: image {image_id} has no file to draw")
        rgb = load_input_image(record.path).rgb
        if rgb.shape[:2] != (record.height, record.width):
            raise DatasetError(f"{record.path}: image {image_id} is {rgb.shape[1]}x{rgb.shape[0]} pixels "
                               f"but the annotations say {record.width}x{record.height}")
        x, y, w, h = inst.bbox
        data = FigureData(
            image=rgb, box_xyxy=(x, y, x + w, y + h),
            class_name=f"{inst.category_name} (image {image_id}, instance {gt_id})",
            occlusion_text=occlusion_text(attention.occlusion_raw, attention.occlusion_json or None,
                                          attention.occlusion_error or None, att.occluder_names, att.occluder_ids),
            layer_maps=layer_maps, aggregated_map=aggregated,
            points=np.array([[cols["x"][i], cols["y"][i]] for i in rows], np.float32).reshape(-1, 2),
            labels=np.array([cols["label"][i] for i in rows], np.int8),
            visible_mask=rle.decode(vis["segmentation"]), visible_score=float(vis["score"]),
            amodal_mask=rle.decode(amo["segmentation"]), amodal_score=float(amo["score"]), smoke=smoke,
            gt_visible=rle.decode(inst.visible_rle), gt_amodal=rle.decode(inst.amodal_rle),
            notes=_notes(amo.get("fallback", ""), amo.get("completion"), amo.get("occluder_source"),
                         amo.get("prompt_mode"), [f"GT occlusion {inst.occlusion_rate:.2f}"]),
            occluder_masks=[(f"instance {i}", rle.decode(visible[(image_id, i)]["segmentation"]))
                            for i in amo.get("occluder_ids", []) if (image_id, i) in visible],
        )
        written.append(write_figure(data, out_dir / f"{rank:02d}_image{image_id}_instance{gt_id}.png"))
    return written
