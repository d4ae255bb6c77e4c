"""Our SAM 2 processing (no torchvision) equals transformers' real Sam2Processor on stored outputs
(tests/data/sam2_processor/golden.npz, written by make_golden.py there)."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.errors import InputFileError, ParamsError
from pipeline.segmenters._sam2_processing import Sam2Processing

DATA = Path(__file__).resolve().parent / "data"
GOLDEN = DATA / "sam2_processor" / "golden.npz"
FIXTURE = DATA / "segmenter_folders" / "sam2"
PUBLISHED = Sam2Processing(size=(1024, 1024), target_size=1024, image_mean=(0.485, 0.456, 0.406),
                           image_std=(0.229, 0.224, 0.225), rescale_factor=0.00392156862745098)


def sample_index(size: int) -> np.ndarray:
    """The flat indices make_golden.py stores samples at (SAMPLES = 2000, STRIDE = 1_000_003)."""
    return (np.arange(2000, dtype=np.int64) * 1_000_003) % size


@pytest.fixture(scope="module")
def golden():
    with np.load(GOLDEN) as z:
        data = {k: z[k] for k in z.files}
    return data, json.loads(str(data["meta"]))


@pytest.fixture(scope="module")
def images(golden, shared_reference):
    data, meta = golden
    out = {}
    for entry in meta["images"]:
        name = entry["name"]
        if entry["stored"]:
            image = data[f"{name}/image"]
        else:
            from PIL import Image

            with Image.open(shared_reference / "amodal_real_data" / "D2SA" / "images_sln_amodal" / entry["source"]) as im:
                image = np.array(im.convert("RGB"))
        digest = hashlib.sha256(image.tobytes()).digest()
        assert digest == data[f"{name}/sha256"].tobytes(), f"{entry['source']} decodes differently here"
        out[name] = image
    return out


def _settings():
    return {"published": PUBLISHED, "fixture": Sam2Processing.from_folder(FIXTURE)}


def test_fixture_folder_settings_are_read():
    fixture = _settings()["fixture"]
    assert fixture.size == (128, 128) and fixture.target_size == 128
    assert fixture.image_mean == (0.485, 0.456, 0.406) and fixture.rescale_factor == pytest.approx(1 / 255)


@pytest.mark.parametrize("key", ["published", "fixture"])
def test_pixel_values_equal_the_real_processor(golden, images, key):
    data, meta = golden
    processing = _settings()[key]
    for name, image in images.items():
        pv = processing.pixel_values(image)
        assert pv.shape == (1, 3, *processing.size) and pv.dtype == torch.float32
        pv = pv[0].numpy()
        np.testing.assert_allclose(pv.reshape(-1)[sample_index(pv.size)], data[f"{name}/{key}/pixel_values"],
                                   rtol=0, atol=1e-6, err_msg=name)
        np.testing.assert_allclose(pv.astype(np.float64).sum(axis=(1, 2)), data[f"{name}/{key}/pixel_channel_sums"],
                                   rtol=1e-9, atol=1e-6, err_msg=name)


@pytest.mark.parametrize("key", ["published", "fixture"])
def test_points_and_boxes_scale_as_the_real_processor(golden, images, key):
    data, _ = golden
    processing = _settings()[key]
    for name, image in images.items():
        size = image.shape[:2]
        points, labels = data[f"{name}/{key}/points"], data[f"{name}/{key}/input_labels"]
        expected = data[f"{name}/{key}/input_points"]
        for q in range(points.shape[0]):
            n = int((~np.isnan(points[q, :, 0])).sum())
            got = processing.scale_points(points[q, :n], size).numpy()
            np.testing.assert_allclose(got, expected[q, :n], rtol=0, atol=1e-5, err_msg=f"{name} query {q}")
            assert (labels[q, n:] == -10).all() and (expected[q, n:] == -10).all()
        boxes = data[f"{name}/{key}/boxes"].reshape(-1, 2, 2)
        got = processing.scale_points(boxes, size).numpy().reshape(-1, 4)
        np.testing.assert_allclose(got, data[f"{name}/{key}/input_boxes"], rtol=0, atol=1e-5, err_msg=name)


@pytest.mark.parametrize("key", ["published", "fixture"])
def test_masks_post_process_as_the_real_processor(golden, images, key):
    data, _ = golden
    for name, image in images.items():
        size = image.shape[:2]
        low = torch.from_numpy(data[f"{name}/{key}/low_res_logits_x16"].astype(np.float32) / 16)
        masks = Sam2Processing.masks_to_original(low, size)
        assert masks.shape == (1, 1, *size) and masks.dtype == torch.bool
        bits = np.unpackbits(data[f"{name}/{key}/mask_bits"])[: masks.numel()].astype(bool)
        assert np.array_equal(masks.numpy().reshape(-1), bits), name
        logits = torch.nn.functional.interpolate(low, size, mode="bilinear", align_corners=False).numpy()
        np.testing.assert_allclose(logits.reshape(-1)[sample_index(logits.size)], data[f"{name}/{key}/mask_logits"],
                                   rtol=0, atol=1e-5, err_msg=name)


def test_bad_folders_name_the_file(tmp_path):
    with pytest.raises(InputFileError, match="preprocessor_config.json"):
        Sam2Processing.from_folder(tmp_path)
    config = json.loads((FIXTURE / "preprocessor_config.json").read_text())
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({**config, "resample": 3}))
    with pytest.raises(ParamsError, match="preprocessor_config.json: resample 3"):
        Sam2Processing.from_folder(tmp_path)
    with pytest.raises(ValueError, match="RGB uint8"):
        PUBLISHED.pixel_values(np.zeros((4, 4), np.uint8))
