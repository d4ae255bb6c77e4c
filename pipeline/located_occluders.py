"""Single-image occluders that the VLM names but no given object matches: each is located
by its own attention and segmented together with the objects.

The occlusion answer (free listing for one object, the configured listing with context
objects) names what covers each object. A name that matches no given object's phrase (and
is not the object's own phrase) becomes an extra instance of the in-memory record:
    category  the name as the VLM wrote it
    box       the covered object's box: the occluder reaches into it, and the completion
              only uses occluder pixels inside it, so its target prompt asks for it there
    id        the next free index (after the given objects, in answer order)
Its target maps come from a second extract pass over these instances (no occlusion
question); the covered object's occluder ids gain the new instance, so the sampler may put
negative points on its map and the completion uses its mask; the decoder segments it in the
same batched call as the given objects.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from pipeline.attention.cache import ImageAttention
from pipeline.attention.occlusion import normalise_name
from pipeline.datasets.record import ImageRecord, Instance


@dataclass(frozen=True)
class OccluderToLocate:
    """A named occluder of one object, to be found by its own attention."""

    id: int  # its index in the extended record
    name: str  # the VLM's name for it
    covers: int  # the index of the object it covers


def occluders_to_locate(record: ImageRecord, attention: ImageAttention,
                        phrases: dict[int, str]) -> list[OccluderToLocate]:
    """The named occluders of `record`'s objects that match no object phrase (`phrases`:
    object index -> its phrase in the prompts), one per (object, name), in object order."""
    known = {normalise_name(p) for p in phrases.values()}
    out: list[OccluderToLocate] = []
    next_id = max(inst.id for inst in record.instances) + 1
    for inst in record.instances:
        seen = set()
        for name in attention.instances[inst.id].occluder_names:
            key = normalise_name(name)
            if key in known or key in seen or key == normalise_name(phrases[inst.id]):
                continue
            seen.add(key)
            out.append(OccluderToLocate(next_id + len(out), name, inst.id))
    return out


def occluder_record(record: ImageRecord, located: list[OccluderToLocate]) -> ImageRecord:
    """A record of the occluders alone (each with the box of the object it covers; category
    ids after the objects' ones), for their extract pass."""
    boxes = {inst.id: inst.bbox for inst in record.instances}
    first_category = max(inst.category_id for inst in record.instances) + 1
    categories: dict[str, int] = {}
    instances = tuple(
        Instance(o.id, categories.setdefault(o.name, first_category + len(categories)), o.name,
                 boxes[o.covers], None, None, None)
        for o in located)
    return dataclasses.replace(record, instances=instances)


def add_located(record: ImageRecord, attention: ImageAttention, occluders: ImageRecord,
                occluder_attention: ImageAttention, located: list[OccluderToLocate]) -> ImageRecord:
    """The record extended by the occluders; `attention` gains their maps, and each covered
    object's occluder ids gain its located occluders (in place)."""
    attention.instances.update(occluder_attention.instances)
    for o in located:
        attention.instances[o.covers].occluder_ids = [*attention.instances[o.covers].occluder_ids, o.id]
    return dataclasses.replace(record, instances=record.instances + occluders.instances)
