"""D2SA loader, flavour detection, DatasetParams and every error path, on hand-written JSON."""

import json

import numpy as np
import pytest
from PIL import Image

from pipeline import masks
from pipeline.datasets import FLAVOURS, DatasetError, detect_flavour, load_dataset
from pipeline.datasets.params import DatasetParams, load

H, W = 10, 12


def _mask(y0, y1, x0, x1):
    m = np.zeros((H, W), bool)
    m[y0:y1, x0:x1] = True
    return m


def _uncompressed(m):
    """Uncompressed COCO RLE (list counts, column-major runs starting with zeros)."""
    flat = m.T.reshape(-1).astype(np.uint8)
    counts, value, run = [], 0, 0
    for v in flat:
        if v == value:
            run += 1
        else:
            counts.append(run)
            value, run = v, 1
    counts.append(run)
    return {"size": [H, W], "counts": counts}


AMODAL_A, VISIBLE_A = _mask(1, 7, 1, 7), _mask(1, 7, 1, 4)  # half hidden by B
AMODAL_B = _mask(2, 9, 4, 11)


def _d2sa_json(**overrides):
    anns = [
        {"id": 5, "image_id": 1, "category_id": 2, "bbox": [1, 1, 6, 6], "area": 36,
         "segmentation": masks.encode(AMODAL_A), "visible_mask": masks.encode(VISIBLE_A),
         "invisible_mask": masks.encode(AMODAL_A & ~VISIBLE_A), "occlude_rate": 0.5,
         "iscrowd": 0},
        # polygon amodal + uncompressed RLE visible; unoccluded
        {"id": 6, "image_id": 1, "category_id": 1, "bbox": [4, 2, 7, 7], "area": 49,
         "segmentation": [[4, 2, 11, 2, 11, 9, 4, 9]], "visible_mask": _uncompressed(AMODAL_B),
         "iscrowd": 0},
        {"id": 7, "image_id": 2, "category_id": 1, "bbox": [0, 0, 3, 3], "area": 9,
         "segmentation": masks.encode(_mask(0, 3, 0, 3)),
         "visible_mask": masks.encode(_mask(0, 3, 0, 3))},
    ]
    data = {
        "images": [
            {"id": 1, "file_name": "D2S_000001.jpg", "width": W, "height": H},
            {"id": 2, "file_name": "D2S_000002.jpg", "width": W, "height": H},
            {"id": 3, "file_name": "D2S_000003.jpg", "width": W, "height": H},
        ],
        "annotations": anns,
        "categories": [
            {"id": 1, "name": "adelholzener_alpenquelle_classic_075", "supercategory": "bottle"},
            {"id": 2, "name": "apple_braeburn_bundle", "supercategory": "fruit"},
        ],
    }
    data.update(overrides)
    return data


def _write(tmp_path, data, name="D2S_amodal_validation.json", images=True):
    path = tmp_path / name
    path.write_text(json.dumps(data))
    if images:
        for im in data["images"]:
            Image.new("RGB", (im["width"], im["height"]), (90, 40, 10)).save(tmp_path / im["file_name"])
    return path


def test_d2sa_loads_all_mask_encodings(tmp_path):
    ds = load_dataset(_write(tmp_path, _d2sa_json()), "d2sa", check_images=True)
    assert ds.categories == {1: "adelholzener_alpenquelle_classic_075", 2: "apple_braeburn_bundle"}
    assert [im.id for im in ds.images] == [1, 2, 3]
    assert ds.images[0].path == tmp_path / "D2S_000001.jpg"
    assert (ds.images[0].width, ds.images[0].height) == (W, H)
    assert ds.instance_count() == 3 and ds.images[2].instances == ()
    a, b = ds.images[0].instances
    assert a.id == 5 and a.category_name == "apple_braeburn_bundle" and a.bbox == (1.0, 1.0, 6.0, 6.0)
    assert isinstance(a.amodal_rle["counts"], str) and isinstance(b.visible_rle["counts"], str)
    assert np.array_equal(masks.decode(a.amodal_rle), AMODAL_A)
    assert np.array_equal(masks.decode(a.visible_rle), VISIBLE_A)
    assert a.occlusion_rate == pytest.approx(0.5)
    # polygon [4,2]-[11,9] rasterises to the 7x7 block; uncompressed RLE decodes exactly
    assert np.array_equal(masks.decode(b.visible_rle), AMODAL_B)
    assert np.array_equal(masks.decode(b.amodal_rle), AMODAL_B)
    assert b.occlusion_rate == pytest.approx(0.0)
    assert a.occluder_ids is None  # real D2SA names no occluders


