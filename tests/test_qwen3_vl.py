"""Qwen3-VL: the smoke model, the hub-shaped checkpoint folder (tests/data/qwen3_vl, README there)
loaded through the real profile, image-token placement against transformers' processor and patch
merger, and DeepStack's layers kept clear of the default layers.

Capture = eager, prefix reuse = full forward and batched answers = one at a time are proven for
qwen3_vl by test_capture.py, test_prefix_reuse.py and test_generation.py (parametrised over the
smoke families).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from pipeline.vlm_families import qwen3_vl
from pipeline.attention.capture import enable_capture
from pipeline.attention.params import ExtractParams, VlmModelParams, resolve_layers
from pipeline.attention.placement import placement_for
from pipeline.vlm_families import build_smoke_vlm
from pipeline.attention.vlm import load_vlm
from test_placement_packing import coordinate_image

HUB_FOLDER = Path(__file__).parent / "data" / "qwen3_vl" / "Qwen3-VL-2B-Instruct"
FIRST_ADDED_ID = 151643
TEXT_SHRINK = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 4, "num_attention_heads": 4,
               "num_key_value_heads": 2, "head_dim": 8}
VISION_SHRINK = {"depth": 2, "hidden_size": 16, "intermediate_size": 32, "num_heads": 2, "out_hidden_size": 32,
                 "deepstack_visual_indexes": [0, 1]}
MROPE_SHRINK = [2, 1, 1]  # of the 4 rotary pairs of an 8-dim head (real [24, 20, 20] of 64)


def _image(height, width, seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def _inputs(processor, image, question):
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    return text, dict(processor(images=image, text=text, return_tensors="pt"))


# ---------------------------------------------------------------- smoke model

def test_smoke_model_real_classes_template_budget_and_deepstack():
    import transformers as tf

    model, processor = build_smoke_vlm("qwen3_vl")
    assert type(model).__name__ == "Qwen3VLForConditionalGeneration"
    assert isinstance(processor, tf.Qwen3VLProcessor) and not hasattr(processor, "video_processor")
    assert type(processor.image_processor).__name__ == "Qwen2VLImageProcessorPil"
    assert processor.image_processor.patch_size == 16 and processor.image_processor.merge_size == 2
    text_config = model.config.get_text_config()
    assert text_config.rope_parameters["mrope_interleaved"] is True
    assert len(model.config.vision_config.deepstack_visual_indexes) == 2
    text, inputs = _inputs(processor, _image(120, 200), "Where is the banana bundle?")
    assert text == ("<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Where is the banana bundle?"
                    "<|im_end|>\n<|im_start|>assistant\n")  # no default system message
    assert "mm_token_type_ids" in inputs
    n_image = int((inputs["input_ids"] == model.config.image_token_id).sum())
    assert 1024 <= n_image <= 1280  # the family's default budget in 32-px tokens
    assert qwen3_vl.FAMILY.pixel_budget == (1024 * 32 * 32, 1280 * 32 * 32)
    # DeepStack really changes the forward (its features reach the image tokens)
    with torch.no_grad():
        with_deepstack = model(**inputs).logits
        deepstack = model.model.language_model._deepstack_process
        model.model.language_model._deepstack_process = lambda hidden, mask, embeds: hidden
        try:
            without = model(**inputs).logits
        finally:
            model.model.language_model._deepstack_process = deepstack
    assert torch.isfinite(with_deepstack).all()
    assert (with_deepstack - without).abs().max() > 1e-3
    with pytest.raises(ValueError, match="min_pixels must be an integer >= 1024"):
        build_smoke_vlm("qwen3_vl", min_pixels=28 * 28, max_pixels=32 * 32 * 8)


def test_smoke_tokenizer_has_qwen3_added_tokens():
    tokenizer = qwen3_vl.FAMILY.build_smoke_tokenizer()
    ids = tokenizer.convert_tokens_to_ids(list(qwen3_vl.SPECIAL_TOKENS))
    assert len(set(ids)) == len(ids) and tokenizer.unk_token_id not in ids
    think = tokenizer("<think>x</think>")["input_ids"]
    assert think[0] == tokenizer.convert_tokens_to_ids("<think>")
    assert tokenizer.decode(think, skip_special_tokens=True) == "<think>x</think>"  # not special, as on the hub


# ---------------------------------------------------------------- DeepStack and default layers

@pytest.mark.parametrize("num_layers", [28, 36])  # Qwen3-VL-2B; Qwen3-VL-4B / 8B
def test_default_layers_clear_of_deepstack(num_layers):
    import transformers as tf

    config = tf.AutoConfig.from_pretrained(HUB_FOLDER)
    assert config.vision_config.deepstack_visual_indexes == [5, 11, 17]
    assert config.get_text_config().num_hidden_layers == 28
    deepstack = set(qwen3_vl.deepstack_attention_layers(config))
    assert deepstack == {1, 2, 3}
    layers = resolve_layers("auto", num_layers, "qwen3_vl")
    assert layers == {28: [14, 22], 36: [18, 28]}[num_layers]
    assert min(layers) > max(deepstack)


# ---------------------------------------------------------------- hub-shaped checkpoint folder

def make_folder(shared_reference: Path, root: Path) -> Path:
    """The hub files of tests/data, config.json shrunk, the Qwen2 BPE of the OneVision reference
    with Qwen3-VL's added tokens at their real ids as tokenizer.json, seeded tiny weights."""
    import transformers as tf
    from safetensors.torch import save_model

    folder = root / HUB_FOLDER.name
    shutil.copytree(HUB_FOLDER, folder)
    config = json.loads((folder / "config.json").read_text())
    config["text_config"].update(TEXT_SHRINK)
    config["text_config"]["rope_scaling"]["mrope_section"] = MROPE_SHRINK
    config["vision_config"].update(VISION_SHRINK)
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    decoder = json.loads((folder / "tokenizer_config.json").read_text())["added_tokens_decoder"]
    bpe = json.loads((shared_reference / "llava_hf" / "llava-onevision-qwen2-0.5b-ov-hf" / "tokenizer.json")
                     .read_text(encoding="utf-8"))
    assert len(bpe["model"]["vocab"]) == FIRST_ADDED_ID
    bpe["added_tokens"] = [{"id": int(i), **entry} for i, entry in decoder.items()]
    (folder / "tokenizer.json").write_text(json.dumps(bpe), encoding="utf-8")
    torch.manual_seed(0)
    model = tf.Qwen3VLForConditionalGeneration(tf.AutoConfig.from_pretrained(folder))
    save_model(model, str(folder / "model.safetensors"), metadata={"format": "pt"})
    return folder


