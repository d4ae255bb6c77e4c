"""The `dataset` section of params.yaml: which annotation file, flavour and images to use."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipeline.datasets.loader import FLAVOURS, load_dataset
from pipeline.datasets.proposals import with_proposals
from pipeline.datasets.record import AmodalDataset
from pipeline.params_file import reject_unknown

SYNTH_ANNOTATIONS = "data/synth/D2S_amodal_synth.json"  # what `vlmsam synth --out data/synth` writes


@dataclass(frozen=True)
class DatasetParams:
    """Parameters of the `dataset` section.

    flavour      one of FLAVOURS ('d2sa', 'cocoa' = COCOA-cls, 'cocoa_original' = the per-image
                 COCO_amodal_*2014.json files, 'kins2020', 'kins_coco'), or None to detect it
                 from the file's schema (default None)
    annotations  annotation JSON path (default: the synthetic D2SA-format scenes)
    images       image folder the `file_name`s are relative to; None = the annotation file's
                 folder (default None)
    max_images   keep only the first N images in file order; None = all (default None)
    on_error     'skip' (default): an image that cannot be read or whose pixel size differs
                 from its `images` entry, or a malformed annotation record, is left out with
                 its reason (`pipeline/datasets/skips.py`), the run goes on and the skips are
                 counted in metrics.json; 'stop': the first such record stops the run
    max_skipped_fraction  a run fails when more than this fraction of the images is
                 skipped (default 0.01)
    include_stuff  cocoa_original only: keep the regions marked `isStuff` (default False: left
                 out, they are not objects)
    proposals    a detector's COCO results file of boxes ([{image_id, category_id, bbox,
                 score}], as mmdetection and detectron2 write it): each kept box is one query
                 in place of the ground-truth instances (`pipeline/datasets/proposals.py`);
                 None = the ground-truth boxes (default None)
    proposal_min_score  proposals scored below this are dropped (default 0.0: keep every
                 box the file holds; detectors already cut at their own test threshold)
    """

    flavour: str | None = None
    annotations: str = SYNTH_ANNOTATIONS
    images: str | None = None
    max_images: int | None = None
    on_error: str = "skip"
    max_skipped_fraction: float = 0.01
    include_stuff: bool = False
    proposals: str | None = None
    proposal_min_score: float = 0.0

    def __post_init__(self) -> None:
        from pipeline.datasets.skips import ON_ERROR

        if self.on_error not in ON_ERROR:
            raise ValueError(f"dataset.on_error must be one of {ON_ERROR}, got {self.on_error!r}")
        if (isinstance(self.max_skipped_fraction, bool) or not isinstance(self.max_skipped_fraction, (int, float))
                or not 0 <= self.max_skipped_fraction <= 1):
            raise ValueError(f"dataset.max_skipped_fraction must be a number in [0, 1], got {self.max_skipped_fraction!r}")
        if not isinstance(self.include_stuff, bool):
            raise ValueError(f"dataset.include_stuff must be true or false, got {self.include_stuff!r}")
        if self.flavour is not None and self.flavour not in FLAVOURS:
            raise ValueError(f"dataset.flavour must be one of {FLAVOURS} or null, got {self.flavour!r}")
        if not isinstance(self.annotations, str) or not self.annotations:
            raise ValueError(f"dataset.annotations must be a non-empty path, got {self.annotations!r}")
        if self.images is not None and (not isinstance(self.images, str) or not self.images):
            raise ValueError(f"dataset.images must be a path or null, got {self.images!r}")
        if self.proposals is not None and (not isinstance(self.proposals, str) or not self.proposals):
            raise ValueError(f"dataset.proposals must be a path or null, got {self.proposals!r}")
        s = self.proposal_min_score
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not 0 <= s <= 1:
            raise ValueError(f"dataset.proposal_min_score must be a number in [0, 1], got {s!r}")
        if self.max_images is not None and (
            isinstance(self.max_images, bool) or not isinstance(self.max_images, int)
            or self.max_images < 1
        ):
            raise ValueError(f"dataset.max_images must be a positive integer or null, got {self.max_images!r}")

    @classmethod
    def from_dict(cls, d: dict | None) -> "DatasetParams":
        """Build from the `dataset` section; unknown keys are an error."""
        d = dict(d or {})
        reject_unknown("dataset", d, cls)
        return cls(**d)


def load(params: DatasetParams, check_images: bool = False) -> AmodalDataset:
    """Load the dataset the parameters describe; under `proposals`, its instances are the
    proposal queries and its `ground_truth` the annotated instances."""
    dataset = load_dataset(
        Path(params.annotations),
        flavour=params.flavour,
        image_dir=None if params.images is None else Path(params.images),
        check_images=check_images,
        max_images=params.max_images,
        on_error=params.on_error,
        include_stuff=params.include_stuff,
    )
    if params.proposals is None:
        return dataset
    return with_proposals(dataset, params.proposals, params.proposal_min_score, params.on_error,
                          image_subset=params.max_images is not None)
