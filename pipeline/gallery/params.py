"""The `gallery` section of params.yaml."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.params_file import reject_unknown


@dataclass(frozen=True)
class GalleryParams:
    """Parameters of the `gallery` section.

    max_cards    most cards on the page (null = every instance); when capped, half are the
                 worst by amodal IoU and the rest are spread evenly over (occlusion bucket,
                 class) strata; gallery.csv lists every instance either way
    page_size    cards per page of index.html
    margin       context around the box, as a fraction of its larger side
    thumb_px     longer side of a card's image in pixels
    """

    max_cards: int | None = 2000
    page_size: int = 60
    margin: float = 0.15
    thumb_px: int = 224

    def __post_init__(self) -> None:
        for name in ("page_size", "thumb_px") + (("max_cards",) if self.max_cards is not None else ()):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"gallery.{name} must be a positive integer, got {v!r}")
        if isinstance(self.margin, bool) or not isinstance(self.margin, (int, float)) or self.margin < 0:
            raise ValueError(f"gallery.margin must be a number >= 0, got {self.margin!r}")

    @classmethod
    def from_dict(cls, d: dict | None) -> "GalleryParams":
        """Build from the `gallery` section; unknown keys are an error."""
        d = dict(d or {})
        reject_unknown("gallery", d, cls)
        return cls(**d)