@pytest.fixture(scope="module")
def hub_folder(shared_reference, tmp_path_factory):
    return make_folder(shared_reference, tmp_path_factory.mktemp("qwen3_vl"))


def test_fixture_matches_family_facts():
    tokenizer_config = json.loads((HUB_FOLDER / "tokenizer_config.json").read_text())
    added = tokenizer_config["added_tokens_decoder"]
    assert [added[str(FIRST_ADDED_ID + i)]["content"] for i in range(len(added))] == list(qwen3_vl.SPECIAL_TOKENS)
    assert [e["special"] for e in added.values()].count(True) == qwen3_vl.N_SPECIAL
    template = json.loads((HUB_FOLDER / "chat_template.json").read_text())["chat_template"]
    assert template == qwen3_vl.CHAT_TEMPLATE  # the smoke model renders with the real template
    pre = json.loads((HUB_FOLDER / "preprocessor_config.json").read_text())
    assert (pre["patch_size"], pre["merge_size"], pre["image_mean"]) == (16, 2, list(qwen3_vl.FAMILY.image_mean))


def test_folder_loads_through_real_profile(hub_folder):
    vlm = load_vlm(VlmModelParams(id=str(hub_folder), device="cpu", dtype="float32"))
    assert vlm.family == "qwen3_vl" and not vlm.smoke
    assert type(vlm.model).__name__ == "Qwen3VLForConditionalGeneration"
    processor, tokenizer = vlm.processor, vlm.processor.tokenizer
    assert processor.image_token_id == 151655 == vlm.model.config.image_token_id
    assert tokenizer.convert_tokens_to_ids(["<|vision_start|>", "<|vision_end|>", "<|im_start|>", "<|im_end|>",
                                            "<think>", "</think>"]) == [151652, 151653, 151644, 151645, 151667, 151668]
    assert processor.chat_template == qwen3_vl.CHAT_TEMPLATE
    size = processor.image_processor.size
    assert (size["shortest_edge"], size["longest_edge"]) == qwen3_vl.FAMILY.pixel_budget
    assert list(processor.image_processor.image_mean) == [0.5, 0.5, 0.5]
    assert vlm.model.generation_config.eos_token_id == [151645, 151643]
    text, inputs = _inputs(processor, _image(200, 300), "Where is the cup?")
    ids = inputs["input_ids"][0].tolist()
    assert ids[:3] == [151644, tokenizer.convert_tokens_to_ids("user"), 198]  # "\n" is 198 in Qwen2's BPE
    layout = placement_for(vlm.model.config, processor, (200, 300))
    positions = layout.image_positions(inputs["input_ids"])
    assert ids[positions[0] - 1] == 151652 and ids[positions[-1] + 1] == 151653
    assert 1024 <= layout.n_image_tokens <= 1280
    small = load_vlm(VlmModelParams(id=str(hub_folder), device="cpu", min_pixels=32 * 32 * 16,
                                    max_pixels=32 * 32 * 64))
    size = small.processor.image_processor.size
    assert (size["shortest_edge"], size["longest_edge"]) == (32 * 32 * 16, 32 * 32 * 64)  # our budget wins
    with pytest.raises(ValueError, match="family is 'qwen2_5_vl' but the checkpoint is 'qwen3_vl'"):
        load_vlm(VlmModelParams(id=str(hub_folder), family="qwen2_5_vl", device="cpu"))


