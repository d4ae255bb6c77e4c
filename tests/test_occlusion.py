"""Occlusion answers: schema parsing (success and failure paths) and occluder matching."""

import json

import pytest

from pipeline.attention.occlusion import (
    InstanceRef, OcclusionParseError, boxes_overlap, entries_to_json, match_occluders,
    normalise_name, parse_occlusion_answer,
)

GOOD = (
    'Sure! Here it is:\n```json\n{"occlusions": [{"object": "coca cola 0.5", '
    '"occluded_by": ["The Kiwi", "banana single"]}, {"object": "kiwi", "occluded_by": []}]}\n```'
)


def test_parse_valid_answer_with_fences_and_prose():
    entries = parse_occlusion_answer(GOOD)
    assert [e.object for e in entries] == ["coca cola 0.5", "kiwi"]
    assert entries[0].occluded_by == ("The Kiwi", "banana single")
    assert json.loads(entries_to_json(entries))["occlusions"][1] == {"object": "kiwi", "occluded_by": []}
    assert parse_occlusion_answer('{"occlusions": []}') == []


@pytest.mark.parametrize(
    "answer, message",
    [
        ("I cannot tell.", "no JSON object"),
        ('{"occlusions": [}', "no JSON object"),
        ('{"objects": []}', 'key "occlusions"'),
        ('{"occlusions": {"a": 1}}', "must be a list"),
        ('{"occlusions": ["kiwi"]}', r"occlusions\[0\] must be an object"),
        ('{"occlusions": [{"object": "", "occluded_by": []}]}', r'\["object"\] must be a non-empty string'),
        ('{"occlusions": [{"object": "kiwi", "occluded_by": "cup"}]}', "list of strings"),
        ('{"occlusions": [{"object": "kiwi", "occluded_by": [1]}]}', "list of strings"),
        ('{"occlusions": [{"object": "kiwi"}]}', "list of strings"),
    ],
)
def test_parse_failures_name_the_violation(answer, message):
    with pytest.raises(OcclusionParseError, match=message):
        parse_occlusion_answer(answer)


def test_normalise_name():
    assert normalise_name("  The   Coca Cola 0.5 ") == "coca cola 0.5"
    assert normalise_name("a") == "a"  # a lone article is a name, not an article


def test_boxes_overlap_needs_positive_area():
    assert boxes_overlap((0, 0, 10, 10), (5, 5, 10, 10))
    assert not boxes_overlap((0, 0, 10, 10), (10, 0, 5, 5))  # touching edge only
    assert not boxes_overlap((0, 0, 10, 10), (20, 20, 5, 5))


def test_match_occluders_by_name_and_overlapping_box():
    entries = parse_occlusion_answer(GOOD)
    target = InstanceRef(1, "coca cola 0.5", (0, 0, 50, 50))
    others = [
        target,
        InstanceRef(2, "kiwi", (40, 40, 20, 20)),        # named, overlaps -> id
        InstanceRef(3, "kiwi", (100, 100, 10, 10)),      # named, no overlap -> no id
        InstanceRef(4, "banana single", (10, 10, 5, 5)),  # named, overlaps
        InstanceRef(5, "pear", (0, 0, 50, 50)),           # not named
    ]
    names, ids = match_occluders(entries, target, others)
    assert names == ["The Kiwi", "banana single"]
    assert ids == [2, 4]
    # an object not in any entry has no occluders; the instance itself is never its occluder
    assert match_occluders(entries, others[4], others) == ([], [])
    self_entries = parse_occlusion_answer('{"occlusions": [{"object": "kiwi", "occluded_by": ["kiwi"]}]}')
    assert match_occluders(self_entries, others[1], others) == (["kiwi"], [])
