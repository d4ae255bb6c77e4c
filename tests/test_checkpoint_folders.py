"""Checkpoint folders laid out as on the hub (../shared/reference/llava_hf: real configs,
processor settings, chat templates and tokenizers), with only the widths and depths of
config.json shrunk and tiny seeded random weights written beside them (safetensors), loaded
through the real profile (`models.profile: real`, `models.vlm.id` = the folder).

For each family, extraction on a synthetic image gives captured rows that decode exactly to
the phrase, the same maps with and without prefix reuse, and a token placement that covers
the image. llava-1.5-7b-hf has no tokenizer in the shared folder: as its README says, Mistral's
SentencePiece tokenizer (from llava-v1.6-mistral-7b-hf) is the nearest real stand-in, so its
files are copied in. The older OneVision chat template (a newline after the role and after
`<|im_end|>`) is tested too.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.attention.capture import enable_capture
from pipeline.attention.extract import ImageJob, extract_image
from pipeline.attention.params import ExtractParams, VlmModelParams, resolve_layers
from pipeline.attention.prompts import encode_prompt, render_chat, target_question
from pipeline.attention.vlm import load_vlm
from pipeline.datasets.record import ImageRecord, Instance

FOLDERS = {
    "llava": "llava-1.5-7b-hf",
    "llava_next": "llava-v1.6-mistral-7b-hf",
    "llava_onevision": "llava-onevision-qwen2-0.5b-ov-hf",
}
MISTRAL_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json",
                           "special_tokens_map.json", "added_tokens.json")
TEXT_SHRINK = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 3,
               "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16}
VISION_SHRINK = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2}
MODEL_CLASSES = {"llava": "LlavaForConditionalGeneration", "llava_next": "LlavaNextForConditionalGeneration",
                 "llava_onevision": "LlavaOnevisionForConditionalGeneration"}
# phrases: multi-token, with digits, hyphens and a decimal point
PHRASES = {1: "banana bundle", 2: "coca-cola bottle 0.5", 3: "7-up can 330ml", 4: "kiwi"}
IMAGE_HW = (150, 200)
RENDERED_START = {
    ("llava", "current"): "USER: <image>\nWhere is the kiwi? ASSISTANT:",
    ("llava_next", "current"): "[INST] <image>\nWhere is the kiwi? [/INST]",
    ("llava_onevision", "current"): "<|im_start|>user <image>\nWhere is the kiwi?<|im_end|><|im_start|>assistant\n",
    ("llava_onevision", "older"): "<|im_start|>user\n<image>\nWhere is the kiwi?<|im_end|>\n<|im_start|>assistant\n",
}
VARIANTS = [("llava", "current"), ("llava_next", "current"), ("llava_onevision", "current"),
            ("llava_onevision", "older")]


def older_onevision_template(template: str) -> str:
    """The earlier OneVision template: a newline after the role and after <|im_end|>."""
    older = template.replace("message['role'] + ' '", "message['role'] + '\\n'").replace(
        "{{'<|im_end|>'}}", "{{'<|im_end|>\\n'}}")
    assert older.count("\\n") == template.count("\\n") + 2
    return older


def make_folder(shared_reference: Path, root: Path, family: str, variant: str) -> Path:
    """Copy the family's hub folder, shrink config.json, write seeded tiny weights beside it."""
    import transformers as tf
    from safetensors.torch import save_model

    src = shared_reference / "llava_hf" / FOLDERS[family]
    dst = root / f"{FOLDERS[family]}-{variant}"
    shutil.copytree(src, dst)
    if family == "llava":  # Mistral's SentencePiece tokenizer stands in for Vicuna's (shared README)
        for name in MISTRAL_TOKENIZER_FILES:
            shutil.copy(src.parent / FOLDERS["llava_next"] / name, dst / name)
    config = json.loads((dst / "config.json").read_text())
    config["text_config"].update(TEXT_SHRINK)
    config["vision_config"].update(VISION_SHRINK)
    (dst / "config.json").write_text(json.dumps(config, indent=2))
    if variant == "older":
        template = json.loads((dst / "chat_template.json").read_text())
        template["chat_template"] = older_onevision_template(template["chat_template"])
        (dst / "chat_template.json").write_text(json.dumps(template))
    torch.manual_seed(0)
    model = getattr(tf, MODEL_CLASSES[family])(tf.AutoConfig.from_pretrained(dst))
    save_model(model, str(dst / "model.safetensors"), metadata={"format": "pt"})
    return dst