def test_degenerate_and_empty_polygons(tmp_path):
    data = _d2sa_json()
    data["annotations"][1]["segmentation"] = [[4, 2, 11, 2, 11, 9, 4, 9], [1, 1, 2, 2]]
    data["annotations"][1]["visible_mask"] = []  # fully hidden: visible mask is empty
    b = load_dataset(_write(tmp_path, data), "d2sa").images[0].instances[1]
    assert np.array_equal(masks.decode(b.amodal_rle), AMODAL_B)  # the 2-point part adds nothing
    assert masks.area(b.visible_rle) == 0 and b.occlusion_rate == 1.0
    data["annotations"][1]["segmentation"] = [[1, 1, 2, 2]]
    with pytest.raises(DatasetError, match="annotation id 6: amodal mask is empty"):
        load_dataset(_write(tmp_path, data), "d2sa")


def test_occluder_ids_and_max_images(tmp_path):
    data = _d2sa_json()
    data["annotations"][0]["occluder_ids"] = [6]
    data["annotations"][1]["occluder_ids"] = []
    ds = load_dataset(_write(tmp_path, data), max_images=1)
    assert [im.id for im in ds.images] == [1]
    assert [i.occluder_ids for i in ds.images[0].instances] == [(6,), ()]


def test_image_dir_and_params(tmp_path):
    imgs = tmp_path / "images"
    imgs.mkdir()
    data = _d2sa_json()
    path = _write(imgs, data)
    ann = tmp_path / "annotations" / "D2S_amodal_validation.json"
    ann.parent.mkdir()
    path.rename(ann)
    with pytest.raises(DatasetError, match="image file not found"):
        load_dataset(ann, check_images=True)
    p = DatasetParams.from_dict({"flavour": "d2sa", "annotations": str(ann), "images": str(imgs),
                                 "max_images": 2})
    ds = load(p, check_images=True)
    assert ds.images[0].path == imgs / "D2S_000001.jpg" and len(ds.images) == 2
    assert DatasetParams.from_dict({}) == DatasetParams()
    with pytest.raises(ValueError, match="unknown parameter.*'flavor'"):
        DatasetParams.from_dict({"flavor": "d2sa"})
    with pytest.raises(ValueError, match="flavour"):
        DatasetParams.from_dict({"flavour": "coco"})
    with pytest.raises(ValueError, match="max_images"):
        DatasetParams.from_dict({"max_images": 0})


def test_detect_flavour():
    assert detect_flavour(_d2sa_json()) == "d2sa"
    cocoa = _d2sa_json(images=[{"id": 1, "file_name": "COCO_val2014_000000000042.jpg",
                                "width": W, "height": H}])
    assert detect_flavour(cocoa) == "cocoa"
    assert detect_flavour({"annotations": [{"a_segm": [], "i_segm": [], "oco_id": 1}]}) == "kins2020"
    assert detect_flavour({"annotations": [{"segmentation": [], "inmodal_seg": {}}]}) == "kins_coco"
    with pytest.raises(DatasetError, match="x.json: cannot detect.*no known schema"):
        detect_flavour({"annotations": [{"segmentation": [], "bbox": []}]}, "x.json")
    with pytest.raises(DatasetError, match="no 'annotations'"):
        detect_flavour({"images": []})
    assert set(FLAVOURS) == {"d2sa", "cocoa", "cocoa_original", "kins2020", "kins_coco"}


