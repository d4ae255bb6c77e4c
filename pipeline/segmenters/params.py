"""Which segmenter the decode stage runs (params.yaml `models.segmenter`); defined here only.

family  a registered family (`pipeline.segmenters.family_names()`): efficient_sam | sam | sam_hq | sam2
id      hub id or local checkpoint folder of a transformers family (None: the family's default,
        e.g. facebook/sam-vit-huge); for efficient_sam an explicit checkpoint file (None: the
        search order of `vlmsam weights`). Ignored in the smoke profile (seeded random weights).
EfficientSAM's own settings stay in `models.efficient_sam`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from pipeline.errors import ParamsError
from pipeline.params_file import reject_unknown

SECTION = "segmenter"


@dataclass(frozen=True)
class SegmenterParams:
    family: str = "efficient_sam"
    id: str | None = None

    def __post_init__(self):
        from pipeline.segmenters import get_family

        get_family(self.family)  # ParamsError naming models.segmenter.family
        if self.id is not None and (not isinstance(self.id, str) or not self.id):
            raise ParamsError(f"models.segmenter.id must be null or a hub id / folder, got {self.id!r}")

    @classmethod
    def from_dict(cls, d: dict | None) -> "SegmenterParams":
        d = dict(d or {})
        reject_unknown(f"models.{SECTION}", d, cls)
        return cls(**d)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
