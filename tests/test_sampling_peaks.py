"""The sampler's peak finder equals skimage's peak_local_max with the same footprint."""

import numpy as np
import pytest
from skimage.feature import peak_local_max

from pipeline.sampling.points import CANDIDATES_PER_POINT, _peaks


def _reference(n, min_distance, threshold, wanted):
    valid = np.isfinite(n)
    size = 2 * min_distance + 1
    rc = peak_local_max(np.where(valid, n, -1.0), min_distance=1, footprint=np.ones((size, size), bool),
                        threshold_abs=threshold, exclude_border=False,
                        num_peaks=CANDIDATES_PER_POINT * max(wanted, 1))
    return rc[valid[rc[:, 0], rc[:, 1]]] if rc.size else rc.reshape(0, 2)


def _maps():
    rng = np.random.default_rng(11)
    for dtype in (np.float32, np.float64):
        for shape in [(64, 64), (37, 64), (64, 5), (1, 40), (3, 3)]:
            for _ in range(8):
                m = rng.random(shape).astype(dtype)
                yield m
                q = (np.round(m * 4) / 4).astype(dtype)  # plateaus and ties
                q[rng.random(shape) < 0.2] = np.nan
                yield q
        yield np.full((20, 30), 0.5, dtype)  # constant: no peak
        yield np.array([[0.7]], dtype)  # one cell: a peak when above the threshold
        yield np.full((8, 8), np.nan, dtype)


@pytest.mark.parametrize("min_distance, threshold, wanted", [(1, 0.0, 1), (3, 0.3, 2), (10, 0.5, 4), (9, 0.05, 8)])
def test_peaks_equal_peak_local_max(min_distance, threshold, wanted):
    count = 0
    for m in _maps():
        got = _peaks(m, min_distance, threshold, wanted)
        np.testing.assert_array_equal(got, _reference(m, min_distance, threshold, wanted))
        count += len(got)
    assert count > 100  # the maps do have peaks
