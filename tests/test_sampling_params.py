"""SampleParams: validation, the decoder point budget, shared prompt_mode, hash."""

import pytest

from pipeline.prompt_limits import MAX_DECODER_POINTS, PROMPT_MODES, point_budget
from pipeline.sampling.params import SampleParams


def test_budget_per_prompt_mode():
    assert MAX_DECODER_POINTS == 6
    assert [point_budget(m) for m in PROMPT_MODES] == [6, 4, 4]
    with pytest.raises(ValueError, match="prompt_mode"):
        point_budget("mask")


@pytest.mark.parametrize("mode", PROMPT_MODES)
def test_more_points_than_the_decoder_reads_is_an_error(mode):
    budget = point_budget(mode)
    SampleParams(n_pos=budget - 1, n_neg=1, prompt_mode=mode)
    with pytest.raises(ValueError, match=f"exceeds the {budget} points"):
        SampleParams(n_pos=budget, n_neg=1, prompt_mode=mode)


def test_from_dict_rejects_unknown_keys_and_reads_yaml_lists():
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['n_points'\]"):
        SampleParams.from_dict({"n_points": 3})
    p = SampleParams.from_dict({"layers": [14, 20], "layer_weights": [1, 2], "neg_sources": ["background"]})
    assert p.layers == (14, 20) and p.neg_sources == ("background",)
    assert SampleParams.from_dict(p.to_dict()) == p


def test_shared_prompt_mode_is_used_and_contradictions_are_errors():
    assert SampleParams.from_dict({}, shared_prompt_mode="points+box").prompt_mode == "points+box"
    with pytest.raises(ValueError, match="contradicts the top-level prompt_mode"):
        SampleParams.from_dict({"prompt_mode": "points"}, shared_prompt_mode="box")
    # the budget follows the shared mode
    with pytest.raises(ValueError, match="exceeds the 4 points"):
        SampleParams.from_dict({"n_pos": 3, "n_neg": 2}, shared_prompt_mode="points+box")


@pytest.mark.parametrize("bad, match", [
    ({"strategy": "grid"}, "strategy"),
    ({"layer_weights": [1.0]}, "needs an explicit `layers`"),
    ({"layers": [1, 2], "layer_weights": [1.0]}, "one weight per layer"),
    ({"layers": [3, 3]}, "repeat"),
    ({"view_weights": [0, 0]}, "view_weights"),
    ({"box_enlarge": 0.5}, "box_enlarge"),
    ({"n_pos": 0}, "n_pos"),
    ({"neg_sources": ["sky"]}, "neg_sources"),
    ({"neg_sources": []}, "at least one of neg_sources"),
    ({"rel_threshold": 1.0}, "rel_threshold"),
    ({"min_distance": 0}, "min_distance"),
    ({"n_pos": True}, "n_pos"),
])
def test_bad_values_are_named(bad, match):
    with pytest.raises(ValueError, match=match):
        SampleParams.from_dict(bad)


def test_hash_is_stable_and_follows_every_parameter():
    assert SampleParams().hash == SampleParams.from_dict({}).hash
    assert SampleParams(rel_threshold=0.4).hash != SampleParams().hash
    assert len(SampleParams().hash) == 16
