"""Extract-stage parameters: defaults, unknown keys, validation, layer resolution."""

import pytest

from pipeline.attention.params import (
    DEFAULT_TEMPLATES, ExtractParams, VlmModelParams, resolve_layers,
)


def test_defaults_and_round_trip():
    p = ExtractParams.from_dict({})
    assert p.head_aggregation == "mean" and p.layers == "auto"
    assert p.sink_removal is True and p.sink_method == "ratio"
    assert ExtractParams.from_dict(p.to_dict()) == p
    assert p.all_templates() == DEFAULT_TEMPLATES
    custom = ExtractParams.from_dict({"templates": {"target": "Find the {phrase}."}})
    assert custom.all_templates()["target"] == "Find the {phrase}."
    assert custom.all_templates()["occlusion"] == DEFAULT_TEMPLATES["occlusion"]


@pytest.mark.parametrize(
    "d, message",
    [
        ({"layer": [1]}, r"unknown parameter\(s\) \['layer'\]"),
        ({"layers": []}, "non-empty list of layer indices"),
        ({"layers": [1.5]}, "depth fractions"),
        ({"head_aggregation": "max"}, "head_aggregation"),
        ({"top_k_heads": 0}, "top_k_heads"),
        ({"sink_removal": False, "head_aggregation": "localization"}, "'localization' needs extract.sink_removal"),
        ({"sink_method": "divide"}, "sink_method"),
        ({"sink_weight": 0}, "sink_weight"),
        ({"sink_level": 0.5}, "sink_level"),
        ({"max_sink_share": 0}, "max_sink_share"),
        ({"templates": {"target": "no phrase {box}"}}, r"placeholder \{phrase\}"),
        ({"templates": {"target": "{phrase} {phrase}"}}, "exactly once"),
        ({"templates": {"target": "Where is the {phrase} in {box}?"}}, "must put {box} before {phrase}"),
        ({"templates": {"occlusion": "which?"}}, r"placeholder \{names\}"),
        ({"templates": {"other": "x"}}, "unknown template"),
        ({"flat_ratio": 0.5}, "flat_ratio"),
        ({"sink_epsilon": 0}, "sink_epsilon"),
        ({"phrase_overrides": {"a": " "}}, "phrase_overrides"),
    ],
)
def test_bad_extract_params_are_clear_errors(d, message):
    with pytest.raises(ValueError, match=message):
        ExtractParams.from_dict(d)


def test_vlm_params_from_models_section():
    p = VlmModelParams.from_models_section({"profile": "smoke", "vlm": {"family": "llava"}, "sam_variant": "vitt"})
    assert p.smoke and p.family == "llava"
    assert VlmModelParams.from_models_section({}).resolved_family() == "llava_next"
    with pytest.raises(ValueError, match=r"models.vlm: unknown parameter\(s\) \['model'\]"):
        VlmModelParams.from_models_section({"vlm": {"model": "x"}})
    with pytest.raises(ValueError, match="models.profile"):
        VlmModelParams.from_models_section({"profile": "fast"})
    with pytest.raises(ValueError, match="belongs to the models section"):
        VlmModelParams.from_models_section({"vlm": {"profile": "smoke"}})
    with pytest.raises(ValueError, match="family"):
        VlmModelParams.from_dict({"family": "llava2"})


def test_resolve_layers():
    assert resolve_layers([-1, 0, 5], 32) == [31, 0, 5]
    with pytest.raises(ValueError, match="out of range for a language model with 3 layers"):
        resolve_layers([-16], 3)
    with pytest.raises(ValueError, match="layer 2 twice"):
        resolve_layers([-1, 2], 3)


def test_resolve_layers_by_depth_fraction():
    # the literature's layers come back at the real depths: LLaVA-1.5 layers 10 and 14 of 32,
    # Qwen2 layers 14 and 22 of 28
    assert resolve_layers("auto", 32, "llava") == [10, 14]
    assert resolve_layers("auto", 32, "llava_next") == [10, 14]
    assert resolve_layers("auto", 28, "llava_onevision") == [14, 22]
    # one parameter list serves every depth; fractions that meet on a shallow model are kept once
    assert resolve_layers([0.45, 0.55], 32) == [14, 18]
    assert resolve_layers([0.45, 0.55], 3) == [1, 2]
    assert resolve_layers([0.31, 0.44], 3) == [1]
    assert resolve_layers([0.0, -1], 24) == [0, 23]
    with pytest.raises(ValueError, match="needs the VLM family"):
        resolve_layers("auto", 32)
    with pytest.raises(ValueError, match="no default layers"):
        resolve_layers("auto", 32, "unknown_family")
    for bad in ([1.0], [0.5, "x"], "all", [True]):
        with pytest.raises(ValueError, match="extract.layers must be"):
            ExtractParams(layers=bad)
