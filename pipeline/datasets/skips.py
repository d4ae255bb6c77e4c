"""Skipped records: the one definition of what a run leaves out under `dataset.on_error: skip`.

A `Skip` names one left-out record and why:
    stage          'load' (annotation or proposals file), 'extract' or 'decode' (image pixels)
    reason         one of REASONS
    file           the annotation file (annotation records), the proposals file (detector
                   proposals, `pipeline/datasets/proposals.py`) or the image file (images)
    image_id       the image the record belongs to (None when the record does not say)
    annotation_id  the annotation record (-1 when the record has no integer id; None for a
                   whole image); for a proposal, its index in the proposals file
    instances      ground-truth instances left without a prediction by this skip: every
                   instance of a skipped image (they stay in the ground truth and count as
                   misses in AP), 1 for a malformed annotation (it has no usable mask, so it
                   cannot be ground truth; it is counted here instead), 0 for a proposal
    message        the full error line

Each stage writes the skips it knows (those of its inputs plus its own) beside its main
output as `<output>.skips.json` (`skips_path`): a JSON list of Skip objects, written
atomically. The next stage reads them, leaves the skipped images out of its work and passes
the list on; evaluate counts them in metrics.json (`summarize`).

Images: `read_image_checked` is the one reader of an image file against its record; it
raises `ImageSkipError` (a DatasetError with a `reason`) when the file cannot be read or
decoded to the end (a truncated file), or when its pixel size differs from the annotation
file's `images` entry. That entry is authoritative: images are never resized to fit it and
masks must be at its size (see `pipeline/datasets/coco_json.py`).
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, TypeVar

import numpy as np

from pipeline.atomic import write_json
from pipeline.datasets.record import AmodalDataset, DatasetError, ImageRecord

T = TypeVar("T")

log = logging.getLogger(__name__)

IMAGE_UNREADABLE = "image unreadable"
IMAGE_SIZE = "image size differs from its annotation entry"
ANNOTATION_MALFORMED = "annotation malformed"
PROPOSAL_MALFORMED = "proposal malformed"
PROPOSAL_IMAGE = "proposal image unknown"
PROPOSAL_CATEGORY = "proposal category unknown"
PROPOSAL_BOX = "proposal box empty or outside its image"
PROPOSAL_REASONS = (PROPOSAL_MALFORMED, PROPOSAL_IMAGE, PROPOSAL_CATEGORY, PROPOSAL_BOX)
REASONS = (IMAGE_UNREADABLE, IMAGE_SIZE, ANNOTATION_MALFORMED, *PROPOSAL_REASONS)
ON_ERROR = ("skip", "stop")
SKIPS_SUFFIX = ".skips.json"


class ImageSkipError(DatasetError):
    """An image that cannot be used; `reason` is IMAGE_UNREADABLE or IMAGE_SIZE."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


class TooManySkipsError(DatasetError):
    """More than `dataset.max_skipped_fraction` of the images were skipped."""


@dataclass(frozen=True)
class Skip:
    """One record left out of the run (fields in the module docstring)."""

    stage: str
    reason: str
    file: str
    image_id: int | None
    annotation_id: int | None
    instances: int
    message: str

    def __post_init__(self) -> None:
        if self.reason not in REASONS:
            raise ValueError(f"skip reason must be one of {REASONS}, got {self.reason!r}")


def image_skip(stage: str, record: ImageRecord, error: ImageSkipError) -> Skip:
    """The Skip of a whole image (its instances stay in the ground truth)."""
    return Skip(stage, error.reason, str(record.path), int(record.id), None, len(record.instances), str(error))


def read_image_checked(path: str | os.PathLike, width: int, height: int, image_id: int) -> np.ndarray:
    """The image file as RGB uint8 [H, W, 3], read to the end; ImageSkipError naming the file
    and image id when it cannot be read or is not `width` x `height` pixels."""
    from PIL import Image

    path = Path(path)
    try:
        with Image.open(path) as im:
            rgb = np.array(im.convert("RGB"))
    except (OSError, ValueError, SyntaxError) as e:  # truncated/corrupt data raises OSError
        raise ImageSkipError(f"{path}: image {image_id} cannot be read ({e})", IMAGE_UNREADABLE) from e
    if rgb.shape[:2] != (height, width):
        raise ImageSkipError(
            f"{path}: image {image_id} is {rgb.shape[1]}x{rgb.shape[0]} pixels but the annotations say "
            f"{width}x{height}", IMAGE_SIZE)
    return rgb


def skips_path(output: str | os.PathLike) -> Path:
    """Where the skips of a stage output are written: `<output>.skips.json`."""
    return Path(f"{output}{SKIPS_SUFFIX}")