def test_folder_extracts_with_prefix_reuse(hub_folder, tmp_path):
    from pipeline.attention.extract import ImageJob, extract_image
    from pipeline.datasets.record import ImageRecord, Instance

    vlm = load_vlm(VlmModelParams(id=str(hub_folder), device="cpu", min_pixels=32 * 32 * 16,
                                  max_pixels=32 * 32 * 64))
    enable_capture(vlm.model)
    image = _image(120, 160)
    record = ImageRecord(id=1, path=None, width=160, height=120, instances=(
        Instance(1, 1, "cup", (10, 10, 40, 50), None, None, None, None),
        Instance(2, 2, "teddy_bear", (60, 20, 80, 90), None, None, None, None),
    ))
    params = ExtractParams(layers="auto", ask_occlusion=True, max_new_tokens=3)
    layers = resolve_layers("auto", 4, "qwen3_vl")
    reused = extract_image(vlm, ImageJob(record, image), params, layers, reuse_prefix=True)
    full = extract_image(vlm, ImageJob(record, image), params, layers, reuse_prefix=False)
    assert reused.occlusion_raw == full.occlusion_raw
    tokenizer = vlm.processor.tokenizer
    for gt_id, phrase in ((1, "cup"), (2, "teddy bear")):
        att = reused.instances[gt_id]
        assert tokenizer.convert_tokens_to_string(att.target_tokens).strip() == phrase
        np.testing.assert_allclose(att.maps, full.instances[gt_id].maps, rtol=1e-4, atol=1e-7)
        assert att.maps.shape == (len(layers), len(reused.placement))


# ---------------------------------------------------------------- placement against the merger

D = 4  # vision feature size: [patch index, 1, 0, 0]; the text hidden size is 4 * D


class IndexEmbed(nn.Module):
    """Stands in for the patch embedding: patch i of the flat `pixel_values` -> [i, 1, 0, 0]."""

    def __init__(self):
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(1))

    def forward(self, hidden_states):
        out = torch.zeros(hidden_states.shape[0], D)
        out[:, 0] = torch.arange(hidden_states.shape[0], dtype=torch.float32)
        out[:, 1] = 1.0
        return out


class Concat(nn.Module):
    """Stands in for the merger's norm + MLP: keeps the 4 grouped patches side by side."""

    def forward(self, x):
        return x.reshape(-1, 4 * D)


