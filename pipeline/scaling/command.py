"""`vlmsam merge`: write the stage outputs from the part files of a sharded run."""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from pipeline.datasets.skips import skipped_image_ids
from pipeline.decoding.params import DEFAULT_AMODAL, DEFAULT_CACHE, DEFAULT_POINTS, DEFAULT_VISIBLE, DecodeParams


def merge_extract(cache: Path, dataset, max_skipped_fraction: float) -> list:
    """The attention cache from its parts (every image finished or skipped); returns the skips."""
    from pipeline.attention.cache import missing_parts, parts_dir
    from pipeline.attention.extract import merge_cache
    from pipeline.datasets.skips import unfinished
    from pipeline.scaling.merge import merge_now

    image_ids = [im.id for im in dataset.images]
    return merge_now(parts_dir(cache), lambda: unfinished(parts_dir(cache), missing_parts(cache, image_ids)),
                     lambda: merge_cache(cache, dataset, None, max_skipped_fraction), str(cache))


def merge_decode(visible: Path, amodal: Path, dataset, points: Path, max_skipped_fraction: float,
                 decode_params) -> tuple[int, int]:
    """Both prediction files from the decode parts (the images the earlier stages skipped, listed
    beside `points`, are left out; the split pass of `decode_params`, e.g. the exemplar
    completion, runs here); returns (visible, amodal) entry counts."""
    from pipeline.datasets.skips import read_skips, unfinished, without_skipped_images
    from pipeline.decoding.parts import PartStore
    from pipeline.decoding.run import merge_predictions, split_pass
    from pipeline.scaling.merge import merge_now

    known = read_skips(points)
    known = list(dataset.skips) if known is None else known
    n_images = len(dataset.images)
    kept = without_skipped_images(dataset, known)
    image_ids = [im.id for im in kept.images]
    store = PartStore.existing(visible, amodal)
    return merge_now(store.dir, lambda: unfinished(store.dir, store.missing(image_ids)),
                     lambda: merge_predictions(store, image_ids, known, n_images, max_skipped_fraction,
                                               str(dataset.annotation_file), split_pass(kept, decode_params)),
                     f"{visible} and {amodal}")


def merge_command(
    stage: str = typer.Argument(..., help="extract (-> the attention cache) or decode (-> both prediction files)."),
    params: Path = typer.Option(Path("params.yaml"), "--params", help="Parameter file (its dataset section lists the images)."),
    cache: Path = typer.Option(DEFAULT_CACHE, "--cache", help="Attention cache to write (extract)."),
    out_visible: Path = typer.Option(DEFAULT_VISIBLE, "--out-visible", help="Visible prediction file to write (decode)."),
    out_amodal: Path = typer.Option(DEFAULT_AMODAL, "--out-amodal", help="Amodal prediction file to write (decode)."),
    points: Path = typer.Option(DEFAULT_POINTS, "--points", help="Point prompts of the run (decode; the images the earlier stages skipped are listed beside them)."),
) -> None:
    """Merge the part files of a sharded extract or decode run (the last shard to finish does
    this itself; use it after re-running one shard, or where file locks are unavailable)."""
    from pipeline.attention.cache import CacheFormatError
    from pipeline.datasets import DatasetError
    from pipeline.datasets.params import DatasetParams, load
    from pipeline.params_file import load_params, section

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        if stage not in ("extract", "decode"):
            raise ValueError(f"stage {stage!r}: expected extract or decode")
        all_params = load_params(params)
        dataset_params = DatasetParams.from_dict(section(all_params, "dataset", params))
        dataset = load(dataset_params)
        n = len(dataset.images)
        if stage == "extract":
            skips = merge_extract(cache, dataset, dataset_params.max_skipped_fraction)
            typer.echo(f"wrote {cache} ({n} images, {len(skipped_image_ids(skips))} skipped)")
        else:
            decode_params = DecodeParams.from_dict(section(all_params, "decode", params), all_params.get("prompt_mode"))
            n_visible, n_amodal = merge_decode(out_visible, out_amodal, dataset, points,
                                               dataset_params.max_skipped_fraction, decode_params)
            typer.echo(f"wrote {out_visible} ({n_visible}) and {out_amodal} ({n_amodal}) of {n} images")
    except (DatasetError, CacheFormatError, FileNotFoundError, KeyError, ValueError, RuntimeError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(code=1) from e
