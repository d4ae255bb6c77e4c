"""`dataset.on_error: skip | stop`: malformed annotation records and unreadable or mis-sized
images are left out with their reason, recorded, and counted; `stop` fails naming the record."""

import json

import pytest

from pipeline.datasets import DatasetError, load_dataset
from pipeline.datasets.params import DatasetParams
from pipeline.datasets.skips import (
    ANNOTATION_MALFORMED, IMAGE_SIZE, IMAGE_UNREADABLE, ImageSkipError, Skip, TooManySkipsError,
    check_skipped_fraction, read_image_checked, read_skips, summarize, without_skipped_images, write_skips,
)
from pipeline.synth import generate


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("skips")
    path = generate(root, 3, seed=2, width=96, height=72, progress=False)
    return path, json.loads(path.read_text())


def _write(path, data):
    path.write_text(json.dumps(data))
    return path


def _bad_record_file(tmp_path, synth):
    """The synthetic file with the first annotation's RLE one row too tall."""
    path, data = synth
    data = json.loads(json.dumps(data))
    bad = data["annotations"][0]
    bad["segmentation"]["size"] = [bad["segmentation"]["size"][0] + 1, bad["segmentation"]["size"][1]]
    out = tmp_path / path.name
    for im in data["images"]:
        (tmp_path / im["file_name"]).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / im["file_name"]).write_bytes((path.parent / im["file_name"]).read_bytes())
    return _write(out, data), bad


def test_malformed_annotation_is_skipped_or_stops(tmp_path, synth):
    path, bad = _bad_record_file(tmp_path, synth)
    with pytest.raises(DatasetError, match=rf"annotation id {bad['id']}.*RLE size .* does not match"):
        load_dataset(path, "d2sa")
    dataset = load_dataset(path, "d2sa", on_error="skip")
    full = load_dataset(synth[0], "d2sa")
    assert dataset.instance_count() == full.instance_count() - 1
    assert all(inst.id != bad["id"] for im in dataset.images for inst in im.instances)
    (skip,) = dataset.skips
    assert (skip.stage, skip.reason, skip.image_id, skip.annotation_id, skip.instances) == (
        "load", ANNOTATION_MALFORMED, bad["image_id"], bad["id"], 1)
    assert str(path) == skip.file and "does not match the image size" in skip.message
    # no other instance still names the left-out one as its occluder
    assert all(bad["id"] not in (inst.occluder_ids or ()) for im in dataset.images for inst in im.instances)
    assert summarize(list(dataset.skips)) == {"images": 0, "instances": 1, "reasons": {ANNOTATION_MALFORMED: 1}}


def test_record_without_image_id_is_skipped(tmp_path, synth):
    path, data = synth
    data = json.loads(json.dumps(data))
    del data["annotations"][1]["image_id"]
    dataset = load_dataset(_write(tmp_path / "x.json", data), "d2sa", image_dir=path.parent, on_error="skip")
    (skip,) = dataset.skips
    assert skip.image_id is None and skip.annotation_id == data["annotations"][1]["id"]
    assert "missing required field 'image_id'" in skip.message


def test_image_reader_reasons(tmp_path, synth):
    path, data = synth
    im = data["images"][0]
    src = path.parent / im["file_name"]
    assert read_image_checked(src, im["width"], im["height"], im["id"]).shape == (im["height"], im["width"], 3)
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(src.read_bytes()[: len(src.read_bytes()) // 2])
    with pytest.raises(ImageSkipError, match=rf"truncated\.png: image {im['id']} cannot be read") as err:
        read_image_checked(truncated, im["width"], im["height"], im["id"])
    assert err.value.reason == IMAGE_UNREADABLE
    with pytest.raises(ImageSkipError, match=r"is 96x72 pixels but the annotations say 97x72") as err:
        read_image_checked(src, im["width"] + 1, im["height"], im["id"])
    assert err.value.reason == IMAGE_SIZE
    with pytest.raises(ImageSkipError, match="gone.png") as err:
        read_image_checked(tmp_path / "gone.png", 1, 1, 5)
    assert err.value.reason == IMAGE_UNREADABLE


def test_skip_file_round_trip_fraction_and_filter(tmp_path, synth):
    dataset = load_dataset(synth[0], "d2sa")
    first = dataset.images[0]
    skips = [Skip("extract", IMAGE_UNREADABLE, str(first.path), first.id, None, len(first.instances), "x"),
             Skip("load", ANNOTATION_MALFORMED, "a.json", first.id, 17, 1, "y")]
    out = tmp_path / "cache.h5"
    assert read_skips(out) is None
    write_skips(out, skips)
    assert read_skips(out) == skips
    assert [im.id for im in without_skipped_images(dataset, skips).images] == [im.id for im in dataset.images[1:]]
    assert summarize(skips) == {"images": 1, "instances": len(first.instances) + 1,
                                "reasons": {ANNOTATION_MALFORMED: 1, IMAGE_UNREADABLE: 1}}
    check_skipped_fraction(skips, 3, 0.34, "f")
    with pytest.raises(TooManySkipsError, match=r"f: 1 of 3 images skipped \(33.33%\), more than "
                                                r"dataset.max_skipped_fraction = 0.3"):
        check_skipped_fraction(skips, 3, 0.3, "f")
    with pytest.raises(ValueError, match="skip reason must be one of"):
        Skip("load", "other", "f", None, None, 0, "")


def test_params_validate():
    assert DatasetParams().on_error == "skip" and DatasetParams().max_skipped_fraction == 0.01
    with pytest.raises(ValueError, match=r"dataset.on_error must be one of \('skip', 'stop'\), got 'ignore'"):
        DatasetParams(on_error="ignore")
    with pytest.raises(ValueError, match="dataset.max_skipped_fraction must be a number in"):
        DatasetParams(max_skipped_fraction=1.5)