def _identity_model():
    import transformers as tf

    text = dict(vocab_size=8, hidden_size=4 * D, intermediate_size=8, num_hidden_layers=1, num_attention_heads=2,
                num_key_value_heads=1, head_dim=8, max_position_embeddings=32768,
                rope_parameters={"rope_type": "default", "mrope_section": [2, 1, 1], "mrope_interleaved": True,
                                 "rope_theta": 5e6})
    vision = dict(depth=0, hidden_size=D, intermediate_size=8, num_heads=1, out_hidden_size=4 * D, patch_size=16,
                  spatial_merge_size=2, temporal_patch_size=2, num_position_embeddings=2304,
                  deepstack_visual_indexes=[])
    config = tf.Qwen3VLConfig(text_config=text, vision_config=vision, image_token_id=1, video_token_id=2,
                              vision_start_token_id=5, vision_end_token_id=6)
    model = tf.Qwen3VLForConditionalGeneration._from_config(config).eval()
    visual = model.model.visual
    visual.patch_embed = IndexEmbed()
    nn.init.zeros_(visual.pos_embed.weight)  # the learned position grid adds nothing
    visual.merger = Concat()
    return model, config


def _word_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<|image_pad|>": 1, "<|video_pad|>": 2, "describe": 3, "it": 4,
             "<|vision_start|>": 5, "<|vision_end|>": 6}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>",
                                   additional_special_tokens=["<|image_pad|>", "<|video_pad|>",
                                                              "<|vision_start|>", "<|vision_end|>"])


class _Caught(Exception):
    pass


@pytest.mark.parametrize("budget", [(65536, 16777216), qwen3_vl.FAMILY.pixel_budget,
                                    (64 * 64, 32 * 32 * 24)], ids=["checkpoint", "ours", "small"])
def test_placement_equals_processor_and_merger(budget):
    model, config = _identity_model()
    processor = qwen3_vl.FAMILY.processor_class()(image_processor=qwen3_vl.FAMILY.image_processor(*budget),
                                           tokenizer=_word_tokenizer())
    for height, width in [(240, 320), (320, 240), (90, 250), (250, 37), (113, 113)]:
        inputs = processor(images=coordinate_image(height, width),
                           text="<|vision_start|><|image_pad|><|vision_end|> describe it", return_tensors="pt")
        layout = placement_for(config, processor, (height, width))
        positions = layout.image_positions(inputs["input_ids"])
        assert np.all(np.diff(positions) == 1) and layout.keep.all()
        grid_t, grid_h, grid_w = inputs["image_grid_thw"][0].tolist()
        assert grid_t == 1 and layout.view_shapes == {0: (grid_h // 2, grid_w // 2)}
        n_tokens = layout.n_image_tokens
        if budget == qwen3_vl.FAMILY.pixel_budget:
            assert 1024 <= n_tokens <= 1280
        seen = {}

        def hook(module, args, kwargs):
            seen["embeds"] = kwargs["inputs_embeds"]
            raise _Caught

        handle = model.model.language_model.register_forward_pre_hook(hook, with_kwargs=True)
        try:
            with torch.no_grad(), pytest.raises(_Caught):
                model.model(**inputs)
        finally:
            handle.remove()
        emb = seen["embeds"][0][inputs["input_ids"][0] == 1].double().numpy().reshape(n_tokens, 4, D)
        assert np.all(emb[:, :, 1] == 1.0)
        merged = np.rint(emb[:, :, 0]).astype(int)  # the 4 processor patches of each token
        assert sorted(merged.ravel().tolist()) == list(range(4 * n_tokens))
        patches = inputs["pixel_values"].numpy().reshape(-1, 3, 2, 16, 16)[:, :, 0]
        values = (patches * 0.5 + 0.5) * 255.0  # mean = std = 0.5
        centres = np.stack([values[:, 0].mean(axis=(1, 2)) / 255.0 * width,
                            values[:, 1].mean(axis=(1, 2)) / 255.0 * height], axis=1)[merged]
        rect = layout.placement.rect.astype(np.float64)
        want_x = rect[:, 0:1] + np.array([0.25, 0.75, 0.25, 0.75])[None] * (rect[:, 2:3] - rect[:, 0:1])
        want_y = rect[:, 1:2] + np.array([0.25, 0.25, 0.75, 0.75])[None] * (rect[:, 3:4] - rect[:, 1:2])
        # 8-bit coordinate codes averaged over a patch: well under the >= 1.1 px between quadrants
        np.testing.assert_array_less(np.abs(centres[..., 0] - want_x), 0.8, err_msg=f"{(height, width)} x")
        np.testing.assert_array_less(np.abs(centres[..., 1] - want_y), 0.8, err_msg=f"{(height, width)} y")
        area = (rect[:, 2] - rect[:, 0]) * (rect[:, 3] - rect[:, 1])
        assert area.sum() == pytest.approx(height * width, rel=1e-6)
