"""The one internal record every amodal dataset loader produces."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pipeline.errors import VlmsamError


@dataclass(frozen=True)
class Instance:
    """One annotated object.

    `bbox` is the amodal box in XYWH pixels; `amodal_rle` / `visible_rle` are COCO RLEs
    with str counts; `occlusion_rate` = 1 - visible area / amodal area; `occluder_ids`
    lists instance ids of the occluders where the dataset gives them, else None.
    Objects given by a user in single-image mode (`pipeline/api.py`) have no annotation:
    their `amodal_rle`, `visible_rle` and `occlusion_rate` are None, never made up; so have
    the queries made from detector proposals (`pipeline/datasets/proposals.py`), whose `score`
    is the detector's (None for every other instance).
    """

    id: int
    category_id: int
    category_name: str
    bbox: tuple[float, float, float, float]
    amodal_rle: dict | None
    visible_rle: dict | None
    occlusion_rate: float | None
    occluder_ids: tuple[int, ...] | None = None
    score: float | None = None


@dataclass(frozen=True)
class ImageRecord:
    """One image: its file, size and annotated instances (`path` is None for an image given
    in memory in single-image mode)."""

    id: int
    path: Path | None
    width: int
    height: int
    instances: tuple[Instance, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class AmodalDataset:
    """A loaded split: images in file order and the category table (id -> name).

    `skips`: annotation records left out under `dataset.on_error: skip` (Skip objects of
    `pipeline/datasets/skips.py`); empty when nothing was skipped.
    Under `dataset.proposals` the images' instances are the proposal queries, `ground_truth`
    is the dataset they are evaluated against and `proposals` describes the proposals file
    (`pipeline/datasets/proposals.py`); both are None otherwise.
    """

    name: str
    annotation_file: Path
    images: tuple[ImageRecord, ...]
    categories: dict[int, str]
    flavour: str | None = None  # the annotation flavour it was loaded as; None when built in memory
    skips: tuple = ()
    ground_truth: "AmodalDataset | None" = None
    proposals: dict | None = None

    def instance_count(self) -> int:
        return sum(len(im.instances) for im in self.images)


class DatasetError(VlmsamError, ValueError):
    """Bad dataset input: the message names the file and the record."""
