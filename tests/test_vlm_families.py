"""The contract every VLM family of the registry (`pipeline.vlm_families`) meets, run over the registry.

For every family: its module is found by name and says what it is; the smoke model builds from
the family's real classes; the default layers lie within the depth and name their source; the
image-token placement equals transformers' own feature packing; capture equals eager attention;
a hub-shaped checkpoint folder loads through the real profile and the family's processor.
Prefix reuse = full forward is proven over the registry in test_prefix_reuse.py, batched answers
= one at a time in test_generation.py.

The placement proofs and checkpoint folders are family-specific constructions (identity vision
towers, hub files); `PLACEMENT_PROOFS` and `CHECKPOINT_FOLDERS` name them per family, and a family
without them fails `test_every_family_has_its_proofs`. Exhaustive size sweeps stay in the
per-family files (test_placement_packing.py, test_placement_qwen.py, test_qwen3_vl.py).
"""

from __future__ import annotations

import importlib
import json

import numpy as np
import pytest
import torch
from PIL import Image

import test_capture as capture
import test_checkpoint_folders as llava_folders
import test_placement_packing as llava_packing
import test_placement_qwen as qwen_packing
import test_qwen3_vl as qwen3_proofs
import test_qwen_family as qwen_folders
from pipeline.attention.capture import capture_rows, disable_capture, enable_capture
from pipeline.attention.params import VlmModelParams, resolve_layers
from pipeline.attention.placement import placement_for
from pipeline.attention.prompts import render_chat
from pipeline.attention.vlm import load_vlm
from pipeline.vlm_families import VlmFamily, build_smoke_vlm, family_names, family_of_config, get_family

FAMILIES = family_names()

PLACEMENT_PROOFS = {
    "llava": lambda: llava_packing.check_against_transformers("llava", (480, 640)),
    "llava_next": lambda: llava_packing.check_against_transformers("llava_next", (479, 641)),
    "llava_onevision": lambda: llava_packing.check_against_transformers("llava_onevision", (480, 640)),
    "qwen2_vl": lambda: qwen_packing.test_placement_equals_transformers_processor_and_merger(
        "qwen2_vl", get_family("qwen2_vl").pixel_budget),
    "qwen2_5_vl": lambda: qwen_packing.test_placement_equals_transformers_processor_and_merger(
        "qwen2_5_vl", get_family("qwen2_5_vl").pixel_budget),
    "qwen3_vl": lambda: qwen3_proofs.test_placement_equals_processor_and_merger(get_family("qwen3_vl").pixel_budget),
}
"""Family -> its placement proof against transformers' processor and feature packing."""

CHECKPOINT_FOLDERS = {
    "llava": lambda ref, root: llava_folders.make_folder(ref, root, "llava", "current"),
    "llava_next": lambda ref, root: llava_folders.make_folder(ref, root, "llava_next", "current"),
    "llava_onevision": lambda ref, root: llava_folders.make_folder(ref, root, "llava_onevision", "current"),
    "qwen2_vl": lambda ref, root: qwen_folders.make_folder(ref, root, "qwen2_vl"),
    "qwen2_5_vl": lambda ref, root: qwen_folders.make_folder(ref, root, "qwen2_5_vl"),
    "qwen3_vl": lambda ref, root: qwen3_proofs.make_folder(ref, root),
}
"""Family -> builder of a hub-shaped checkpoint folder (real configs, tokenizer and template, tiny weights)."""


# ---------------------------------------------------------------- the registry

def test_every_family_has_its_proofs():
    assert set(FAMILIES) >= {"llava", "llava_next", "llava_onevision", "qwen2_vl", "qwen2_5_vl", "qwen3_vl"}
    assert set(PLACEMENT_PROOFS) == set(CHECKPOINT_FOLDERS) == set(FAMILIES)


@pytest.mark.parametrize("family", FAMILIES)
def test_family_module_says_what_it_is(family):
    module = importlib.import_module(f"pipeline.vlm_families.{family}")
    fam = get_family(family)
    assert module.FAMILY is fam and isinstance(fam, VlmFamily) and fam.name == family
    assert fam.model_classes and all(name.endswith("ForConditionalGeneration") for name in fam.model_classes.values())
    assert fam.default_id in fam.checkpoints
    assert fam.token_size and fam.layer_depths.source
    assert fam.smoke_id == f"smoke/{family}"


# ---------------------------------------------------------------- smoke model

@pytest.fixture(scope="module", params=FAMILIES)
def smoke(request):
    model, processor = build_smoke_vlm(request.param)
    return get_family(request.param), model, processor, capture._prompt_inputs(processor)


def test_smoke_model_builds_from_the_real_classes(smoke):
    fam, model, processor, inputs = smoke
    assert type(model).__name__ in fam.model_classes.values()
    assert family_of_config(model.config) is fam and model.config.name_or_path == fam.smoke_id
    assert isinstance(processor, fam.processor_class()) and not hasattr(processor, "video_processor")
    text_config = model.config.get_text_config()
    assert text_config.num_key_value_heads < text_config.num_attention_heads  # grouped-query attention
    assert not model.training and next(model.parameters()).dtype == torch.float32
    assert set(fam.per_token_inputs) <= set(inputs)
    layout = placement_for(model.config, processor, (120, 200))
    assert int((inputs["input_ids"] == model.config.image_token_id).sum()) == layout.n_image_tokens
    with torch.no_grad():
        assert torch.isfinite(model(**inputs).logits).all()


