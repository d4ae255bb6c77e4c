"""Single-image API and `vlmsam predict` on the smoke profile (tiny random LLaVA-NeXT, seeded
random EfficientSAM ViT-T) and a small synthetic scene."""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from pipeline.api import PredictInputError, PredictSettings, VLMSAM, resolve_params, whole_image_maps
from pipeline.attention.cache import ImageAttention, InstanceAttention
from pipeline.attention.params import resolve_layers
from pipeline.cli import app
from pipeline.decoding.occluders import OCCLUDER_SOURCES
from pipeline.errors import ParamsError
from pipeline.profiles import SMOKE_OVERRIDES, apply_overrides, default_params
from pipeline.prompt_limits import MAX_DECODER_POINTS
from pipeline.sampling.params import SampleParams
from pipeline.sampling.pixel_map import Grid, paint, search_region, split_views, token_values
from pipeline.sampling.synthetic import grid_placement
from pipeline.synth import synth_coco

SMOKE = {**SMOKE_OVERRIDES, "extract.max_new_tokens": 8}  # a random model's answer: keep it short


def smoke_params() -> dict:
    return apply_overrides(default_params(), SMOKE)


@pytest.fixture(scope="module")
def scene():
    """One 160x120 synthetic scene: RGB array and its objects as (x1 y1 x2 y2 box, class name)."""
    data, images = synth_coco(1, seed=3, width=160, height=120)
    names = {c["id"]: c["name"] for c in data["categories"]}
    objects = [((x, y, x + w, y + h), names[a["category_id"]])
               for a in data["annotations"] for x, y, w, h in [a["bbox"]]]
    assert len(objects) >= 2
    return images[0], objects


@pytest.fixture(scope="module")
def model():
    """The smoke model, loaded once; the EfficientSAM encoder is memoised per image content
    (it takes seconds on CPU) behind a call counter, so every encode request stays visible."""
    m = VLMSAM.from_params(smoke_params())
    encode, memo = m.sam.model.get_image_embeddings, {}
    m.encoder_calls = 0

    def counted(images):
        m.encoder_calls += 1
        key = hashlib.sha1(images.numpy().tobytes()).hexdigest()
        if key not in memo:
            memo[key] = encode(images)
        return memo[key]

    m.sam.model.get_image_embeddings = counted
    return m


def test_two_boxes_in_one_call_encode_the_image_once(model, scene):
    rgb, objects = scene
    before = model.encoder_calls
    preds = model.predict_objects(rgb, objects[:2])
    assert model.encoder_calls - before == 1
    h, w = rgb.shape[:2]
    layers = resolve_layers("auto", model.vlm.model.config.get_text_config().num_hidden_layers, model.vlm.family)
    assert model.layers == layers
    for i, (pred, (box, name)) in enumerate(zip(preds, objects)):
        assert pred.index == i and pred.class_name == name and pred.box_xyxy == tuple(map(float, box))
        assert pred.smoke is True
        for mask in (pred.visible_mask, pred.amodal_mask):
            assert mask.shape == (h, w) and mask.dtype == bool
        assert np.isfinite(pred.visible_score) and np.isfinite(pred.amodal_score)
        # occluder_hull only adds pixels to the visible mask: A = V | (H(V) & O & B)
        assert pred.completion == "occluder_hull" and not (pred.visible_mask & ~pred.amodal_mask).any()
        assert pred.occluder_source in OCCLUDER_SOURCES
        assert set(pred.completion_occluder_ids) <= {0, 1} - {i}
        n = len(pred.labels)
        assert 1 <= n <= MAX_DECODER_POINTS and pred.points.shape == (n, 2) and len(pred.point_sources) == n
        assert set(pred.labels.tolist()) <= {0, 1} and pred.labels[0] == 1
        x1, y1, x2, y2 = box
        pos = pred.points[pred.labels == 1]
        assert np.all((pos >= [x1, y1]) & (pos <= [x2, y2]))  # positives inside the box
        rx0, ry0, rx1, ry1 = search_region((x1, y1, x2 - x1, y2 - y1), w, h, SampleParams().box_enlarge)
        assert np.all((pred.points >= [rx0, ry0]) & (pred.points <= [rx1, ry1]))  # all in the search region
        assert sorted(pred.layer_maps) == layers
        for m in [*pred.layer_maps.values(), pred.aggregated_map]:
            assert m.shape == (h, w) and m.dtype == np.float32 and np.isfinite(m).any()
        # two objects: the question lists them; a random model writes no JSON, recorded as such
        occ = pred.occlusion
        assert occ.listing == "listed" and occ.parsed_json is None and occ.error
        assert occ.occluder_names == [] and occ.occluder_ids == []
    assert preds[0].occlusion.raw == preds[1].occlusion.raw  # one question per image


