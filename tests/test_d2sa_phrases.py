"""D2SA's English phrase table: complete, tied to the real category names, and used by the
extract stage for flavour d2sa with extract.phrase_overrides winning."""

from __future__ import annotations

import json

import pytest

from pipeline.attention.extract import with_dataset_phrases
from pipeline.attention.params import ExtractParams
from pipeline.attention.prompts import category_phrase
from pipeline.datasets import load_dataset
from pipeline.datasets.d2sa_phrases import D2SA_CATEGORIES, D2SA_PHRASES, RENAMED_V1_1, default_phrases


def test_every_id_1_to_60_has_one_distinct_phrase():
    ids = [i for i, _, _ in D2SA_CATEGORIES]
    assert ids == list(range(1, 61))
    names = [n for _, n, _ in D2SA_CATEGORIES]
    phrases = [p for _, _, p in D2SA_CATEGORIES]
    assert len(set(names)) == 60 and len(set(p.lower() for p in phrases)) == 60
    assert all(p.strip() == p and p for p in phrases)


@pytest.mark.parametrize("cid, name", [  # names of the D2SA annotation files (D2S v1)
    (1, "adelholzener_alpenquelle_classic_075"), (10, "suntory_gokuri_limonade"),
    (19, "caona_kakaohaltiges_getraenkepulver"), (22, "douwe_egberts_professional_kaffee_gemahlen"),
    (28, "apple_roter_boskoop"), (43, "franken_tafelreiniger"), (54, "feldsalat"),
    (56, "rispentomaten"), (57, "roma_rispentomaten"), (58, "rucola"), (60, "zucchini"),
])
def test_names_are_the_d2sa_category_names(cid, name):
    assert (cid, name) in {(i, n) for i, n, _ in D2SA_CATEGORIES}


def test_v1_1_renames_give_the_same_phrase():
    assert set(RENAMED_V1_1.values()) <= {n for _, n, _ in D2SA_CATEGORIES}
    assert D2SA_PHRASES["vine_tomatoes"] == D2SA_PHRASES["rispentomaten"] == "vine tomatoes in a cardboard tray"
    assert D2SA_PHRASES["corn_salad"] == "lamb's lettuce in a plastic tray"


def test_table_is_the_default_for_d2sa_only_and_overrides_win():
    assert default_phrases("cocoa") == {} and default_phrases(None) == {}
    params = ExtractParams(phrase_overrides={"rispentomaten": "tomatoes on the vine"})
    merged = with_dataset_phrases(params, "d2sa").phrase_overrides
    assert category_phrase("rispentomaten", merged) == "tomatoes on the vine"
    assert category_phrase("feldsalat", merged) == "lamb's lettuce in a plastic tray"
    assert category_phrase("some_new_sku", merged) == "some new sku"  # not in the table: humanised
    assert with_dataset_phrases(params, "kins2020") is params


def test_loaded_dataset_knows_its_flavour(tmp_path):
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps({
        "images": [{"id": 1, "file_name": "a.png", "width": 4, "height": 4}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 56, "bbox": [0, 0, 2, 2], "iscrowd": 0,
                         "segmentation": [[0, 0, 2, 0, 2, 2, 0, 2]],
                         "visible_mask": [[0, 0, 2, 0, 2, 2, 0, 2]]}],
        "categories": [{"id": 56, "name": "rispentomaten"}]}))
    assert load_dataset(ann).flavour == "d2sa"
    assert load_dataset(ann, flavour="d2sa").flavour == "d2sa"


def test_extract_stage_asks_with_the_phrases(tmp_path):
    """A synthetic scene whose categories carry D2SA names: the target prompts use the table's
    phrases, and an override replaces one of them."""
    from pipeline.attention import extract as X
    from pipeline.attention.cache import iter_images
    from pipeline.attention.params import VlmModelParams
    from pipeline.attention.vlm import load_vlm
    from pipeline.synth import generate

    ann = generate(tmp_path, 1, seed=2, width=160, height=120, mean_instances=2.5, max_instances=3, progress=False)
    data = json.loads(ann.read_text())
    d2sa_names = ["rispentomaten", "feldsalat", "caona_kakaohaltiges_getraenkepulver"]
    for k, cat in enumerate(data["categories"]):
        cat["name"] = d2sa_names[k % 3] + ("" if k < 3 else f"_{k}")
    ann.write_text(json.dumps(data))
    ds = load_dataset(ann, flavour="d2sa")
    vlm = load_vlm(VlmModelParams(profile="smoke", family="llava_onevision", device="cpu"))
    params = ExtractParams(layers=[-1], max_new_tokens=2, phrase_overrides={"feldsalat": "a tray of salad"})
    out = X.run_extract(vlm, ds, params, tmp_path / "a.h5", progress=False)
    image = next(iter_images(out))
    expected = {"rispentomaten": "vine tomatoes in a cardboard tray", "feldsalat": "a tray of salad",
                "caona_kakaohaltiges_getraenkepulver": "bag of cocoa drink powder"}
    seen = 0
    for inst in image.instances.values():
        if inst.category_name in expected:
            assert expected[inst.category_name] in inst.query_text
            assert inst.category_name not in inst.query_text
            seen += 1
    assert seen >= 1