def write_skips(output: str | os.PathLike, skips: list[Skip]) -> Path:
    """Write the skips beside `output` (atomically); returns the file written."""
    path = skips_path(output)
    write_json(path, [asdict(s) for s in skips])
    return path


def read_skips(output: str | os.PathLike) -> list[Skip] | None:
    """The skips recorded beside `output`; None when no such file exists."""
    path = skips_path(output)
    if not path.exists():
        return None
    try:
        items = json.loads(path.read_text(encoding="utf-8"))
        return [Skip(**item) for item in items]
    except (json.JSONDecodeError, TypeError, ValueError) as e:
        raise DatasetError(f"{path}: not a skip list ({e})") from e


def skipped_image_ids(skips: list[Skip]) -> set[int]:
    """Images skipped as a whole (their pixels could not be used)."""
    return {s.image_id for s in skips if s.annotation_id is None and s.image_id is not None}


def without_skipped_images(dataset: AmodalDataset, skips: list[Skip]) -> AmodalDataset:
    """`dataset` without the images skipped as a whole (for the stages' work; the ground truth
    of evaluate keeps them)."""
    drop = skipped_image_ids(skips)
    if not drop:
        return dataset
    return replace(dataset, images=tuple(im for im in dataset.images if im.id not in drop))


def summarize(skips: list[Skip]) -> dict:
    """metrics.json's "skipped": {"images": n, "instances": n, "reasons": {reason: records}}."""
    return {
        "images": len(skipped_image_ids(skips)),
        "instances": int(sum(s.instances for s in skips)),
        "reasons": dict(sorted(Counter(s.reason for s in skips).items())),
    }


def check_skipped_fraction(skips: list[Skip], n_images: int, max_fraction: float, where: str) -> None:
    """TooManySkipsError when more than `max_fraction` of `n_images` images were skipped."""
    n = len(skipped_image_ids(skips))
    if n_images and n / n_images > max_fraction:
        examples = "; ".join(s.message for s in skips if s.annotation_id is None)[:500]
        raise TooManySkipsError(
            f"{where}: {n} of {n_images} images skipped ({100 * n / n_images:.2f}%), more than "
            f"dataset.max_skipped_fraction = {max_fraction}; first: {examples}")


def handle_image_error(on_error: str, stage: str, record: ImageRecord, error: ImageSkipError,
                       skips: list[Skip]) -> None:
    """Under 'stop' re-raise `error`; under 'skip' append its Skip to `skips` and log it."""
    if on_error == "stop":
        raise error
    skips.append(image_skip(stage, record, error))
    log.warning("skipped (dataset.on_error: skip): %s", error)


# A stage whose images may be split over several processes records each image it skips as a
# part of its own, `<id>.skip.json` in the stage's parts folder, beside the finished images'
# parts: an image is done when either exists, and whichever process merges collects them.
SKIP_PART_SUFFIX = ".skip.json"


def write_skip_part(folder: str | os.PathLike, skip: Skip) -> Path:
    """Record the skip of a whole image in a stage's parts folder (atomically)."""
    path = Path(folder) / f"{int(skip.image_id)}{SKIP_PART_SUFFIX}"
    write_json(path, asdict(skip))
    return path


def clear_skip_part(folder: str | os.PathLike, image_id: int) -> None:
    """Forget an earlier skip of an image that has now been processed."""
    (Path(folder) / f"{int(image_id)}{SKIP_PART_SUFFIX}").unlink(missing_ok=True)


def unfinished(folder: str | os.PathLike, missing: list[int]) -> list[int]:
    """The images of `missing` (no finished part) that were not skipped either."""
    return [i for i in missing if not (Path(folder) / f"{int(i)}{SKIP_PART_SUFFIX}").exists()]


def merge_with_skips(folder: str | os.PathLike, image_ids: list[int], known: list[Skip], n_images: int,
                     max_fraction: float, where: str, merge: Callable[[list[int]], T]) -> tuple[T, list[Skip]]:
    """Merge a stage's parts: the skip parts of `image_ids` joined to the `known` skips, the
    skipped fraction of `n_images` checked, then `merge(kept image ids)`; returns its result
    and every skip (the parts folder is read before `merge` removes it)."""
    folder = Path(folder)
    image_skips = []
    for i in image_ids:
        path = folder / f"{int(i)}{SKIP_PART_SUFFIX}"
        if path.exists():
            try:
                image_skips.append(Skip(**json.loads(path.read_text(encoding="utf-8"))))
            except (json.JSONDecodeError, TypeError, ValueError) as e:
                raise DatasetError(f"{path}: not a skip record ({e})") from e
    skips = list(known) + image_skips
    check_skipped_fraction(skips, n_images, max_fraction, where)
    dropped = skipped_image_ids(image_skips)
    return merge([i for i in image_ids if i not in dropped]), skips