def test_single_object_asks_free_listing_and_inputs_agree(model, scene, tmp_path):
    rgb, objects = scene
    box, name = objects[0]
    path = tmp_path / "scene.png"
    Image.fromarray(rgb).save(path)
    from_path = model.predict(path, box, name)
    from_pil = model.predict(Image.fromarray(rgb).convert("RGBA"), box, name)
    for pred in (from_path, from_pil):
        assert pred.index == 0 and pred.occlusion.listing == "free" and pred.smoke
    # the same pixels through either input type give the same result
    np.testing.assert_array_equal(from_path.visible_mask, from_pil.visible_mask)
    np.testing.assert_array_equal(from_path.points, from_pil.points)
    for layer in from_path.layer_maps:
        np.testing.assert_array_equal(from_path.layer_maps[layer], from_pil.layer_maps[layer])


@pytest.mark.parametrize("box, message", [
    ((50, 40, 20, 90), "x2 > x1"),
    ((10, 10, 170, 50), "outside the 160x120 image"),
    ((10, 10, 50), "4 finite numbers"),
    ((10, float("nan"), 50, 60), "4 finite numbers"),
    ("wide", "4 numbers"),
])
def test_bad_box_is_a_clear_error_before_any_model_runs(model, scene, box, message):
    rgb, _ = scene
    before = model.encoder_calls
    with pytest.raises(PredictInputError, match=message):
        model.predict(rgb, box, "cup")
    assert model.encoder_calls == before


def test_bad_image_class_and_context_are_clear_errors(model, scene, tmp_path):
    rgb, objects = scene
    box, _ = objects[0]
    with pytest.raises(PredictInputError, match="uint8 of shape"):
        model.predict(rgb.astype(np.float32), box, "cup")
    with pytest.raises(PredictInputError, match="uint8 of shape"):
        model.predict(rgb[..., 0], box, "cup")
    with pytest.raises(FileNotFoundError, match="missing.png"):
        model.predict(tmp_path / "missing.png", box, "cup")
    with pytest.raises(PredictInputError, match="class name"):
        model.predict(rgb, box, "  ")
    with pytest.raises(PredictInputError, match="object 1"):
        model.predict(rgb, box, "cup", others=[((0, 0, 500, 10), "plate")])


def test_annotation_only_settings_are_refused():
    base = smoke_params()
    with pytest.raises(PredictInputError, match="modal_given"):
        PredictSettings.from_params(apply_overrides(base, {"decode.modal_given": True}))
    with pytest.raises(PredictInputError, match="no annotated occluders"):
        PredictSettings.from_params(apply_overrides(base, {"decode.occluders": "gt"}))
    with pytest.raises(PredictInputError, match="unknown parameter"):
        PredictSettings.from_params(apply_overrides(base, {"sample.n_peaks": 3}))
    ok = PredictSettings.from_params(apply_overrides(base, {"decode.occluders": "overlap"}))
    assert ok.decode.occluders == "overlap" and ok.vlm.smoke


