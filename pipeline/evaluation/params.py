"""The `evaluate` section of params.yaml."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.params_file import reject_unknown


@dataclass(frozen=True)
class EvaluateParams:
    """Parameters of the `evaluate` section.

    occlusion_bins  number of equal occlusion-rate bins over [0, 1] for the
                    mIoU-vs-occlusion plot (default 10). The none/partial/heavy buckets of
                    metrics.json are fixed by the protocol and not parameters.
    proposal_score  under dataset.proposals, the score COCOeval ranks a prediction by:
                    'det_x_iou' = detector score x predicted IoU (SAMEO's rule; default) |
                    'det' = detector score alone (`pipeline/evaluation/proposals.py`)
    """

    occlusion_bins: int = 10
    proposal_score: str = "det_x_iou"

    def __post_init__(self) -> None:
        b = self.occlusion_bins
        if isinstance(b, bool) or not isinstance(b, int) or b < 1:
            raise ValueError(f"evaluate.occlusion_bins must be a positive integer, got {b!r}")
        from pipeline.evaluation.proposals import PROPOSAL_SCORES

        if self.proposal_score not in PROPOSAL_SCORES:
            raise ValueError(f"evaluate.proposal_score must be one of {PROPOSAL_SCORES}, got {self.proposal_score!r}")

    @classmethod
    def from_dict(cls, d: dict | None) -> "EvaluateParams":
        """Build from the `evaluate` section; unknown keys are an error."""
        d = dict(d or {})
        reject_unknown("evaluate", d, cls)
        return cls(**d)
