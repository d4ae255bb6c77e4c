"""Amodal dataset loaders: D2SA, COCOA-cls, the original COCOA, KINS (2020 and COCO layouts) -> one record."""

from pipeline.datasets.loader import FLAVOURS, detect_flavour, load_dataset
from pipeline.datasets.record import AmodalDataset, DatasetError, ImageRecord, Instance

__all__ = [
    "FLAVOURS",
    "AmodalDataset",
    "DatasetError",
    "ImageRecord",
    "Instance",
    "detect_flavour",
    "load_dataset",
]