def synthetic_job() -> ImageJob:
    rng = np.random.default_rng(7)
    h, w = IMAGE_HW
    pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    boxes = {1: (10, 20, 60, 40), 2: (90, 30, 40, 100), 3: (130, 90, 50, 50), 4: (0, 0, 200, 150)}
    instances = tuple(Instance(i, i, f"category_{i}", boxes[i], None, None, None) for i in PHRASES)
    return ImageJob(ImageRecord(1, None, w, h, instances), Image.fromarray(pixels))


@pytest.fixture(scope="module", params=VARIANTS, ids=lambda v: f"{v[0]}-{v[1]}")
def loaded(request, shared_reference, tmp_path_factory):
    family, variant = request.param
    folder = make_folder(shared_reference, tmp_path_factory.mktemp("hubfolder"), family, variant)
    vlm = load_vlm(VlmModelParams(profile="real", id=str(folder), device="cpu", dtype="float32"))
    return family, variant, folder, vlm


def test_loads_through_the_real_profile(loaded):
    family, variant, folder, vlm = loaded
    assert vlm.family == family and not vlm.smoke and vlm.model_id == str(folder)
    assert type(vlm.model).__name__ == MODEL_CLASSES[family]
    text = vlm.model.config.get_text_config()
    assert (text.hidden_size, text.num_hidden_layers) == (64, 3)
    reference = json.loads((folder / "config.json").read_text())
    assert vlm.model.config.image_token_id == reference["image_token_index"]
    assert vlm.model.config.vision_config.image_size == reference["vision_config"]["image_size"]
    template = json.loads((folder / "chat_template.json").read_text())["chat_template"]
    assert vlm.processor.chat_template == template  # the checkpoint's own template, not ours
    rendered = render_chat(vlm.processor, "Where is the kiwi?")
    assert rendered.startswith(RENDERED_START[family, variant]), rendered


def test_extract_rows_maps_and_placement(loaded):
    family, variant, folder, vlm = loaded
    job = synthetic_job()
    overrides = {f"category_{i}": p for i, p in PHRASES.items()}
    params = ExtractParams(layers=[-2, -1], ask_occlusion=False, phrase_overrides=overrides)
    layers = resolve_layers(params.layers, vlm.model.config.get_text_config().num_hidden_layers)
    enable_capture(vlm.model)
    with torch.inference_mode():
        reused = extract_image(vlm, job, params, layers, reuse_prefix=True)
        full = extract_image(vlm, job, params, layers, reuse_prefix=False)
    tokenizer = vlm.processor.tokenizer
    for gt_id, phrase in PHRASES.items():
        att = reused.instances[gt_id]
        # the captured rows are exactly the phrase's tokens
        assert tokenizer.convert_tokens_to_string(att.target_tokens).strip() == phrase
        prompt = encode_prompt(vlm.processor, job.image, target_question("Where is the {phrase}?", phrase, ""))
        assert tokenizer.decode(prompt.input_ids[prompt.query_rows]).strip() == phrase
        assert prompt.query_tokens == [tokenizer.convert_ids_to_tokens(int(i)) for i in prompt.input_ids[prompt.query_rows]]
        # prefix reuse changes nothing
        np.testing.assert_allclose(att.maps, full.instances[gt_id].maps, rtol=1e-4, atol=1e-7)
        assert att.maps.shape == (2, len(reused.placement)) and np.isfinite(att.maps).all()
    _assert_placement_covers(family, reused.placement, vlm.model.config)


def _assert_placement_covers(family, placement, config):
    """Every pixel the vision tower sees is under some token's rectangle: the whole image for
    anyres (up to the patch-grid remainder and unpadding slivers), the centre crop for LLaVA-1.5."""
    h, w = IMAGE_HW
    rect = placement.rect.astype(np.float64)
    assert (rect[:, 0] >= 0).all() and (rect[:, 1] >= 0).all()
    assert (rect[:, 2] <= w + 1e-3).all() and (rect[:, 3] <= h + 1e-3).all()
    covered = np.zeros((h, w), bool)
    for x0, y0, x1, y1 in rect:
        covered[int(np.floor(y0)):int(np.ceil(y1)), int(np.floor(x0)):int(np.ceil(x1))] = True
    side, patch = config.vision_config.image_size, config.vision_config.patch_size
    seen = (side // patch) * patch / side  # SigLIP 384/14: 27 patches see 378 of 384 px per side
    if family == "llava":
        crop = min(h, w)
        x0 = (w - crop) // 2
        assert covered[:, x0 + 1:x0 + crop - 1].mean() >= seen ** 2 - 1e-9
        assert not covered[:, : x0 - 1].any() and not covered[:, x0 + crop + 1:].any()
    else:
        assert covered.mean() >= seen ** 2 - 0.02
        assert set(np.unique(placement.view)) == {0, 1}
