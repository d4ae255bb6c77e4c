"""The tiny random-weight VLMs: real classes, real processors, anyres tiling, determinism."""

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.vlm_families import build_smoke_vlm, family_of_smoke_id, get_family
from pipeline.vlm_families._llava import VISION_IMAGE_SIZE

LLAVA_FAMILIES = ("llava", "llava_next", "llava_onevision")

EXPECTED = {
    "llava": ("LlavaForConditionalGeneration", "LlavaProcessor", "LlamaConfig", "USER: <image>\n"),
    "llava_next": ("LlavaNextForConditionalGeneration", "LlavaNextProcessor", "MistralConfig",
                   "[INST] <image>\n"),
    "llava_onevision": ("LlavaOnevisionForConditionalGeneration", "LlavaOnevisionProcessor",
                        "Qwen2Config", "<|im_start|>user <image>"),
}


def _image(height=120, width=200, seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def _inputs(processor, question="Which objects occlude the banana bundle?", image=None):
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    return text, processor(images=image or _image(), text=text, return_tensors="pt")


@pytest.fixture(scope="module", params=LLAVA_FAMILIES)  # Qwen: test_qwen_family.py
def family_vlm(request):
    model, processor = build_smoke_vlm(request.param)
    return request.param, model, processor


def test_real_classes_and_tower_size(family_vlm):  # the rest of the contract: test_vlm_families.py
    family, model, processor = family_vlm
    model_cls, proc_cls, text_cfg_cls, _ = EXPECTED[family]
    assert type(model).__name__ == model_cls
    assert any(c.__name__ == proc_cls for c in type(processor).__mro__)
    text_cfg = model.config.get_text_config()
    assert type(text_cfg).__name__ == text_cfg_cls
    assert model.config.vision_config.image_size == VISION_IMAGE_SIZE


def test_chat_template_style_and_forward(family_vlm):
    family, model, processor = family_vlm
    text, inputs = _inputs(processor)
    assert text.startswith(EXPECTED[family][3])
    ids = inputs["input_ids"][0]
    n_image = int((ids == model.config.image_token_id).sum())
    assert n_image > 0
    # every text token is a real piece (no unk), and the question words are whole tokens
    assert processor.tokenizer.unk_token_id not in ids.tolist()
    pieces = processor.tokenizer.convert_ids_to_tokens(ids.tolist())
    assert {"Ġbanana", "Ġbundle", "Ġocclude"} <= set(pieces)
    with torch.no_grad():
        out = model(**inputs)  # the model accepts exactly the processor's number of image tokens
    assert out.logits.shape == (1, ids.shape[0], len(processor.tokenizer))
    assert torch.isfinite(out.logits).all()


def test_anyres_tiling_happens(family_vlm):
    family, model, processor = family_vlm
    _, wide = _inputs(processor, image=_image(120, 260))
    _, tall = _inputs(processor, image=_image(260, 120))
    if family == "llava":
        assert tuple(wide["pixel_values"].shape) == (1, 3, VISION_IMAGE_SIZE, VISION_IMAGE_SIZE)
        return
    # base view + more than one high-resolution tile
    assert wide["pixel_values"].shape[1] >= 3
    assert wide["image_sizes"][0].tolist() == [120, 260]
    n_wide = int((wide["input_ids"] == model.config.image_token_id).sum())
    n_tall = int((tall["input_ids"] == model.config.image_token_id).sum())
    n_base = (VISION_IMAGE_SIZE // 14) ** 2
    assert n_wide > 2 * n_base and n_tall > 2 * n_base


def test_tokenizers_special_tokens():
    llama = get_family("llava").build_smoke_tokenizer()
    assert llama("x")["input_ids"][0] == llama.bos_token_id  # BOS added like Llama/Mistral
    qwen = get_family("llava_onevision").build_smoke_tokenizer()
    assert qwen.bos_token_id is None and qwen.eos_token == "<|im_end|>"
    ids = qwen("<|im_start|>user <image><image>")["input_ids"]
    assert ids.count(qwen.convert_tokens_to_ids("<image>")) == 2
    assert ids[0] == qwen.convert_tokens_to_ids("<|im_start|>")
    # byte-level: unseen text round-trips
    text = "Ünïcödé zebra-crossing 42"
    assert qwen.decode(qwen(text)["input_ids"]) == text


def test_smoke_ids():
    assert family_of_smoke_id("smoke/llava_onevision") == "llava_onevision"
    assert family_of_smoke_id("llava-hf/llava-1.5-7b-hf") is None
    with pytest.raises(ValueError, match="models.vlm.family 'blip'"):
        build_smoke_vlm("blip")


def test_onevision_image_only_processor_round_trip(tmp_path):
    _, processor = build_smoke_vlm("llava_onevision")
    processor.save_pretrained(tmp_path)
    loaded = get_family("llava_onevision").processor_class().from_pretrained(tmp_path)
    assert not hasattr(loaded, "video_processor")
    assert loaded.num_image_tokens == processor.num_image_tokens
    assert loaded.image_processor.image_grid_pinpoints == processor.image_processor.image_grid_pinpoints
    image = _image(90, 170)
    text_a, a = _inputs(processor, image=image)
    text_b, b = _inputs(loaded, image=image)
    assert text_a == text_b
    assert torch.equal(a["input_ids"], b["input_ids"])
    assert torch.equal(a["pixel_values"], b["pixel_values"])
