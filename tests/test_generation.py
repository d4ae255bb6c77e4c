"""Batched occlusion answers (generation.py): equal to one-at-a-time greedy answers for every
family, left padding, and the stop at the end of the JSON answer; the target prompts run on
the prefix the batched answer prefilled (one image prefill per image), equal to a full forward."""

import dataclasses
import json

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.attention import extract as X
from pipeline.attention.capture import capture_rows, enable_capture
from pipeline.attention.generation import (
    JsonAnswerStop, batch_inputs, generate_answer_batch, generate_answers, pad_token_id,
)
from pipeline.attention.image_prefills import ImagePrefillCounter
from pipeline.attention.occlusion import answer_is_complete, parse_occlusion_answer
from pipeline.attention.params import DEFAULT_TEMPLATES, ExtractParams, VlmModelParams
from pipeline.attention.prefix_reuse import prefill, prefix_from_batch, run_suffix
from pipeline.attention.prompts import encode_prompt, occlusion_question, target_question
from pipeline.vlm_families import family_names, get_family
from pipeline.attention.vlm import load_vlm

SIZES = [(160, 120), (400, 100), (120, 120)]  # (width, height): different anyres grids and token counts


def _images(seed=0):
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)) for w, h in SIZES]


def _prompts(processor, seed=0, images=None):
    out = []
    for i, image in enumerate(images or _images(seed)):
        names = ["kiwi", "pear", "apple"][: i + 1]
        out.append(encode_prompt(processor, image, occlusion_question(DEFAULT_TEMPLATES["occlusion"], names)))
    return out


def _alone(model, tokenizer, prompt, n):
    """The reference: `generate` on one unpadded prompt."""
    inputs = {k: v for k, v in prompt.model_inputs.items()}
    out = model.generate(**inputs, max_new_tokens=n, do_sample=False, num_beams=1,
                         temperature=None, top_p=None, top_k=None)
    return tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)


@pytest.mark.parametrize("family", family_names())
def test_batched_answers_equal_one_at_a_time(family):
    vlm = load_vlm(VlmModelParams(profile="smoke", family=family, device="cpu"))
    model, processor = vlm.model, vlm.processor
    enable_capture(model)  # as in the extract stage
    prompts = _prompts(processor)
    lengths = {len(p.input_ids) for p in prompts}
    assert len(lengths) > 1  # the batch really is padded
    n = 10
    single = [_alone(model, processor.tokenizer, p, n) for p in prompts]
    assert len(set(single)) == len(single)  # distinct answers: a mix-up between rows would show
    assert generate_answers(model, processor.tokenizer, prompts, n) == single
    assert generate_answers(model, processor.tokenizer, prompts[::-1], n, stop_at_json=False) == single[::-1]


LAYERS = [0, 2]


def _target_prompts(processor, image, occlusion):
    """Two target prompts about `image`, reusing the occlusion prompt's image inputs."""
    return [encode_prompt(processor, image, target_question(DEFAULT_TEMPLATES["target"], phrase, box), False,
                          occlusion.image_inputs)
            for phrase, box in (("kiwi", "[0.10, 0.20, 0.50, 0.60]"), ("pear", "[0.00, 0.00, 1.00, 1.00]"))]


def _full_forward_rows(model, prompt):
    with capture_rows(model, LAYERS, prompt.query_rows) as rec, torch.no_grad():
        model(**prompt.model_inputs)
    return {layer: t[0] for layer, t in rec.result.items()}


@pytest.mark.parametrize("family", family_names())
def test_target_prompts_run_on_the_prefix_of_the_batched_answer(family):
    """One image prefill per image: the batched `generate` prefills each image once (counted),
    the prefix its occlusion prompt shares with the target prompts is cut from that call's KV
    cache, and the target maps on it equal a full forward of each target prompt; the cut
    prefix equals the prefix prefilled alone (keys, values, M-RoPE deltas)."""
    vlm = load_vlm(VlmModelParams(profile="smoke", family=family, device="cpu"))
    model, processor = vlm.model, vlm.processor
    enable_capture(model)
    images = _images()
    occlusion = _prompts(processor, images=images)
    with ImagePrefillCounter(model) as counter:
        batch = generate_answer_batch(model, processor.tokenizer, occlusion, 4)
    assert counter.count == len(images)
    assert max(batch.padding) > 0 and min(batch.padding) == 0
    for row, (image, prompt) in enumerate(zip(images, occlusion)):
        targets = _target_prompts(processor, image, prompt)
        prefix_len = X.shared_prefix_length([prompt, *targets])
        assert prefix_len > prompt.image_positions[-1]  # the image lies in the shared prefix
        with ImagePrefillCounter(model) as counter:
            state = prefix_from_batch(model, batch, row, prefix_len)
            maps = [run_suffix(model, state, torch.from_numpy(t.input_ids[prefix_len:])[None],
                               [r - prefix_len for r in t.query_rows], LAYERS) for t in targets]
        assert counter.count == 0  # no second image prefill
        assert state.cache.get_seq_length() == prefix_len
        for target, got in zip(targets, maps):
            reference = _full_forward_rows(model, target)
            for layer in LAYERS:
                torch.testing.assert_close(got[layer], reference[layer], rtol=0, atol=1e-5)
        alone = prefill(model, prompt.model_inputs, prefix_len)
        assert torch.equal(state.prefix_ids, alone.prefix_ids)
        if alone.rope_deltas is None:
            assert state.rope_deltas is None
        else:
            assert torch.equal(state.rope_deltas, alone.rope_deltas)
        for cut, own in zip(state.cache.layers, alone.cache.layers):
            torch.testing.assert_close(cut.keys, own.keys, rtol=1e-5, atol=2e-5)
            torch.testing.assert_close(cut.values, own.values, rtol=1e-5, atol=2e-5)


