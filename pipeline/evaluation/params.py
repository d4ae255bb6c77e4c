"""The `evaluate` section of params.yaml."""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(frozen=True)
class EvaluateParams:
    """Parameters of the `evaluate` section.

    occlusion_bins  number of equal occlusion-rate bins over [0, 1] for the
                    mIoU-vs-occlusion plot (default 10). The none/partial/heavy buckets of
                    metrics.json are fixed by the protocol and not parameters.
    """

    occlusion_bins: int = 10

    def __post_init__(self) -> None:
        b = self.occlusion_bins
        if isinstance(b, bool) or not isinstance(b, int) or b < 1:
            raise ValueError(f"evaluate.occlusion_bins must be a positive integer, got {b!r}")

    @classmethod
    def from_dict(cls, d: dict | None) -> "EvaluateParams":
        """Build from the `evaluate` section; unknown keys are an error."""
        d = dict(d or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"evaluate: unknown parameter(s) {unknown}; known: {sorted(known)}")
        return cls(**d)
