"""Qwen2-VL / Qwen2.5-VL: smoke models, prefix reuse across images (M-RoPE rope_deltas), and a
real-shaped checkpoint folder loaded through `load_vlm` and extracted.

The checkpoint folder is laid out like the hub repositories Qwen/Qwen2-VL-7B-Instruct and
Qwen/Qwen2.5-VL-3B-Instruct: their flat `config.json` (text fields at the top level,
`rope_scaling` {"type": "mrope", "mrope_section": [16, 24, 24]}, the real special-token ids,
vocabulary 152064/151936) with the sizes shrunk (hidden 32, 2 layers), their
`preprocessor_config.json`, `chat_template.json`, and a `tokenizer.json` made of the Qwen2 BPE of
the OneVision reference checkpoint (same base vocabulary of 151643 entries) with Qwen2-VL's
added tokens at their real ids 151643..151656 (Qwen2.5-VL: ..151664). Weights are random.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.attention.capture import capture_rows, enable_capture
from pipeline.attention.params import ExtractParams, VlmModelParams
from pipeline.attention.placement import placement_for
from pipeline.attention.prefix_reuse import generate_from_prefix, prefill, run_suffix
from pipeline.vlm_families import get_family
from pipeline.vlm_families.qwen2_5_vl import EXTRA_ADDED_TOKENS as QWEN25_EXTRA_TOKENS
from pipeline.vlm_families.qwen2_vl import CHAT_TEMPLATE as QWEN_CHAT_TEMPLATE
from pipeline.vlm_families.qwen2_vl import FAMILY as QWEN2_VL
from pipeline.vlm_families.qwen2_vl import SPECIAL_TOKENS as QWEN_SPECIAL_TOKENS
from pipeline.vlm_families import build_smoke_vlm
from pipeline.attention.vlm import load_vlm

DEFAULT_MIN_PIXELS, DEFAULT_MAX_PIXELS = QWEN2_VL.pixel_budget
FIRST_ADDED_ID = 151643
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


def _image(height, width, seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def _inputs(processor, image, question):
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    return text, dict(processor(images=image, text=text, return_tensors="pt"))


# ---------------------------------------------------------------- smoke models

@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl"])
def test_smoke_model_real_classes_template_and_budget(family):
    model, processor = build_smoke_vlm(family)
    expected = {"qwen2_vl": "Qwen2VLForConditionalGeneration", "qwen2_5_vl": "Qwen2_5_VLForConditionalGeneration"}
    assert type(model).__name__ == expected[family]
    assert isinstance(processor, {"qwen2_vl": __import__("transformers").Qwen2VLProcessor,
                                  "qwen2_5_vl": __import__("transformers").Qwen2_5_VLProcessor}[family])
    assert type(processor.image_processor).__name__ == "Qwen2VLImageProcessorPil"
    text_config = model.config.get_text_config()
    assert text_config.num_key_value_heads < text_config.num_attention_heads
    assert text_config.rope_parameters["mrope_section"] == [2, 3, 3]
    text, inputs = _inputs(processor, _image(120, 200), "Where is the banana bundle?")
    assert text == ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
                    "<|vision_start|><|image_pad|><|vision_end|>Where is the banana bundle?<|im_end|>\n"
                    "<|im_start|>assistant\n")
    # the default pixel budget gives grounding >= 1024 image tokens, even for a small image
    n_image = int((inputs["input_ids"] == model.config.image_token_id).sum())
    assert 1024 <= n_image <= 1280
    with torch.no_grad():
        out = model(**inputs)
    assert torch.isfinite(out.logits).all()
    small, _ = build_smoke_vlm(family, min_pixels=56 * 56, max_pixels=28 * 28 * 64)
    with pytest.raises(ValueError, match="llava has a fixed input resolution"):
        build_smoke_vlm("llava", min_pixels=56 * 56, max_pixels=56 * 56)


def test_pixel_budget_parameters_are_checked():
    assert VlmModelParams().min_pixels is None  # the family's budget
    assert DEFAULT_MIN_PIXELS == 1024 * 28 * 28
    with pytest.raises(ValueError, match="min_pixels must be an integer >= 784"):
        VlmModelParams(family="qwen2_vl", min_pixels=100, max_pixels=28 * 28 * 10)
    with pytest.raises(ValueError, match="set together"):
        VlmModelParams(min_pixels=28 * 28 * 100)
    with pytest.raises(ValueError, match="max_pixels .* must be >= models.vlm.min_pixels"):
        VlmModelParams(family="qwen2_vl", min_pixels=28 * 28 * 100, max_pixels=28 * 28 * 10)
    with pytest.raises(ValueError, match="max_pixels .* must be >= models.vlm.min_pixels"):
        VlmModelParams(id="smoke/x", min_pixels=28 * 28 * 100, max_pixels=28 * 28 * 10)  # family unknown here
    with pytest.raises(ValueError, match="llava has a fixed input resolution"):
        VlmModelParams(profile="smoke", family="llava", min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 8)
    with pytest.raises(ValueError, match="llava has a fixed input resolution"):
        load_vlm(VlmModelParams(profile="smoke", id="smoke/llava", min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 8,
                                device="cpu"))


def test_smoke_processor_round_trip_keeps_budget_and_template(tmp_path):
    _, processor = build_smoke_vlm("qwen2_5_vl", min_pixels=28 * 28 * 16, max_pixels=28 * 28 * 64)
    processor.save_pretrained(tmp_path)
    loaded = get_family("qwen2_5_vl").processor_class().from_pretrained(tmp_path, backend="pil")
    assert not hasattr(loaded, "video_processor")
    assert loaded.image_processor.size == processor.image_processor.size
    image = _image(90, 170)
    text_a, a = _inputs(processor, image, "Where is the cup?")
    text_b, b = _inputs(loaded, image, "Where is the cup?")
    assert text_a == text_b and torch.equal(a["input_ids"], b["input_ids"])
    assert torch.equal(a["pixel_values"], b["pixel_values"])


# ---------------------------------------------------------------- prefix reuse across images

@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl"])
def test_prefixes_of_two_images_interleave(family):
    """Each prefix keeps the model's rope_deltas of its own image: a suffix on image A's cache
    after image B was prefilled gives A's full-forward maps, logits and greedy answer."""
    model, processor = build_smoke_vlm(family, min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 48)
    enable_capture(model)
    question = "Look at the picture. Where is the cup?"
    prompts = [_inputs(processor, _image(*hw, seed=i), question)[1] for i, hw in enumerate([(60, 260), (250, 90)])]
    deltas = []
    states = []
    for inputs in prompts:
        n = inputs["input_ids"].shape[1]
        states.append(prefill(model, inputs, n - 6))
        deltas.append(int(states[-1].rope_deltas))
    assert deltas[0] != deltas[1]  # the images' M-RoPE offsets differ: mixing them would show
    rows = [1, 3]
    # suffixes first, alternating images (any full forward would reset the model's rope_deltas)
    got = [run_suffix(model, state, inputs["input_ids"][:, state.prefix_len:], rows, [0, 2])
           for inputs, state in zip(prompts, states)]
    answers = [generate_from_prefix(model, state, inputs["input_ids"][:, state.prefix_len:], 4)
               for inputs, state in zip(prompts, states)]
    for inputs, state, maps, answer in zip(prompts, states, got, answers):
        with capture_rows(model, [0, 2], [state.prefix_len + r for r in rows]) as rec, torch.no_grad():
            model(**inputs)
        for layer in (0, 2):
            torch.testing.assert_close(maps[layer], rec.result[layer][0], atol=1e-5, rtol=1e-4)
        with torch.no_grad():
            expected = model.generate(**inputs, max_new_tokens=4, do_sample=False)[:, inputs["input_ids"].shape[1]:]
        assert torch.equal(answer, expected[:, :answer.shape[1]])


