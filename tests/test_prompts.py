"""Prompts: phrases from category names, question texts, chat rendering, target-token rows."""

import numpy as np
import pytest
from PIL import Image

from pipeline.attention import prompts as P
from pipeline.attention.params import DEFAULT_TEMPLATES
from pipeline.vlm_families import build_smoke_vlm, family_names


@pytest.fixture(scope="module")
def processors():
    return {f: build_smoke_vlm(f)[1] for f in family_names()}


@pytest.fixture(scope="module")
def image():
    return Image.fromarray((np.random.default_rng(0).random((60, 90, 3)) * 255).astype(np.uint8))


@pytest.mark.parametrize(
    "name, phrase",
    [
        ("adelholzener_alpenquelle_classic_075", "adelholzener alpenquelle classic 0.75"),
        ("coca_cola_05", "coca cola 0.5"),
        ("adelholzener_classic_bio_apfelschorle_02", "adelholzener classic bio apfelschorle 0.2"),
        ("banana_single", "banana single"),
        ("traffic light", "traffic light"),
        ("person", "person"),
        ("pasta_reggia_100", "pasta reggia 100"),  # no leading zero: not a size code
    ],
)
def test_humanise_category(name, phrase):
    assert P.humanise_category(name) == phrase


def test_phrase_override_and_empty_name():
    assert P.category_phrase("coca_cola_05", {"coca_cola_05": " cola bottle "}) == "cola bottle"
    assert P.category_phrase("coca_cola_05", {"other": "x"}) == "coca cola 0.5"
    with pytest.raises(P.PromptError, match="empty phrase"):
        P.humanise_category("__")


def test_box_text_normalised_and_clipped():
    assert P.box_text((10, 5, 30, 20), 100, 50) == "[0.10, 0.10, 0.40, 0.50]"
    assert P.box_text((-5, 0, 200, 50), 100, 50, decimals=1) == "[0.0, 0.0, 1.0, 1.0]"


def test_target_question_records_phrase_span():
    q = P.target_question(DEFAULT_TEMPLATES["target"], "kiwi", "[0.10, 0.20, 0.30, 0.40]")
    assert q.text == "Look at the box [0.10, 0.20, 0.30, 0.40]. Where is the kiwi?"
    assert q.text[q.phrase_span[0]:q.phrase_span[1]] == "kiwi"
    with pytest.raises(P.PromptError, match="exactly once"):
        P.target_question("{phrase} and {phrase}", "kiwi", "")
    oq = P.occlusion_question(DEFAULT_TEMPLATES["occlusion"], ["kiwi", "pear"])
    assert "kiwi, pear" in oq.text and oq.phrase_span is None
    assert '{"occlusions"' in oq.text


@pytest.mark.parametrize("family", family_names())
def test_phrase_tokens_located_in_every_family(processors, image, family):
    proc = processors[family]
    phrase = "adelholzener alpenquelle classic 0.75"
    q = P.target_question(DEFAULT_TEMPLATES["target"], phrase, P.box_text((10, 5, 30, 20), 90, 60))
    enc = P.encode_prompt(proc, image, q)
    ids = enc.input_ids
    assert enc.model_inputs["input_ids"].shape == (1, len(ids))
    # image tokens: a contiguous run before the question
    assert len(enc.image_positions) > 0 and np.all(np.diff(enc.image_positions) == 1)
    assert min(enc.query_rows) > enc.image_positions[-1]
    # the rows are contiguous and decode exactly to the phrase (plus a leading space at most)
    assert enc.query_rows == list(range(enc.query_rows[0], enc.query_rows[-1] + 1))
    decoded = proc.tokenizer.decode([int(ids[r]) for r in enc.query_rows])
    assert decoded.strip() == phrase
    # neighbours are outside the phrase
    before = proc.tokenizer.decode([int(ids[enc.query_rows[0] - 1])])
    after = proc.tokenizer.decode([int(ids[enc.query_rows[-1] + 1])])
    assert before.strip() == "the" and after.strip() == "?"
    assert len(enc.query_tokens) == len(enc.query_rows)
    # optional last prompt token
    enc2 = P.encode_prompt(proc, image, q, include_last_token=True)
    assert enc2.query_rows == enc.query_rows + [len(ids) - 1]


def test_phrase_found_when_it_also_appears_before_the_question(processors, image):
    # the phrase text also occurs in the chat header ("user"): the located rows must be the question's
    proc = processors["llava_onevision"]
    q = P.target_question("The {phrase} is where?", "user", "")
    enc = P.encode_prompt(proc, image, q)
    assert min(enc.query_rows) > enc.image_positions[-1]
    assert proc.tokenizer.decode([int(enc.input_ids[r]) for r in enc.query_rows]).strip() == "user"


def test_template_without_image_token_is_a_clear_error(image):
    _, proc = build_smoke_vlm("llava")
    proc.chat_template = "{% for m in messages %}{% for c in m['content'] %}{% if c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endfor %}"
    q = P.target_question(DEFAULT_TEMPLATES["target"], "kiwi", "[0, 0, 1, 1]")
    with pytest.raises(P.PromptError, match="inserted no image token"):
        P.encode_prompt(proc, image, q)
    proc.chat_template = None
    with pytest.raises(P.PromptError, match="no chat template"):
        P.encode_prompt(proc, image, q)


def test_template_that_rewrites_the_question_is_a_clear_error(image):
    _, proc = build_smoke_vlm("llava")
    proc.chat_template = "{% for m in messages %}<image>{% for c in m['content'] %}{% if c['type'] == 'text' %}{{ c['text'] | upper }}{% endif %}{% endfor %}{% endfor %}"
    q = P.target_question(DEFAULT_TEMPLATES["target"], "kiwi", "[0, 0, 1, 1]")
    with pytest.raises(P.PromptError, match="changed the question text"):
        P.encode_prompt(proc, image, q)


def test_phrase_token_rows_overlap_rule():
    offsets = [(0, 0), (0, 5), (5, 6), (6, 10), (10, 11), (11, 11)]
    assert P.phrase_token_rows(offsets, (6, 10)) == [3]
    assert P.phrase_token_rows(offsets, (5, 10)) == [2, 3]
    assert P.phrase_token_rows(offsets, (4, 7)) == [1, 2, 3]
    assert P.phrase_token_rows(offsets, (11, 11)) == []


@pytest.mark.parametrize("family", family_names())
def test_reused_image_inputs_give_identical_encoding(processors, image, family):
    proc = processors[family]
    first = P.encode_prompt(proc, image, P.occlusion_question(DEFAULT_TEMPLATES["occlusion"], ["kiwi", "pear"]))
    q = P.target_question(DEFAULT_TEMPLATES["target"], "green tea bags 0.20", P.box_text((1, 2, 30, 40), 90, 60))
    fresh = P.encode_prompt(proc, image, q, include_last_token=True)
    reused = P.encode_prompt(proc, image, q, include_last_token=True, image_inputs=first.image_inputs)
    np.testing.assert_array_equal(fresh.input_ids, reused.input_ids)
    assert fresh.query_rows == reused.query_rows and fresh.query_tokens == reused.query_tokens
    assert sorted(fresh.model_inputs) == sorted(reused.model_inputs)
    for k, v in fresh.model_inputs.items():
        np.testing.assert_array_equal(v.numpy(), reused.model_inputs[k].numpy(), err_msg=k)
