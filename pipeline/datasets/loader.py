"""`load_dataset`: any supported amodal annotation file -> AmodalDataset."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Callable

from pipeline.datasets import cocoa, cocoa_original, d2sa, kins
from pipeline.datasets.coco_json import InstanceFields, build_dataset, read_json
from pipeline.datasets.record import AmodalDataset, DatasetError

FLAVOURS = ("d2sa", "cocoa", "cocoa_original", "kins2020", "kins_coco")

# flavour -> (where its fields live, schema test on (annotation keys, image file names))
_SCHEMAS: dict[str, tuple[InstanceFields, Callable[[set[str], list[str]], bool]]] = {
    "d2sa": (d2sa.FIELDS, d2sa.looks_like),
    "cocoa": (cocoa.FIELDS, cocoa.looks_like),
    "kins2020": (kins.FIELDS_2020, kins.looks_like_2020),
    "kins_coco": (kins.FIELDS_COCO, kins.looks_like_coco),
}

_DETECT_SAMPLE = 100  # annotations whose keys are pooled for detection


def detect_flavour(json_dict: dict, source: str | os.PathLike = "<annotation JSON>") -> str:
    """The flavour whose schema the file's annotation keys (and image names) match.

    DatasetError (naming `source`) when there are no annotations to look at, when no schema
    matches, or when more than one does.
    """
    anns = json_dict.get("annotations") if isinstance(json_dict, dict) else None
    if not isinstance(anns, list) or not anns:
        raise DatasetError(
            f"{source}: cannot detect the dataset flavour (no 'annotations'); "
            f"pass one of {FLAVOURS} explicitly"
        )
    keys: set[str] = set()
    for ann in anns[:_DETECT_SAMPLE]:
        if isinstance(ann, dict):
            keys.update(ann)
    images = json_dict.get("images")
    file_names = [
        im["file_name"] for im in (images if isinstance(images, list) else [])[:_DETECT_SAMPLE]
        if isinstance(im, dict) and isinstance(im.get("file_name"), str)
    ]
    matches = [name for name, (_, looks_like) in _SCHEMAS.items() if looks_like(keys, file_names)]
    if cocoa_original.looks_like(keys):
        matches.append(cocoa_original.FLAVOUR)
    if len(matches) != 1:
        problem = "no known schema matches" if not matches else f"ambiguous ({matches})"
        raise DatasetError(
            f"{source}: cannot detect the dataset flavour: {problem} the annotation keys "
            f"{sorted(keys)}; pass one of {FLAVOURS} explicitly"
        )
    return matches[0]


def load_dataset(
    annotation_file: str | os.PathLike,
    flavour: str | None = None,
    image_dir: str | os.PathLike | None = None,
    check_images: bool = False,
    max_images: int | None = None,
    on_error: str = "stop",
    include_stuff: bool = False,
) -> AmodalDataset:
    """Load an amodal annotation file into the internal record.

    `flavour`: one of FLAVOURS, or None to detect it from the schema. `image_dir`: folder the
    images' `file_name`s are relative to (default: the annotation file's folder).
    `check_images`: open every image and fail naming the file and image id if one is missing,
    unreadable or of another size. `max_images`: keep only the first N images (file order).
    Every problem raises DatasetError naming the file and the record; with `on_error='skip'`
    a malformed annotation record is left out instead and listed in the dataset's `skips`.
    `include_stuff`: keep the stuff regions of the original COCOA files (`cocoa_original`).
    """
    path = Path(annotation_file)
    if flavour is not None and flavour not in FLAVOURS:
        raise DatasetError(f"{path}: unknown dataset flavour {flavour!r}; expected one of {FLAVOURS}")
    data = read_json(path)
    if flavour is None:
        flavour = detect_flavour(data, path)
    images_root = Path(image_dir) if image_dir is not None else path.parent
    if flavour == cocoa_original.FLAVOUR:
        dataset = cocoa_original.build(path, data, images_root, max_images, check_images, on_error, include_stuff)
    else:
        fields, _ = _SCHEMAS[flavour]
        dataset = build_dataset(path, data, images_root, fields, max_images, check_images, on_error)
    return dataclasses.replace(dataset, flavour=flavour)
