"""Amodal completion under the modal-given protocol alone, without any decoder.

Under modal_given every training-free completion starts from the ground-truth visible masks,
so the amodal masks need no image and no EfficientSAM: this computes them directly, by the
same occluder rules (`occluders.py`) and completions (`completion.py`, `exemplar_pass.py`)
as the decode stage. For benchmarks and tests of the completions themselves; the occluder
rule must be 'gt' or 'overlap' (the 'vlm' rule needs the extract stage's answers).
"""

from __future__ import annotations

from tqdm import tqdm

from pipeline import masks as rle
from pipeline.datasets.record import AmodalDataset
from pipeline.decoding.completion import EXEMPLAR, complete, uses_occluders
from pipeline.decoding.exemplar_pass import ExemplarPassSummary, complete_split
from pipeline.decoding.occluders import choose_occluders, union
from pipeline.decoding.params import DecodeParams


def modal_given_amodal(
    dataset: AmodalDataset, params: DecodeParams, progress: bool = True
) -> tuple[list[dict], ExemplarPassSummary | None]:
    """Amodal entries (the decode stage's format, score 1.0) of every instance of `dataset`
    and, for completion 'exemplar', the summary of its pass."""
    if not params.modal_given:
        raise ValueError("modal_given_amodal needs decode.modal_given: true")
    if params.occluders == "vlm":
        raise ValueError("modal_given_amodal: occluders 'vlm' needs the extract stage; use 'gt' or 'overlap'")
    method = params.first_pass_completion
    entries = []
    for image in tqdm(dataset.images, desc=f"complete ({params.completion})", unit="img", disable=not progress):
        base = {inst.id: rle.decode(inst.visible_rle) for inst in image.instances}
        for inst in image.instances:
            choice = None
            occluder_mask = None
            if uses_occluders(params.completion):
                choice = choose_occluders(params.occluders, inst.id, inst.bbox, base, None, inst.occluder_ids)
                occluder_mask = union(choice.ids, base, base[inst.id].shape)
            mask = complete(method, base[inst.id], occluder_mask, inst.bbox)
            entries.append({
                "image_id": int(image.id), "category_id": int(inst.category_id), "gt_id": int(inst.id),
                "segmentation": rle.encode(mask), "score": 1.0,
                "completion": params.completion, "modal_given": True,
                "occluder_source": choice.source if choice else None,
                "occluder_ids": [int(i) for i in choice.ids] if choice else [],
                "amodal_source": method,
            })
    if params.completion != EXEMPLAR:
        return entries, None
    return complete_split(dataset, params, [], entries, progress=progress)
