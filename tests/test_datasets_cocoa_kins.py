"""COCOA-cls and KINS (2020 and COCO layouts) loaders on hand-written JSON in their schemas."""

import json

import numpy as np
import pytest
from PIL import Image

from pipeline import masks
from pipeline.datasets import DatasetError, load_dataset

H, W = 16, 20


def _rect(x0, y0, x1, y1):
    """A polygon and its mask for the pixel block [x0, x1) x [y0, y1)."""
    m = np.zeros((H, W), bool)
    m[y0:y1, x0:x1] = True
    return [[x0, y0, x1, y0, x1, y1, x0, y1]], m


CAR_A, CAR_A_MASK = _rect(2, 2, 12, 10)
CAR_V, CAR_V_MASK = _rect(2, 2, 7, 10)  # right half hidden by the van
VAN, VAN_MASK = _rect(7, 4, 18, 14)

KINS_CATEGORIES = [{"id": 1, "name": "cyclist", "supercategory": "person"},
                   {"id": 4, "name": "car", "supercategory": "vehicle"},
                   {"id": 7, "name": "van", "supercategory": "vehicle"}]


def _save(tmp_path, data, name):
    for im in data["images"]:
        Image.new("RGB", (im["width"], im["height"])).save(tmp_path / im["file_name"])
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


def _images(file_name):
    return [{"id": 3, "file_name": file_name, "width": W, "height": H}]


def _kins2020():
    return {
        "images": _images("000003.png"),
        "annotations": [
            {"id": 10, "image_id": 3, "category_id": 4, "a_segm": CAR_A, "i_segm": CAR_V,
             "a_bbox": [2, 2, 10, 8], "i_bbox": [2, 2, 5, 8], "a_area": 80, "i_area": 40,
             "oco_id": 1, "ico_id": 1},
            {"id": 11, "image_id": 3, "category_id": 7, "a_segm": VAN, "i_segm": VAN,
             "a_bbox": [7, 4, 11, 10], "i_bbox": [7, 4, 11, 10], "a_area": 110, "i_area": 110,
             "oco_id": 1, "ico_id": 0},
        ],
        "categories": KINS_CATEGORIES,
    }


def _kins_coco():
    return {
        "images": _images("000003.png"),
        "annotations": [
            {"id": 10, "image_id": 3, "category_id": 4, "segmentation": CAR_A, "bbox": [2, 2, 10, 8],
             "area": 80, "inmodal_seg": masks.encode(CAR_V_MASK), "inmodal_bbox": [2, 2, 5, 8],
             "iscrowd": 0},
            {"id": 11, "image_id": 3, "category_id": 7, "segmentation": VAN, "bbox": [7, 4, 11, 10],
             "area": 110, "inmodal_seg": masks.encode(VAN_MASK), "inmodal_bbox": [7, 4, 11, 10],
             "iscrowd": 0},
        ],
        "categories": KINS_CATEGORIES,
    }


def _cocoa():
    return {
        "images": _images("COCO_val2014_000000000003.jpg"),
        "annotations": [
            {"id": 10, "image_id": 3, "category_id": 3, "segmentation": masks.encode(CAR_A_MASK),
             "visible_mask": masks.encode(CAR_V_MASK), "bbox": [2, 2, 10, 8], "area": 80, "iscrowd": 0,
             "occlude_rate": 0.5},
            {"id": 11, "image_id": 3, "category_id": 8, "segmentation": VAN, "visible_mask": VAN,
             "bbox": [7, 4, 11, 10], "area": 110, "iscrowd": 0},
        ],
        "categories": [{"id": 3, "name": "car", "supercategory": "vehicle"},
                       {"id": 8, "name": "truck", "supercategory": "vehicle"}],
    }


def _check_car_and_van(ds, car_name, van_name):
    (im,) = ds.images
    car, van = im.instances
    assert (car.category_name, van.category_name) == (car_name, van_name)
    assert car.bbox == (2.0, 2.0, 10.0, 8.0) and van.bbox == (7.0, 4.0, 11.0, 10.0)
    assert np.array_equal(masks.decode(car.amodal_rle), CAR_A_MASK)
    assert np.array_equal(masks.decode(car.visible_rle), CAR_V_MASK)
    assert np.array_equal(masks.decode(van.amodal_rle), VAN_MASK)
    assert car.occlusion_rate == pytest.approx(0.5) and van.occlusion_rate == 0.0
    assert car.occluder_ids is None and van.occluder_ids is None
    assert all(isinstance(i.amodal_rle["counts"], str) for i in (car, van))


@pytest.mark.parametrize(
    "make, flavour, file_name, names",
    [
        (_kins2020, "kins2020", "update_test_2020.json", ("car", "van")),
        (_kins_coco, "kins_coco", "instances_val.json", ("car", "van")),
        (_cocoa, "cocoa", "COCO_amodal_val2014_with_classes.json", ("car", "truck")),
    ],
)
def test_flavour_loads_and_is_detected(tmp_path, make, flavour, file_name, names):
    path = _save(tmp_path, make(), file_name)
    _check_car_and_van(load_dataset(path, flavour, check_images=True), *names)
    _check_car_and_van(load_dataset(path), *names)  # detected from the schema


@pytest.mark.parametrize(
    "make, flavour, mutate, message",
    [
        (_kins2020, "kins2020", lambda d: d["annotations"][0].pop("i_segm"), "annotation id 10: missing required field 'i_segm'"),
        (_kins2020, "kins2020", lambda d: d["annotations"][1].pop("a_bbox"), "annotation id 11: missing required field 'a_bbox'"),
        (_kins2020, "kins2020", lambda d: d["annotations"][0].update(a_segm=[[1, 2, 3, 4, 5]]), "annotation id 10 'a_segm': malformed polygon 0"),
        (_kins_coco, "kins_coco", lambda d: d["annotations"][0]["inmodal_seg"].update(counts="zz"), "annotation id 10 'inmodal_seg': malformed RLE"),
        (_kins_coco, "kins_coco", lambda d: d["annotations"][1].update(category_id=2), "annotation id 11: unknown category id 2"),
        (_cocoa, "cocoa", lambda d: d["annotations"][0].pop("visible_mask"), "annotation id 10: missing required field 'visible_mask'"),
        (_cocoa, "cocoa", lambda d: d["annotations"][0]["visible_mask"].update(size=[H, W + 1]), "does not match the image size"),
    ],
)
def test_flavour_errors(tmp_path, make, flavour, mutate, message):
    data = make()
    mutate(data)
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(data))
    with pytest.raises(DatasetError, match=message) as err:
        load_dataset(path, flavour)
    assert str(path) in str(err.value)


def test_wrong_flavour_names_missing_field(tmp_path):
    path = tmp_path / "update_train_2020.json"
    path.write_text(json.dumps(_kins2020()))
    with pytest.raises(DatasetError, match="annotation id 10: missing required field 'segmentation'"):
        load_dataset(path, "d2sa")
