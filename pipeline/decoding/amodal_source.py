"""Where an instance's amodal mask came from, recorded per instance as `amodal_source` in the
amodal predictions and in single-image results.

    decoder                     the learned amodal decoder predicted it (completion 'decoder')
    completion                  a training-free completion grew it from the visible mask
                                (hull, or occluder masks were found for occluder_hull/_box)
    visible: no occluder found  occluder_hull/_box found no occluder: amodal = visible
    visible: completion 'visible'  the completion is the visible mask by choice
    exemplar                    completion 'exemplar' placed a class exemplar (`exemplar_pass.py`)
    <fallback>:<reason>         completion 'exemplar' kept its fallback completion, and why
"""

from __future__ import annotations

from pipeline.decoding.completion import DECODER, NEEDS_OCCLUDERS

FROM_DECODER = "decoder"
FROM_COMPLETION = "completion"
NO_OCCLUDER = "visible: no occluder found"
VISIBLE_BY_CHOICE = "visible: completion 'visible'"


def amodal_source(completion: str, occluder_ids) -> str:
    """The `amodal_source` of an instance completed by `completion` with these occluders."""
    if completion == DECODER:
        return FROM_DECODER
    if completion == "visible":
        return VISIBLE_BY_CHOICE
    if completion in NEEDS_OCCLUDERS and not len(occluder_ids):
        return NO_OCCLUDER
    return FROM_COMPLETION
