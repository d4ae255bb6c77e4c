"""`vlmsam merge`: write the stage outputs from the part files of a sharded run."""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from pipeline.decoding.params import DEFAULT_AMODAL, DEFAULT_CACHE, DEFAULT_VISIBLE


def merge_extract(cache: Path, image_ids: list[int]) -> Path:
    """The attention cache from its parts (every image's part must exist)."""
    from pipeline.attention.cache import merge_parts, missing_parts, parts_dir
    from pipeline.scaling.merge import merge_now

    return merge_now(parts_dir(cache), lambda: missing_parts(cache, image_ids),
                     lambda: merge_parts(cache, image_ids), str(cache))


def merge_decode(visible: Path, amodal: Path, image_ids: list[int]) -> tuple[int, int]:
    """Both prediction files from the decode parts; returns (visible, amodal) entry counts."""
    from pipeline.decoding.parts import PartStore
    from pipeline.scaling.merge import merge_now

    store = PartStore.existing(visible, amodal)
    return merge_now(store.dir, lambda: store.missing(image_ids), lambda: store.finalize(image_ids),
                     f"{visible} and {amodal}")


def merge_command(
    stage: str = typer.Argument(..., help="extract (-> the attention cache) or decode (-> both prediction files)."),
    params: Path = typer.Option(Path("params.yaml"), "--params", help="Parameter file (its dataset section lists the images)."),
    cache: Path = typer.Option(DEFAULT_CACHE, "--cache", help="Attention cache to write (extract)."),
    out_visible: Path = typer.Option(DEFAULT_VISIBLE, "--out-visible", help="Visible prediction file to write (decode)."),
    out_amodal: Path = typer.Option(DEFAULT_AMODAL, "--out-amodal", help="Amodal prediction file to write (decode)."),
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
        dataset = load(DatasetParams.from_dict(section(load_params(params), "dataset", params)))
        image_ids = [im.id for im in dataset.images]
        if stage == "extract":
            typer.echo(f"wrote {merge_extract(cache, image_ids)} ({len(image_ids)} images)")
        else:
            n_visible, n_amodal = merge_decode(out_visible, out_amodal, image_ids)
            typer.echo(f"wrote {out_visible} ({n_visible}) and {out_amodal} ({n_amodal}) of {len(image_ids)} images")
    except (DatasetError, CacheFormatError, FileNotFoundError, KeyError, ValueError, RuntimeError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(code=1) from e
