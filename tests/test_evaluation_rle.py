"""RLE validation before pycocotools sees prediction masks."""

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from pipeline.evaluation.rle_check import RleError, rle_problem, run_lengths


def _runs_of(mask: np.ndarray) -> np.ndarray:
    """Run lengths of a mask in column-major order, starting with a run of zeros."""
    flat = mask.flatten(order="F").astype(np.int8)
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate(([0], change, [flat.size]))
    runs = np.diff(bounds)
    return np.concatenate(([0], runs)) if flat[0] == 1 else runs


@pytest.mark.parametrize("seed", range(5))
def test_run_lengths_match_the_mask(seed):
    rng = np.random.default_rng(seed)
    for _ in range(40):
        h, w = rng.integers(1, 80, size=2)
        mask = rng.random((h, w)) < rng.random()
        rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
        np.testing.assert_array_equal(run_lengths(rle["counts"]), _runs_of(mask))
        assert rle_problem(rle, int(h), int(w)) is None


def test_large_runs_and_negative_deltas_decode():
    # A 480x640 image: one big object then a tiny one; deltas go far negative.
    mask = np.zeros((480, 640), bool)
    mask[10:400, 20:500] = True
    mask[450, 600] = True
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    np.testing.assert_array_equal(run_lengths(rle["counts"].decode()), _runs_of(mask))


def test_uncompressed_rle_is_checked():
    assert rle_problem({"size": [2, 3], "counts": [1, 4, 1]}, 2, 3) is None
    assert "cover 5 pixels" in rle_problem({"size": [2, 3], "counts": [1, 4]}, 2, 3)
    assert "non-negative" in rle_problem({"size": [2, 3], "counts": [7, -1]}, 2, 3)


def test_malformed_counts_are_reported():
    good = mask_utils.encode(np.asfortranarray(np.eye(6, dtype=np.uint8)))["counts"].decode()
    assert "truncated" in rle_problem({"size": [6, 6], "counts": good + "a"}, 6, 6)
    assert "alphabet" in rle_problem({"size": [6, 6], "counts": good[:-1] + "~"}, 6, 6)
    assert "cover" in rle_problem({"size": [6, 6], "counts": good[:-1]}, 6, 6)
    assert "differs from the image size" in rle_problem({"size": [6, 5], "counts": good}, 6, 6)
    assert "counts must be" in rle_problem({"size": [6, 6], "counts": 3}, 6, 6)
    with pytest.raises(RleError, match="negative run"):
        run_lengths("1O")  # second run = -1