def test_extract_prefills_each_image_once_and_equals_two_prefills():
    """extract_image on the batched answers: one image prefill per image; with answers that
    kept no cache (the two-prefill path) two per image, and the same maps."""
    from pipeline.datasets.record import ImageRecord, Instance

    vlm = load_vlm(VlmModelParams(profile="smoke", family="llava_onevision", device="cpu"))
    enable_capture(vlm.model)
    params = ExtractParams(layers=[-1], max_new_tokens=3, sink_removal=True)
    jobs = []
    for i, image in enumerate(_images()[:2]):
        w, h = image.size
        instances = tuple(Instance(10 * i + k, k, name, (5.0 + k, 5.0, w / 2, h / 2), None, None, None)
                          for k, name in enumerate(["kiwi", "pear"]))
        jobs.append(X.ImageJob(ImageRecord(i, None, w, h, instances), image))
    with ImagePrefillCounter(vlm.model) as once:
        answers = X.occlusion_answers(vlm, jobs, params)
        shared = [X.extract_image(vlm, job, params, [2], answer=a) for job, a in zip(jobs, answers)]
    assert once.count == len(jobs)
    with ImagePrefillCounter(vlm.model) as twice:
        apart = [X.extract_image(vlm, job, params, [2], answer=dataclasses.replace(a, batch=None))
                 for job, a in zip(jobs, answers)]
    assert twice.count == len(jobs)  # the targets' own prefill, on top of the answers' above
    for a, b in zip(shared, apart):
        assert a.occlusion_raw == b.occlusion_raw
        for g in a.instances:
            np.testing.assert_allclose(a.instances[g].maps, b.instances[g].maps, rtol=1e-5, atol=1e-6)


def test_batch_inputs_left_pads_and_pads_patches():
    vlm = load_vlm(VlmModelParams(profile="smoke", family="llava_next", device="cpu"))
    prompts = _prompts(vlm.processor)
    patches = [p.model_inputs["pixel_values"].shape[1] for p in prompts]
    assert len(set(patches)) > 1
    pad = pad_token_id(vlm.model, vlm.processor.tokenizer)
    batch = batch_inputs(prompts, pad)
    length = max(len(p.input_ids) for p in prompts)
    assert batch["input_ids"].shape == (3, length)
    for row, p in enumerate(prompts):
        n = len(p.input_ids)
        assert batch["input_ids"][row, length - n:].tolist() == p.input_ids.tolist()
        assert (batch["input_ids"][row, : length - n] == pad).all()
        assert batch["attention_mask"][row].tolist() == [0] * (length - n) + [1] * n
        pv = batch["pixel_values"][row]
        torch.testing.assert_close(pv[: patches[row]], p.model_inputs["pixel_values"][0], rtol=0, atol=0)
        assert (pv[patches[row]:] == 0).all()
    assert batch["image_sizes"].tolist() == [p.model_inputs["image_sizes"][0].tolist() for p in prompts]
    broken = prompts[1].model_inputs.copy()
    broken.pop("image_sizes")
    prompts[1].model_inputs = broken
    with pytest.raises(ValueError, match="prompts carry different inputs"):
        batch_inputs(prompts, pad)


def test_answer_is_complete():
    assert not answer_is_complete("Sure, here it is:")
    assert not answer_is_complete('```json\n{"occlusions": [{"object": "kiwi"')
    assert answer_is_complete('```json\n{"occlusions": []}')
    assert answer_is_complete('{"occlusions": []} trailing {')
    assert not answer_is_complete('{"a": {"occlusions": []}')  # the outer object is still open


