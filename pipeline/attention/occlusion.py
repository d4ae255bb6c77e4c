"""Occlusion reasoning: parse the VLM's JSON answer and match occluders to instances.

Answer schema (asked for by the `occlusion` templates in `params.py`)::

    {"occlusions": [{"object": "<name>", "occluded_by": ["<name>", ...]}, ...]}

Parsing is lenient about what surrounds the JSON (prose, ```json fences): the first JSON
object in the text that decodes is taken. It is strict about the structure: the top level
must be an object with key "occlusions" holding a list; each entry an object with a string
"object" and a list of strings "occluded_by" (other keys in an entry are ignored). Any
violation is an `OcclusionParseError` whose message says what is wrong; the extract stage
records it per image (occlusion_error) and goes on.

Matching (per target instance): names are compared after normalisation (lower case,
whitespace collapsed, a leading article 'the'/'a'/'an' dropped). The instance's occluder
names are the union of "occluded_by" over the entries whose "object" equals the instance's
phrase (the same names for every instance of one category: the answer names categories,
not instances). Its occluder ids are the other instances of the image whose phrase equals
one of those names AND whose amodal box overlaps the instance's box (positive intersection
area); names that match no instance keep no id.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass


class OcclusionParseError(ValueError):
    """The answer holds no JSON of the expected schema."""


@dataclass(frozen=True)
class OcclusionEntry:
    object: str
    occluded_by: tuple[str, ...]


def normalise_name(name: str) -> str:
    """Name for comparison: lower case, single spaces, no leading article."""
    words = re.sub(r"\s+", " ", name.strip().lower()).split(" ")
    if len(words) > 1 and words[0] in ("the", "a", "an"):
        words = words[1:]
    return " ".join(words)


def _first_json_object(text: str):
    decoder = json.JSONDecoder()
    for m in re.finditer(r"\{", text):
        try:
            obj, _ = decoder.raw_decode(text, m.start())
        except json.JSONDecodeError:
            continue
        return obj
    raise OcclusionParseError("no JSON object found in the answer")


def answer_is_complete(text: str) -> bool:
    """True when the text from its first "{" decodes as one JSON value: the object the parser
    takes first is then fixed, so no further text can change the parsed answer."""
    start = text.find("{")
    if start < 0:
        return False
    try:
        json.JSONDecoder().raw_decode(text, start)
    except json.JSONDecodeError:
        return False
    return True


def parse_occlusion_answer(text: str) -> list[OcclusionEntry]:
    """Entries of a schema-valid answer; `OcclusionParseError` naming the violation otherwise."""
    obj = _first_json_object(text)
    if not isinstance(obj, dict) or "occlusions" not in obj:
        raise OcclusionParseError(f'top level must be an object with key "occlusions", got {_short(obj)}')
    items = obj["occlusions"]
    if not isinstance(items, list):
        raise OcclusionParseError(f'"occlusions" must be a list, got {type(items).__name__}')
    entries = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise OcclusionParseError(f"occlusions[{i}] must be an object, got {_short(item)}")
        name = item.get("object")
        if not isinstance(name, str) or not name.strip():
            raise OcclusionParseError(f'occlusions[{i}]["object"] must be a non-empty string, got {_short(name)}')
        by = item.get("occluded_by")
        if not isinstance(by, list) or not all(isinstance(b, str) for b in by):
            raise OcclusionParseError(f'occlusions[{i}]["occluded_by"] must be a list of strings, got {_short(by)}')
        entries.append(OcclusionEntry(name.strip(), tuple(b.strip() for b in by if b.strip())))
    return entries


def entries_to_json(entries: list[OcclusionEntry]) -> str:
    """The parsed answer in canonical JSON (stored as the image's occlusion_json)."""
    return json.dumps(
        {"occlusions": [{"object": e.object, "occluded_by": list(e.occluded_by)} for e in entries]}
    )


def _short(obj) -> str:
    s = json.dumps(obj) if not isinstance(obj, str) else repr(obj)
    return s if len(s) <= 80 else s[:77] + "..."


@dataclass(frozen=True)
class InstanceRef:
    """What matching needs of one instance: id, its phrase, amodal box XYWH."""

    id: int
    phrase: str
    bbox: tuple[float, float, float, float]


def boxes_overlap(a, b) -> bool:
    """True when two XYWH boxes intersect with positive area."""
    ix = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    iy = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    return ix > 0 and iy > 0


def match_occluders(
    entries: list[OcclusionEntry], target: InstanceRef, instances: list[InstanceRef]
) -> tuple[list[str], list[int]]:
    """(occluder names, occluder instance ids) of `target` per the module's matching rule."""
    key = normalise_name(target.phrase)
    names: list[str] = []
    seen = set()
    for e in entries:
        if normalise_name(e.object) != key:
            continue
        for n in e.occluded_by:
            if normalise_name(n) not in seen:
                seen.add(normalise_name(n))
                names.append(n)
    ids = [
        inst.id
        for inst in instances
        if inst.id != target.id and normalise_name(inst.phrase) in seen and boxes_overlap(inst.bbox, target.bbox)
    ]
    return names, ids