def test_smoke_model_is_deterministic_per_seed(smoke):
    fam = smoke[0]
    torch.manual_seed(0)
    x = torch.rand(3)
    torch.manual_seed(0)
    a, _ = build_smoke_vlm(fam.name, seed=3)
    assert torch.equal(torch.rand(3), x)  # building does not disturb the caller's random stream
    b, _ = build_smoke_vlm(fam.name, seed=3)
    c, _ = build_smoke_vlm(fam.name, seed=4)
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(pa, pb), name
    assert not torch.equal(a.lm_head.weight, c.lm_head.weight)


# ---------------------------------------------------------------- default layers

@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("depth", [3, 24, 28, 32, 36, 64])
def test_default_layers_within_depth(family, depth):
    fractions = get_family(family).layer_depths.fractions
    assert fractions and all(0 <= f < 1 for f in fractions)
    layers = resolve_layers("auto", depth, family)
    assert layers and all(0 <= i < depth for i in layers) and len(set(layers)) == len(layers)


# ---------------------------------------------------------------- placement

@pytest.mark.parametrize("family", FAMILIES)
def test_placement_equals_transformers_feature_packing(family):
    PLACEMENT_PROOFS[family]()


# ---------------------------------------------------------------- capture

def test_capture_rows_equal_eager_and_logits_equal_sdpa(smoke):
    _, model, _, inputs = smoke
    n = inputs["input_ids"].shape[1]
    image_pos = int((inputs["input_ids"][0] == model.config.image_token_id).nonzero()[3])
    rows = [n - 1, n - 4, image_pos, 0]
    with torch.no_grad():
        plain = model(**inputs).logits
    enable_capture(model)
    try:
        assert model.config.vision_config._attn_implementation == "sdpa"
        with capture_rows(model, [0, 2], rows) as rec, torch.no_grad():
            captured = model(**inputs).logits
    finally:
        disable_capture(model)
    torch.testing.assert_close(captured, plain, rtol=0, atol=1e-6)
    eager = capture._eager(model, **inputs)
    heads = model.config.text_config.num_attention_heads
    assert sorted(rec.result) == [0, 2]
    for layer, probs in rec.result.items():
        assert probs.shape == (1, heads, len(rows), n)
        torch.testing.assert_close(probs, eager.attentions[layer][:, :, rows], rtol=0, atol=capture.ROW_TOL)
        torch.testing.assert_close(probs.sum(-1), torch.ones(1, heads, len(rows)), rtol=0, atol=1e-5)
    # causal: row 0 sees only itself; the image row sees nothing after it
    assert torch.all(rec.result[2][0, :, 3, 0] == 1.0)
    assert torch.all(rec.result[2][0, :, 2, image_pos + 1:] == 0.0)


# ---------------------------------------------------------------- checkpoint folder

@pytest.mark.parametrize("family", FAMILIES)
def test_checkpoint_folder_loads_through_the_real_processor(family, shared_reference, tmp_path):
    fam = get_family(family)
    folder = CHECKPOINT_FOLDERS[family](shared_reference, tmp_path)
    vlm = load_vlm(VlmModelParams(id=str(folder), device="cpu", dtype="float32"))
    assert vlm.family == family and not vlm.smoke
    assert type(vlm.model).__name__ == fam.model_classes[vlm.model.config.model_type]
    assert isinstance(vlm.processor, fam.processor_class())
    template = json.loads((folder / "chat_template.json").read_text())["chat_template"]
    assert vlm.processor.chat_template == template  # the checkpoint's own template
    if fam.pixel_budget is not None:
        size = vlm.processor.image_processor.size
        assert (size["shortest_edge"], size["longest_edge"]) == fam.pixel_budget  # the family's budget wins
    image = Image.fromarray(np.random.default_rng(1).integers(0, 256, (150, 200, 3), dtype=np.uint8))
    prompt = render_chat(vlm.processor, "Where is the kiwi?")
    inputs = vlm.processor(images=image, text=prompt, return_tensors="pt")
    layout = placement_for(vlm.model.config, vlm.processor, (150, 200))
    positions = layout.image_positions(inputs["input_ids"])  # the processor's count equals the layout's
    assert np.all(np.diff(positions) == 1)
    depth = vlm.model.config.get_text_config().num_hidden_layers
    assert all(0 <= i < depth for i in resolve_layers("auto", depth, family))


@pytest.mark.parametrize("family", FAMILIES)
def test_readme_family_table_row(family):
    """README's family table names every family with its default layers and its hub ids."""
    from pathlib import Path

    fam = get_family(family)
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    (row,) = [line for line in readme.splitlines() if line.startswith(f"| `{family}` |")]
    assert ", ".join(f"{f:g}" for f in fam.layer_depths.fractions) in row
    assert all(f"`{checkpoint}`" in row for checkpoint in fam.checkpoints)