def _broken(tmp_path, mutate):
    data = _d2sa_json()
    mutate(data)
    return _write(tmp_path, data, images=False)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d["annotations"][0].pop("visible_mask"), "annotation id 5: missing required field 'visible_mask'"),
        (lambda d: d["annotations"][1].pop("bbox"), "annotation id 6: missing required field 'bbox'"),
        (lambda d: d["annotations"][0].pop("image_id"), "annotation id 5: missing required field 'image_id'"),
        (lambda d: d["images"][1].pop("width"), "image id 2: missing required field 'width'"),
        (lambda d: d.pop("categories"), "missing required field 'categories'"),
        (lambda d: d["annotations"][0].update(category_id=9), "annotation id 5: unknown category id 9"),
        (lambda d: d["annotations"][0].update(image_id=99), "annotation id 5: image_id 99 is not in 'images'"),
        (lambda d: d["annotations"][0]["segmentation"].update(counts="#$%"), "annotation id 5 'segmentation': malformed RLE"),
        (lambda d: d["annotations"][0]["segmentation"].update(counts="0"), "annotation id 5 'segmentation': malformed RLE.*sum"),
        (lambda d: d["annotations"][0]["segmentation"].update(size=[20, 20]), "does not match the image size"),
        (lambda d: d["annotations"][0]["segmentation"].update(size=["10", 12]), "annotation id 5 'segmentation': malformed RLE"),
        (lambda d: d["annotations"][1]["visible_mask"]["counts"].append(3), "annotation id 6 'visible_mask': malformed RLE"),
        (lambda d: d["annotations"][1].update(segmentation=[[1, 2, 3]]), "annotation id 6 'segmentation': malformed polygon 0"),
        (lambda d: d["annotations"][1].update(segmentation="abc"), "annotation id 6 'segmentation': malformed mask"),
        (lambda d: d["annotations"][0].update(bbox=[1, 2, 3]), "annotation id 5 'bbox': malformed bbox"),
        (lambda d: d["annotations"][0].update(segmentation=masks.encode(np.zeros((H, W), bool))), "annotation id 5: amodal mask is empty"),
        (lambda d: d["annotations"][1].update(id=5), "annotation id 5: duplicate annotation id"),
        (lambda d: d["images"][1].update(id=1), "image id 1: duplicate image id"),
        (lambda d: d["annotations"][0].update(occluder_ids=[7]), "annotation id 5: occluder id 7 is not another instance"),
        (lambda d: d["annotations"][0].update(occluder_ids=6), "'occluder_ids' must be a list"),
    ],
)
def test_errors_name_file_and_record(tmp_path, mutate, message):
    path = _broken(tmp_path, mutate)
    with pytest.raises(DatasetError, match=message) as err:
        load_dataset(path, "d2sa")
    assert str(path) in str(err.value)


def test_file_level_errors(tmp_path):
    missing = tmp_path / "nope.json"
    with pytest.raises(DatasetError, match="nope.json: annotation file not found"):
        load_dataset(missing)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DatasetError, match="bad.json: not valid JSON"):
        load_dataset(bad)
    with pytest.raises(DatasetError, match="unknown dataset flavour 'coco'"):
        load_dataset(bad, "coco")
    lst = tmp_path / "list.json"
    lst.write_text("[]")
    with pytest.raises(DatasetError, match="list.json: expected a JSON object"):
        load_dataset(lst)


def test_check_images_errors(tmp_path):
    path = _write(tmp_path, _d2sa_json())
    (tmp_path / "D2S_000002.jpg").write_bytes(b"not an image")
    with pytest.raises(DatasetError, match=r"image id 2 \(.*D2S_000002.jpg\): image does not open"):
        load_dataset(path, check_images=True)
    Image.new("RGB", (W + 1, H)).save(tmp_path / "D2S_000002.jpg", format="JPEG")
    with pytest.raises(DatasetError, match="image id 2.*13x10, annotation says 12x10"):
        load_dataset(path, check_images=True)
    (tmp_path / "D2S_000002.jpg").unlink()
    with pytest.raises(DatasetError, match="image id 2.*image file not found"):
        load_dataset(path, check_images=True)
    assert load_dataset(path).instance_count() == 3  # without the check the file loads


def test_compressed_counts_decoder_matches_pycocotools():
    from pipeline.datasets.coco_json import _compressed_counts

    rng = np.random.default_rng(0)
    for _ in range(50):
        h, w = rng.integers(1, 60, 2)
        m = rng.random((h, w)) < rng.uniform(0.05, 0.95)
        m[: rng.integers(0, h)] = rng.random() < 0.5  # long runs -> multi-char and delta codes
        rle = masks.encode(m)
        assert _compressed_counts(rle["counts"]).tolist() == _uncompressed_runs(m)


def _uncompressed_runs(m):
    flat = m.T.reshape(-1)
    change = np.flatnonzero(np.diff(flat.astype(np.int8))) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(bounds).tolist()
    return ([0] + runs) if flat[0] else runs


def test_file_without_annotations_needs_a_flavour(tmp_path):
    path = _write(tmp_path, _d2sa_json(annotations=[]), images=False)
    with pytest.raises(DatasetError, match="cannot detect the dataset flavour"):
        load_dataset(path)
    ds = load_dataset(path, "d2sa")
    assert len(ds.images) == 3 and ds.instance_count() == 0