def test_overrides_with_dunder_or_dotted_keys(tmp_path):
    params, _ = resolve_params(smoke_params(), {"extract__layers": [-1], "models.profile": "real"})
    assert params["extract"]["layers"] == [-1] and params["models"]["profile"] == "real"
    with pytest.raises(PredictInputError, match="not a section"):
        resolve_params(smoke_params(), {"nosuch__key": 1})
    with pytest.raises(ParamsError, match=r"unknown parameter\(s\) \['n_points'\]"):
        resolve_params(smoke_params(), {"sample__n_points": 1})
    with pytest.raises(FileNotFoundError, match="parameter file not found"):
        resolve_params(tmp_path / "params.yaml")


def test_whole_image_map_is_the_samplers_map():
    """Unsmoothed, the whole-image map cropped to a box equals what the sampler paints over
    that box on a one-pixel grid; per layer, it is that layer alone."""
    width, height = 96, 64
    placement = grid_placement(width, height, base=8, fine=(12, 16))
    rng = np.random.default_rng(0)
    maps = rng.random((2, len(placement))).astype(np.float32)
    att = ImageAttention(0, width, height, placement, {5: InstanceAttention(5, "cup", "", [], maps)})
    params = SampleParams(smooth=0.0, view_weights=(0.3, 0.7))
    weights = np.array([1.0, 3.0])
    per_layer, aggregated = whole_image_maps(att, 5, [10, 14], [0, 1], weights, params)
    views = split_views(placement)
    box = Grid(x0=20, y0=8, step_x=1, step_y=1, rows=40, cols=50)
    region = paint(token_values(maps[None], [0, 1], weights, views, "mean"), views, box, params.view_weights)[0]
    np.testing.assert_allclose(aggregated[8:48, 20:70], region, rtol=1e-6)
    only_second = paint(token_values(maps[None], [1], np.ones(1), views, "mean"), views, box, params.view_weights)[0]
    np.testing.assert_allclose(per_layer[14][8:48, 20:70], only_second, rtol=1e-6)
    assert sorted(per_layer) == [10, 14] and aggregated.shape == (height, width)


