"""Prefix (KV-cache) reuse: per-instance suffix maps equal the full forward; no cross-talk."""

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.attention.capture import capture_rows, enable_capture
from pipeline.attention.prefix_reuse import generate_from_prefix, prefill, run_suffix
from pipeline.vlm_families import build_smoke_vlm, family_names

NAMES = ["banana bundle", "cup", "teddy bear on the left"]
LAYERS = [0, 2]


def _image():
    rng = np.random.default_rng(2)
    return Image.fromarray(rng.integers(0, 256, (150, 110, 3), dtype=np.uint8))


def _prompts(processor, image):
    """Processor inputs of one prompt per instance name (same image)."""
    out = []
    for name in NAMES:
        messages = [{"role": "user", "content": [
            {"type": "image"}, {"type": "text", "text": f"Look at the picture. Where is the {name}?"}]}]
        text = processor.apply_chat_template(messages, add_generation_prompt=True)
        out.append(dict(processor(images=image, text=text, return_tensors="pt")))
    return out


def _common_prefix_len(prompts):
    ids = [p["input_ids"][0] for p in prompts]
    n = min(len(i) for i in ids)
    same = torch.stack([i[:n] for i in ids]).eq(ids[0][:n]).all(0)
    return int(same.long().cumprod(0).sum())


@pytest.fixture(scope="module", params=family_names())
def setup(request):
    model, processor = build_smoke_vlm(request.param)
    enable_capture(model)
    prompts = _prompts(processor, _image())
    prefix_len = _common_prefix_len(prompts)
    image_positions = (prompts[0]["input_ids"][0] == model.config.image_token_id).nonzero()
    assert int(image_positions.max()) < prefix_len
    return model, processor, prompts, prefix_len


def _full_forward_rows(model, inputs, rows):
    with capture_rows(model, LAYERS, rows) as rec, torch.no_grad():
        model(**inputs)
    return {layer: probs[0] for layer, probs in rec.result.items()}


def test_suffix_maps_equal_full_forward(setup):
    model, _, prompts, prefix_len = setup
    state = prefill(model, prompts[0], prefix_len)
    for inputs in prompts:
        suffix = inputs["input_ids"][:, prefix_len:]
        rows = [0, suffix.shape[1] // 2, suffix.shape[1] - 1]
        maps = run_suffix(model, state, suffix, rows, LAYERS)
        reference = _full_forward_rows(model, inputs, [prefix_len + r for r in rows])
        assert sorted(maps) == LAYERS
        for layer in LAYERS:
            assert maps[layer].shape == reference[layer].shape == (
                model.config.text_config.num_attention_heads, 3, inputs["input_ids"].shape[1])
            torch.testing.assert_close(maps[layer], reference[layer], rtol=0, atol=1e-5)
        assert state.cache.get_seq_length() == prefix_len


def test_instance_after_another_equals_instance_alone(setup):
    model, _, prompts, prefix_len = setup
    suffix_a = prompts[2]["input_ids"][:, prefix_len:]
    suffix_b = prompts[1]["input_ids"][:, prefix_len:]
    alone = run_suffix(model, prefill(model, prompts[0], prefix_len), suffix_b, [0, -1], LAYERS)
    state = prefill(model, prompts[0], prefix_len)
    run_suffix(model, state, suffix_a, [1], LAYERS)
    generate_from_prefix(model, state, suffix_a, max_new_tokens=3)
    after = run_suffix(model, state, suffix_b, [0, -1], LAYERS)
    for layer in LAYERS:
        assert torch.equal(after[layer], alone[layer])


def test_generate_from_prefix_equals_greedy_generate(setup):
    model, processor, prompts, prefix_len = setup
    inputs = prompts[1]
    n = inputs["input_ids"].shape[1]
    with torch.no_grad():
        expected = model.generate(**inputs, do_sample=False, max_new_tokens=6)[:, n:]
    state = prefill(model, inputs, prefix_len)
    got = generate_from_prefix(model, state, inputs["input_ids"][:, prefix_len:], max_new_tokens=6)
    assert torch.equal(got, expected)
    assert state.cache.get_seq_length() == prefix_len
    # a stop token ends generation and is returned
    first = int(got[0, 0])
    stopped = generate_from_prefix(model, state, inputs["input_ids"][:, prefix_len:], 6, eos_token_ids=first)
    assert stopped.tolist() == [[first]]


def test_cache_restored_after_error_and_bad_inputs(setup):
    model, _, prompts, prefix_len = setup
    inputs = prompts[0]
    state = prefill(model, inputs, prefix_len)
    suffix = inputs["input_ids"][:, prefix_len:]
    with pytest.raises(IndexError):
        run_suffix(model, state, suffix, [0], [99])
    with pytest.raises(IndexError):
        run_suffix(model, state, suffix, [suffix.shape[1]], LAYERS)
    assert state.cache.get_seq_length() == prefix_len
    first_image = int((inputs["input_ids"][0] == model.config.image_token_id).nonzero()[0])
    with pytest.raises(ValueError, match="prefix must hold the whole image"):
        prefill(model, inputs, first_image + 1)
    image_suffix = inputs["input_ids"][:, first_image:first_image + 2]
    with pytest.raises(ValueError, match="image token"):
        run_suffix(model, state, image_suffix, [0], LAYERS)
    with pytest.raises(ValueError, match="one prompt"):
        prefill(model, {**inputs, "input_ids": inputs["input_ids"].repeat(2, 1)}, prefix_len)
    with pytest.raises(ValueError, match=r"\[1, S\]"):
        run_suffix(model, state, suffix[:, :0], [0], LAYERS)


def test_run_suffix_enables_capture_itself():
    from pipeline.attention.capture import CAPTURE_ATTN

    model, processor = build_smoke_vlm("llava")
    inputs = _prompts(processor, _image())[0]
    prefix_len = inputs["input_ids"].shape[1] - 4
    state = prefill(model, inputs, prefix_len)
    maps = run_suffix(model, state, inputs["input_ids"][:, prefix_len:], [3], [1])
    assert model.config.text_config._attn_implementation == CAPTURE_ATTN
    assert model.config.vision_config._attn_implementation == "sdpa"
    assert maps[1].shape == (model.config.text_config.num_attention_heads, 1, inputs["input_ids"].shape[1])