# ---------------------------------------------------------------- real-shaped checkpoint folder

def _tokenizer_files(folder, shared_reference, family):
    """tokenizer.json / tokenizer_config.json: the Qwen2 BPE with the family's added tokens."""
    reference = shared_reference / "llava_hf" / "llava-onevision-qwen2-0.5b-ov-hf"
    tok = json.loads((reference / "tokenizer.json").read_text(encoding="utf-8"))
    added = QWEN_SPECIAL_TOKENS + (QWEN25_EXTRA_TOKENS if family == "qwen2_5_vl" else ())
    tok["added_tokens"] = [
        {"id": FIRST_ADDED_ID + i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
         "normalized": False, "special": not t.startswith("<tool") and not t.startswith("</tool")}
        for i, t in enumerate(added)
    ]
    (folder / "tokenizer.json").write_text(json.dumps(tok), encoding="utf-8")
    config = {
        "add_prefix_space": False, "bos_token": None, "clean_up_tokenization_spaces": False,
        "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>", "errors": "replace",
        "model_max_length": 32768, "split_special_tokens": False, "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None, "padding_side": "left",
        "added_tokens_decoder": {str(e["id"]): {k: v for k, v in e.items() if k != "id"} for e in tok["added_tokens"]},
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")


def _model_config(family):
    """The hub config.json of the family, sizes shrunk (real values in comments)."""
    common = {
        "attention_dropout": 0.0, "bos_token_id": 151643, "eos_token_id": 151645, "hidden_act": "silu",
        "hidden_size": 32,  # 3584 (7B) / 2048 (3B)
        "initializer_range": 0.02, "intermediate_size": 64, "max_position_embeddings": 32768,
        "max_window_layers": 2, "num_attention_heads": 4, "num_hidden_layers": 2,  # 28 / 16 heads, 28 / 36 layers
        "num_key_value_heads": 2, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "sliding_window": 32768,
        "tie_word_embeddings": False, "torch_dtype": "bfloat16", "use_cache": True, "use_sliding_window": False,
        "vision_start_token_id": 151652, "vision_end_token_id": 151653, "vision_token_id": 151654,
        "image_token_id": 151655, "video_token_id": 151656,
        "rope_scaling": {"type": "mrope", "mrope_section": [1, 1, 2]},  # [16, 24, 24] of head_dim 128
    }
    if family == "qwen2_vl":  # Qwen/Qwen2-VL-7B-Instruct
        return {**common, "architectures": ["Qwen2VLForConditionalGeneration"], "model_type": "qwen2_vl",
                "vocab_size": 152064, "transformers_version": "4.41.2",
                "vision_config": {"depth": 1, "embed_dim": 16, "mlp_ratio": 4, "num_heads": 2, "in_chans": 3,
                                  "hidden_size": 32, "patch_size": 14, "spatial_merge_size": 2,
                                  "spatial_patch_size": 14, "temporal_patch_size": 2}}
    return {**common, "architectures": ["Qwen2_5_VLForConditionalGeneration"], "model_type": "qwen2_5_vl",  # 3B
            "vocab_size": 151936, "transformers_version": "4.41.2",
            "vision_config": {"depth": 2, "hidden_act": "silu", "hidden_size": 16, "intermediate_size": 32,
                              "num_heads": 2, "in_chans": 3, "out_hidden_size": 32, "patch_size": 14,
                              "spatial_merge_size": 2, "spatial_patch_size": 14, "window_size": 112,
                              "fullatt_block_indexes": [1], "tokens_per_second": 2, "temporal_patch_size": 2}}


def make_folder(shared_reference, root, family):
    """The hub-shaped checkpoint folder of `family` (module docstring) in a new folder under `root`."""
    import transformers as tf

    folder = root / family
    folder.mkdir()
    config = _model_config(family)
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    (folder / "preprocessor_config.json").write_text(json.dumps({
        "min_pixels": 3136, "max_pixels": 12845056, "patch_size": 14, "temporal_patch_size": 2,
        "merge_size": 2, "image_mean": CLIP_MEAN, "image_std": CLIP_STD,
        "image_processor_type": "Qwen2VLImageProcessor",
        "processor_class": "Qwen2VLProcessor" if family == "qwen2_vl" else "Qwen2_5_VLProcessor",
    }), encoding="utf-8")
    (folder / "chat_template.json").write_text(json.dumps({"chat_template": QWEN_CHAT_TEMPLATE}), encoding="utf-8")
    _tokenizer_files(folder, shared_reference, family)
    cls = tf.Qwen2VLForConditionalGeneration if family == "qwen2_vl" else tf.Qwen2_5_VLForConditionalGeneration
    torch.manual_seed(0)
    model = cls(tf.AutoConfig.from_pretrained(folder))
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module", params=["qwen2_vl", "qwen2_5_vl"])
def checkpoint_folder(request, tmp_path_factory, shared_reference):
    return request.param, make_folder(shared_reference, tmp_path_factory.mktemp("qwen"), request.param)


def test_checkpoint_folder_loads_with_real_token_ids_and_budget(checkpoint_folder):
    family, folder = checkpoint_folder
    vlm = load_vlm(VlmModelParams(id=str(folder), device="cpu", min_pixels=28 * 28 * 16, max_pixels=28 * 28 * 64))
    assert vlm.family == family and not vlm.smoke
    processor = vlm.processor
    assert processor.image_token_id == 151655 == vlm.model.config.image_token_id
    tokenizer = processor.tokenizer
    assert tokenizer.convert_tokens_to_ids(["<|vision_start|>", "<|vision_end|>", "<|im_start|>", "<|im_end|>"]) \
        == [151652, 151653, 151644, 151645]
    size = processor.image_processor.size
    assert (size["shortest_edge"], size["longest_edge"]) == (28 * 28 * 16, 28 * 28 * 64)  # our budget wins
    text, inputs = _inputs(processor, _image(200, 300), "Where is the cup?")
    assert text.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n")
    ids = inputs["input_ids"][0].tolist()
    assert ids[:3] == [151644, tokenizer.convert_tokens_to_ids("system"), 198]  # "\n" is 198 in Qwen2's BPE
    layout = placement_for(vlm.model.config, processor, (200, 300))
    positions = layout.image_positions(inputs["input_ids"])
    assert ids[positions[0] - 1] == 151652 and ids[positions[-1] + 1] == 151653
    assert 16 <= layout.n_image_tokens <= 64
    default = load_vlm(VlmModelParams(id=str(folder), device="cpu"))
    size = default.processor.image_processor.size
    assert (size["shortest_edge"], size["longest_edge"]) == (DEFAULT_MIN_PIXELS, DEFAULT_MAX_PIXELS)
    with pytest.raises(ValueError, match=f"family is 'llava' but the checkpoint is '{family}'"):
        load_vlm(VlmModelParams(id=str(folder), family="llava", device="cpu"))


def test_checkpoint_folder_extracts_with_prefix_reuse(checkpoint_folder, tmp_path):
    from pipeline.attention.extract import ImageJob, extract_image
    from pipeline.datasets.record import ImageRecord, Instance

    family, folder = checkpoint_folder
    vlm = load_vlm(VlmModelParams(id=str(folder), device="cpu", min_pixels=28 * 28 * 16, max_pixels=28 * 28 * 64))
    enable_capture(vlm.model)
    image = _image(120, 160)
    path = tmp_path / "a.png"
    image.save(path)
    record = ImageRecord(id=1, path=path, width=160, height=120, instances=(
        Instance(1, 1, "cup", (10, 10, 40, 50), None, None, None, None),
        Instance(2, 2, "teddy_bear", (60, 20, 80, 90), None, None, None, None),
    ))
    params = ExtractParams(layers=[0, 1], ask_occlusion=True, max_new_tokens=3)
    reused = extract_image(vlm, ImageJob(record, image), params, [0, 1], reuse_prefix=True)
    full = extract_image(vlm, ImageJob(record, image), params, [0, 1], reuse_prefix=False)
    assert reused.occlusion_raw == full.occlusion_raw
    for gt_id in (1, 2):
        np.testing.assert_allclose(reused.instances[gt_id].maps, full.instances[gt_id].maps, rtol=1e-4, atol=1e-7)
        assert reused.instances[gt_id].maps.shape == (2, len(reused.placement))