def test_predict_command_writes_the_figure_and_shouts_smoke(model, scene, tmp_path, monkeypatch):
    rgb, objects = scene
    (box, name), (other_box, other_name) = objects[:2]
    image = tmp_path / "scene.png"
    Image.fromarray(rgb).save(image)
    seen = {}

    def reuse_loaded(params, **overrides):  # the models are already loaded: check what was asked
        seen.update(params=params, overrides=overrides)
        return model

    monkeypatch.setattr(VLMSAM, "from_params", staticmethod(reuse_loaded))
    out = tmp_path / "fig.png"
    args = ["predict", str(image), "--box", *map(str, box), "--class", name, "--out", str(out),
            "--other", ",".join(map(str, other_box)) + "," + other_name, "--profile", "smoke"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert seen["overrides"] == SMOKE_OVERRIDES
    assert "SMOKE RUN" in result.output and "visible score" in result.output and "fallback" in result.output
    assert "amodal mask from: " in result.output
    with Image.open(out) as fig:
        assert fig.format == "PNG" and fig.size[0] > 800 and fig.size[1] > 400
    jpg = tmp_path / "fig.jpg"
    at = args.index("--out") + 1
    assert CliRunner().invoke(app, [*args[:at], str(jpg), *args[at + 1:]]).exit_code == 0
    with Image.open(jpg) as fig:
        assert fig.format == "JPEG" and fig.size[0] > 800
    refused = CliRunner().invoke(app, [*args[:at], str(tmp_path / "fig.gif"), *args[at + 1:]])
    assert refused.exit_code == 2 and ".gif" in refused.output and not (tmp_path / "fig.gif").exists()

    bad = CliRunner().invoke(app, ["predict", str(image), "--box", "5", "5", "1", "1", "--class", name,
                                   "--out", str(tmp_path / "bad.png")])
    assert bad.exit_code == 1 and "x2 > x1" in bad.output and not (tmp_path / "bad.png").exists()


def test_named_context_object_completes_the_amodal_mask(model, scene, monkeypatch):
    """With the VLM's answer substituted (a random model writes no JSON), a context object it
    names as occluder is matched by index and its decoded visible mask completes the target."""
    import json

    from pipeline.attention import extract as X
    from pipeline.attention.occlusion import boxes_overlap
    from pipeline.attention.prompts import category_phrase
    from pipeline.decoding.completion import complete

    rgb, objects = scene
    xywh = [(x1, y1, x2 - x1, y2 - y1) for (x1, y1, x2, y2), _ in objects]
    t, o = next((i, j) for i in range(len(objects)) for j in range(len(objects))
                if i != j and boxes_overlap(xywh[i], xywh[j]) and objects[i][1] != objects[j][1])
    target, other = objects[t], objects[o]
    answer = json.dumps({"occlusions": [{"object": category_phrase(target[1]),
                                         "occluded_by": [category_phrase(other[1])]}]})
    real = X.generate_answer_batch
    monkeypatch.setattr(X, "generate_answer_batch", lambda model, tok, prompts, n: dataclasses.replace(
        real(model, tok, prompts, n), texts=["Here: " + answer] * len(prompts)))
    preds = model.predict_objects(rgb, [target, other])
    pred = preds[0]
    occ = pred.occlusion
    assert occ.listing == "listed" and occ.error is None and json.loads(occ.parsed_json) == json.loads(answer)
    assert occ.occluder_names == [category_phrase(other[1])] and occ.occluder_ids == [1]
    assert pred.occluder_source == "vlm" and pred.completion_occluder_ids == [1]
    expected = complete("occluder_hull", pred.visible_mask, preds[1].visible_mask, xywh[t])
    np.testing.assert_array_equal(pred.amodal_mask, expected)
    (occ,) = pred.occluder_masks  # a given object: matched, not located
    assert (occ.index, occ.name, occ.located) == (1, other[1], False)
    np.testing.assert_array_equal(occ.mask, preds[1].visible_mask)
    assert preds[1].occlusion.occluder_names == []  # the answer names no occluder of the other


# ---------------------------------------------------------------- named occluders located by attention

def bar_scene():
    """A red box (x 30..129, y 30..89) behind a blue bar (x 70..89, every row) on grey: the
    box's visible part is two pieces, its amodal mask the whole box."""
    h, w = 120, 160
    rgb = np.full((h, w, 3), 128, np.uint8)
    amodal = np.zeros((h, w), bool)
    amodal[30:90, 30:130] = True
    bar = np.zeros((h, w), bool)
    bar[:, 70:90] = True
    rgb[amodal] = (220, 30, 30)
    rgb[bar] = (30, 30, 220)
    return rgb, amodal, amodal & ~bar, bar


@pytest.fixture
def oracle_decoder(monkeypatch):
    """EfficientSAM's decoding replaced by the scene's truth per query (random weights segment
    nothing in particular): query 0 (the box) gets its visible mask, query 1 the bar. Every
    call's number of queries is recorded."""
    from pipeline.decoding import run as decode_run
    from pipeline.decoding.routing import route
    from pipeline.decoding.sam import DecodedMasks

    _, _, visible, bar = bar_scene()
    calls = []

    def decode_image(models, image, prompts, max_queries_per_call=None, negatives="auto"):
        q = prompts.points.shape[0]
        calls.append(q)
        masks = np.stack([visible, bar][:q])
        sent = route(prompts, negatives, models.trained_on_negatives).sent
        return DecodedMasks(masks, np.full(q, 0.9, np.float32), None, None, sent)

    monkeypatch.setattr(decode_run, "decode_image", decode_image)
    return calls


def answer(monkeypatch, occluded_by):
    import json

    from pipeline.attention import extract as X

    text = json.dumps({"occlusions": [{"object": "red box", "occluded_by": occluded_by}]})
    asked = []
    real = X.generate_answer_batch

    def generate_answer_batch(model, tokenizer, prompts, n):
        asked.extend(p.rendered for p in prompts)
        return dataclasses.replace(real(model, tokenizer, prompts, n), texts=[text] * len(prompts))

    monkeypatch.setattr(X, "generate_answer_batch", generate_answer_batch)
    return asked


def test_a_named_occluder_is_located_segmented_and_completes_the_mask(model, oracle_decoder, monkeypatch):
    rgb, amodal, visible, bar = bar_scene()
    asked = answer(monkeypatch, ["the blue bar"])
    pred = model.predict(rgb, (30, 30, 130, 90), "red box")
    assert len(asked) == 1 and pred.occlusion.listing == "free"  # one question, the VLM lists
    assert pred.occlusion.occluder_names == ["the blue bar"] and pred.occlusion.occluder_ids == []
    assert oracle_decoder == [2]  # the box and the located bar in ONE decoder call
    assert pred.occluder_source == "vlm" and pred.completion_occluder_ids == [1]
    (occ,) = pred.occluder_masks
    assert (occ.index, occ.name, occ.located) == (1, "the blue bar", True)
    np.testing.assert_array_equal(occ.mask, bar)
    np.testing.assert_array_equal(pred.visible_mask, visible)
    np.testing.assert_array_equal(pred.amodal_mask, amodal)  # the known truth: the whole box
    assert pred.amodal_mask.sum() > pred.visible_mask.sum()
    assert pred.amodal_source == "completion"


def test_no_named_occluder_leaves_the_visible_mask_and_says_so(model, oracle_decoder, monkeypatch):
    rgb, _, visible, _ = bar_scene()
    answer(monkeypatch, [])
    pred = model.predict(rgb, (30, 30, 130, 90), "red box")
    assert oracle_decoder == [1]  # nothing to locate
    assert pred.occluder_source == "vlm_none" and pred.occluder_masks == []
    np.testing.assert_array_equal(pred.amodal_mask, visible)
    assert pred.amodal_source == "visible: no occluder found"


def test_located_occluder_maps_come_from_its_own_prompt(model, monkeypatch):
    """With real (random) EfficientSAM: the bar gets its own target prompt in the box of the
    object it covers, and the result carries its mask."""
    from pipeline.attention import extract as X

    rgb, _, _, _ = bar_scene()
    answer(monkeypatch, ["blue bar"])
    spy_rows = []
    original = X.PrefixReuseRunner.rows

    def rows(self, prompt, query_rows):
        spy_rows.append(prompt.rendered)
        return original(self, prompt, query_rows)

    monkeypatch.setattr(X.PrefixReuseRunner, "rows", rows)
    pred = model.predict(rgb, (30, 30, 130, 90), "red box")
    assert sum("blue bar" in text and "[0.19, 0.25, 0.81, 0.75]" in text for text in spy_rows) == 1
    assert [o.name for o in pred.occluder_masks] == ["blue bar"]
    assert pred.occluder_masks[0].mask.shape == rgb.shape[:2]
    assert not (pred.visible_mask & ~pred.amodal_mask).any()
    assert pred.amodal_source in ("completion", "visible: no occluder found")


@pytest.mark.parametrize("family", ["sam", "sam2"])
def test_any_segmenter_family_through_the_api(scene, family):
    """SAM / SAM 2.1 in place of EfficientSAM: negatives reach it under decode.negatives auto, and the
    prediction records what was sent; EfficientSAM's predictions (module model) carry no label 0."""
    rgb, objects = scene
    sam = VLMSAM.from_params(apply_overrides(smoke_params(), {"models.segmenter.family": family}))
    assert sam.sam.family == family and sam.settings.segmenter.family == family
    preds = sam.predict_objects(rgb, objects[:2])
    for pred in preds:
        assert pred.visible_mask.shape == rgb.shape[:2] and np.isfinite(pred.visible_score)
        assert pred.points_sent["labels"] == pred.labels.tolist()


def test_efficient_sam_predictions_get_no_negatives(model, scene):
    rgb, objects = scene
    for pred in model.predict_objects(rgb, objects[:2]):
        assert 0 not in pred.points_sent["labels"]
        assert pred.points_sent["labels"] == [v for v in pred.labels.tolist() if v == 1]
