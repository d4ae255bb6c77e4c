"""Attention capture: cached passes, grouped-query heads, padding and mask registration right.

Rows equal eager attention and outputs equal plain SDPA for every family: test_vlm_families.py.
"""

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AttentionInterface, DynamicCache
from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward

from pipeline.attention.capture import (
    CAPTURE_ATTN,
    _row_probabilities,
    capture_rows,
    enable_capture,
)
from pipeline.vlm_families import build_smoke_vlm

ROW_TOL = 1e-5


def _prompt_inputs(processor, question="Which objects occlude the banana bundle?"):
    rng = np.random.default_rng(1)
    image = Image.fromarray(rng.integers(0, 256, (120, 200, 3), dtype=np.uint8))
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    return dict(processor(images=image, text=text, return_tensors="pt"))


def _eager(model, **kwargs):
    """Forward with eager attention in the language model only, then back to SDPA."""
    model.set_attn_implementation({"text_config": "eager"})
    try:
        with torch.no_grad():
            return model(**kwargs, output_attentions=True)
    finally:
        model.set_attn_implementation({"text_config": "sdpa"})


def test_only_chosen_layers_recorded_and_errors():
    model, processor = build_smoke_vlm("llava")
    inputs = _prompt_inputs(processor)
    with pytest.raises(RuntimeError, match="enable_capture"):
        with capture_rows(model, [1], [0]):
            pass
    enable_capture(model)
    with capture_rows(model, [1], [-1]) as rec, torch.no_grad():
        model(**inputs)
    assert list(rec.result) == [1]
    with pytest.raises(IndexError, match="out of range"):
        with capture_rows(model, [7], [0]):
            pass
    with pytest.raises(IndexError, match="out of range"), torch.no_grad():
        with capture_rows(model, [0], [10_000]):
            model(**inputs)
    with pytest.raises(RuntimeError, match="ran twice"), torch.no_grad():
        with capture_rows(model, [0], [0]):
            model(**inputs)
            model(**inputs)
    with pytest.raises(RuntimeError, match="no attention was captured"):
        with capture_rows(model, [0], [0]) as rec:
            pass
        rec.result


class _Attn(torch.nn.Module):
    is_causal = True

    def __init__(self, groups):
        super().__init__()
        self.num_key_value_groups = groups


@pytest.mark.parametrize("mask_kind", ["none", "bool", "float"])
def test_grouped_query_heads_expanded_like_repeat_kv(mask_kind):
    gen = torch.Generator().manual_seed(0)
    batch, kv_heads, groups, q_len, kv_len, dim = 2, 2, 3, 5, 9, 8
    query = torch.randn(batch, kv_heads * groups, q_len, dim, generator=gen)
    key = torch.randn(batch, kv_heads, kv_len, dim, generator=gen)
    mask = None
    additive = torch.zeros(batch, 1, q_len, kv_len)
    if mask_kind != "none":
        allowed = torch.rand(batch, 1, q_len, kv_len, generator=gen) > 0.3
        allowed[..., 0] = True
        additive = torch.where(allowed, 0.0, float("-inf"))
        mask = allowed if mask_kind == "bool" else torch.where(allowed, 0.0, torch.finfo(torch.float32).min)
    else:  # top-left causal, as SDPA's is_causal
        additive = torch.where(torch.ones(q_len, kv_len).tril().bool(), 0.0, float("-inf")).expand_as(additive)
    rows = [4, 0, 2]
    got = _row_probabilities(_Attn(groups), query, key, mask, 0.3, None, rows)
    scores = query @ repeat_kv(key, groups).transpose(-1, -2) * 0.3 + additive
    want = torch.softmax(scores, -1)[:, :, rows]
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)


def _cached_suffix(model, inputs, suffix_len, rows):
    """Prefill all but the last `suffix_len` tokens, then run them at once on the cache."""
    ids = inputs["input_ids"]
    prefix = {k: v for k, v in inputs.items() if k not in ("input_ids", "attention_mask")}
    cache = DynamicCache(config=model.config)
    with torch.no_grad():
        model(input_ids=ids[:, :-suffix_len], cache=cache, use_cache=True, **prefix)
        with capture_rows(model, [0, 2], rows) as rec:
            out = model(input_ids=ids[:, -suffix_len:], cache=cache, use_cache=True)
    return out.logits, rec.result


@pytest.mark.parametrize("family", ["llava_next", "llava_onevision"])
def test_multi_token_suffix_on_kv_cache(family):
    model, processor = build_smoke_vlm(family)
    inputs = _prompt_inputs(processor)
    n, suffix = inputs["input_ids"].shape[1], 7
    rows = [0, 3, 6]
    eager = _eager(model, **inputs)
    enable_capture(model)
    logits, maps = _cached_suffix(model, inputs, suffix, rows)
    torch.testing.assert_close(logits, eager.logits[:, -suffix:], rtol=0, atol=5e-5)
    for layer, probs in maps.items():
        assert probs.shape[-1] == n  # rows span the cached keys too
        want = eager.attentions[layer][:, :, [n - suffix + r for r in rows]]
        torch.testing.assert_close(probs, want, rtol=0, atol=ROW_TOL)


def test_without_mask_registration_the_cached_suffix_is_wrong():
    """Why CAPTURE_ATTN is also a mask-interface name: the test above catches its absence."""
    model, processor = build_smoke_vlm("llava_next")
    inputs = _prompt_inputs(processor)
    with torch.no_grad():
        full = model(**inputs).logits
    name = "vlmsam_test_no_mask"
    AttentionInterface.register(name, sdpa_attention_forward)
    try:
        model.set_attn_implementation({"text_config": name})
        ids = inputs["input_ids"]
        rest = {k: v for k, v in inputs.items() if k not in ("input_ids", "attention_mask")}
        cache = DynamicCache(config=model.config)
        with torch.no_grad():
            model(input_ids=ids[:, :-7], cache=cache, **rest)
            broken = model(input_ids=ids[:, -7:], cache=cache).logits
    finally:
        del AttentionInterface._global_mapping[name]
    assert (broken - full[:, -7:]).abs().max() > 1e-3


def test_left_padded_batch_matches_eager():
    model, processor = build_smoke_vlm("llava_next")
    lm = model.model.language_model
    tok = processor.tokenizer
    batch = tok(["the banana bundle is behind the cup", "a cup"], return_tensors="pt", padding=True)
    assert batch["attention_mask"][1, 0] == 0  # left padding
    model.set_attn_implementation({"text_config": "eager"})
    with torch.no_grad():
        eager = lm(**batch, output_attentions=True)
    enable_capture(model)
    with capture_rows(model, [1], [-1, -2]) as rec, torch.no_grad():
        lm(**batch)
    torch.testing.assert_close(rec.result[1], eager.attentions[1][:, :, [-1, -2]], rtol=0, atol=ROW_TOL)
    assert torch.all(rec.result[1][1, :, :, :2] == 0)  # padded keys get no attention


def test_capture_attn_name_is_registered_for_masks():
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    model, _ = build_smoke_vlm("llava")
    enable_capture(model)
    assert ALL_MASK_ATTENTION_FUNCTIONS[CAPTURE_ATTN] is sdpa_mask