def test_stop_criterion_fires_where_the_json_closes():
    tokenizer = get_family("llava_next").build_smoke_tokenizer()
    answer = '{"occlusions": [{"object": "kiwi", "occluded_by": ["pear"]}]}'
    full = "Sure. " + answer + " I hope this helps {"
    ids = tokenizer(full, add_special_tokens=False)["input_ids"]
    prompt = [5, 6, 7]
    stop = JsonAnswerStop(tokenizer, len(prompt), 1)
    fired = None
    for step in range(1, len(ids) + 1):
        flags = stop(torch.tensor([prompt + ids[:step]]))
        if flags[0] and fired is None:
            fired = step
        assert bool(flags[0]) == (fired is not None)  # once done, a row stays done
    assert fired is not None
    text = tokenizer.decode(ids[:fired])
    assert text.rstrip().endswith("}]}") and parse_occlusion_answer(text) == parse_occlusion_answer(full)
    assert not answer_is_complete(tokenizer.decode(ids[: fired - 1]))


class _Script:
    """Logits processor forcing each row to write its scripted token ids, then token `filler`."""

    def __init__(self, scripts, prompt_len, filler):
        self.scripts, self.prompt_len, self.filler = scripts, prompt_len, filler

    def __call__(self, input_ids, scores):
        step = input_ids.shape[1] - self.prompt_len
        forced = torch.full_like(scores, float("-inf"))
        for row, script in enumerate(self.scripts):
            forced[row, script[step] if step < len(script) else self.filler] = 0.0
        return forced


def test_generation_stops_at_the_end_of_each_json_answer():
    vlm = load_vlm(VlmModelParams(profile="smoke", family="llava", device="cpu"))
    model, tok = vlm.model, vlm.processor.tokenizer
    prompts = _prompts(vlm.processor)[:2]
    answers = ['{"occlusions": []}', 'Here: {"occlusions": [{"object": "kiwi", "occluded_by": ["pear"]}]}']
    scripts = [tok(a, add_special_tokens=False)["input_ids"] for a in answers]
    filler = tok(" and", add_special_tokens=False)["input_ids"][0]
    batch = batch_inputs(prompts, pad_token_id(model, tok))
    prompt_len = batch["input_ids"].shape[1]
    budget = 60
    out = model.generate(
        **batch, max_new_tokens=budget, do_sample=False, pad_token_id=pad_token_id(model, tok),
        logits_processor=[_Script(scripts, prompt_len, filler)],
        stopping_criteria=[JsonAnswerStop(tok, prompt_len, 2)],
    )
    assert out.shape[1] - prompt_len == max(len(s) for s in scripts) < budget
    texts = tok.batch_decode(out[:, prompt_len:].tolist(), skip_special_tokens=True)
    assert [json.loads(t[t.index("{"):]) for t in texts] == [json.loads(a[a.index("{"):]) for a in answers]


def test_extract_batches_answers_and_equals_one_image_at_a_time(tmp_path, monkeypatch):
    from pipeline.attention.cache import iter_images
    from pipeline.datasets import load_dataset
    from pipeline.synth import generate

    ann = generate(tmp_path / "synth", 3, seed=4, width=160, height=120, mean_instances=2.0, max_instances=2,
                   progress=False)
    dataset = load_dataset(ann)
    vlm = load_vlm(VlmModelParams(profile="smoke", family="llava_onevision", device="cpu"))
    calls = []
    original = X.generate_answer_batch

    def spy(model, tok, prompts, n):
        calls.append(len(prompts))
        return original(model, tok, prompts, n)

    monkeypatch.setattr(X, "generate_answer_batch", spy)
    asked = sum(1 for im in dataset.images if im.instances)
    batched = X.run_extract(vlm, dataset, ExtractParams(layers=[-1], max_new_tokens=6, generation_batch=2),
                            tmp_path / "b.h5", progress=False)
    assert sum(calls) == asked and max(calls) == min(2, asked)
    calls.clear()
    single = X.run_extract(vlm, dataset, ExtractParams(layers=[-1], max_new_tokens=6, generation_batch=1),
                           tmp_path / "s.h5", progress=False)
    assert calls == [1] * asked
    for a, b in zip(iter_images(batched), iter_images(single)):
        assert a.occlusion_raw == b.occlusion_raw and a.occlusion_error == b.occlusion_error
        for g in a.instances:
            np.testing.assert_allclose(a.instances[g].maps, b.instances[g].maps, rtol=1e-5, atol=1e-7)


def test_generation_batch_must_be_positive():
    with pytest.raises(ValueError, match="extract.generation_batch must be a positive integer"):
        ExtractParams(generation_batch=0)
