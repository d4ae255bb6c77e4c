"""Target maps from captured rows: column selection, head aggregation, sink removal, flags."""

import numpy as np
import pytest
import torch

from pipeline.attention import maps as M


def _softmax_rows(rng, shape):
    x = rng.normal(0, 2, shape)
    e = np.exp(x - x.max(-1, keepdims=True))
    return (e / e.sum(-1, keepdims=True)).astype(np.float32)


def test_image_token_rows_selects_kept_image_columns_in_order():
    rng = np.random.default_rng(0)
    H, R, K = 3, 2, 30
    captured = {4: torch.from_numpy(_softmax_rows(rng, (H, R, K))), 7: torch.from_numpy(_softmax_rows(rng, (H, R, K)))}
    positions = np.arange(5, 17)
    keep = np.ones(12, bool)
    keep[[3, 7, 11]] = False  # newline tokens
    out = M.image_token_rows(captured, [7, 4], positions, keep)
    assert out.shape == (2, H, R, 9)
    np.testing.assert_array_equal(out[0], captured[7].numpy()[..., positions[keep]])
    np.testing.assert_array_equal(out[1], captured[4].numpy()[..., positions[keep]])
    with pytest.raises(KeyError, match="layer 5 was not captured"):
        M.image_token_rows(captured, [5], positions, keep)
    with pytest.raises(ValueError, match="keep mask has 11 entries"):
        M.image_token_rows(captured, [4], positions, keep[:11])


def test_mean_aggregation_is_mean_over_heads_and_rows_and_sums_at_most_one():
    rng = np.random.default_rng(1)
    rows = _softmax_rows(rng, (2, 4, 3, 40))  # [L, H, R, K]
    captured = {0: rows[0], 1: rows[1]}
    positions = np.arange(10, 30)
    heads = M.head_maps(captured, [0, 1], positions, np.ones(20, bool))
    res = M.instance_maps(heads, aggregation="mean")
    np.testing.assert_allclose(res.maps, rows[:, :, :, 10:30].mean((1, 2)), rtol=1e-6)
    assert res.maps.dtype == np.float32 and np.all(res.maps >= 0)
    assert np.all(res.maps.sum(-1) <= 1 + 1e-6)
    # row subset: only the chosen captured rows are averaged
    sub = M.head_maps(captured, [0], positions, np.ones(20, bool), rows=[2])
    np.testing.assert_allclose(sub[0], rows[0, :, 2, 10:30], rtol=1e-6)


def test_lowest_entropy_picks_the_most_concentrated_heads():
    T = 16
    uniform = np.full(T, 1 / T)
    peaked = np.full(T, 0.01 / (T - 1))
    peaked[5] = 0.99
    mid = np.full(T, 0.5 / (T - 2))
    mid[[5, 6]] = 0.25
    heads = np.stack([uniform, peaked, mid, uniform])[None].astype(np.float32)  # [1, 4, T]
    ent = M.entropy(heads)[0]
    assert ent[1] < ent[2] < ent[0] == pytest.approx(np.log(T))
    np.testing.assert_allclose(M.aggregate_heads(heads, "lowest_entropy", 1)[0], peaked, rtol=1e-6)
    np.testing.assert_allclose(M.aggregate_heads(heads, "lowest_entropy", 2)[0], (peaked + mid) / 2, rtol=1e-6)
    # k beyond the head count = all heads
    np.testing.assert_allclose(M.aggregate_heads(heads, "lowest_entropy", 9), M.aggregate_heads(heads, "mean", 0))
    # an all-zero head is never chosen as most concentrated
    zero = np.concatenate([np.zeros((1, 1, T), np.float32), heads], 1)
    np.testing.assert_allclose(M.aggregate_heads(zero, "lowest_entropy", 1)[0], peaked, rtol=1e-6)


def test_sink_removal_divides_by_generic_map_and_keeps_the_sum():
    rng = np.random.default_rng(2)
    T = 12
    sink = rng.uniform(0.01, 0.1, (1, 2, T)).astype(np.float32)
    sink[..., 0] = 0.5  # an attention sink token
    target = sink * rng.uniform(0.5, 1.5, (1, 2, T)).astype(np.float32)
    target[..., 7] += 0.05  # the object
    out = M.remove_sink(target, sink, 1e-6)
    np.testing.assert_allclose(out.sum(-1), target.sum(-1), rtol=1e-5)
    ratio = target / (sink + 1e-6)
    np.testing.assert_allclose(out / out.sum(-1, keepdims=True), ratio / ratio.sum(-1, keepdims=True), rtol=1e-5)
    assert np.argmax(out[0, 0]) == 7 and np.argmax(target[0, 0]) == 0
    # division by ~0 is guarded by epsilon: finite output
    assert np.all(np.isfinite(M.remove_sink(target, np.zeros_like(sink), 1e-6)))
    res = M.instance_maps(target, sink_heads=sink, sink_epsilon=1e-6)
    np.testing.assert_allclose(res.heads, out, rtol=1e-6)


def test_fallback_flags():
    T = 20
    peaked = np.full((2, T), 0.01, np.float32)
    peaked[:, 3] = 0.5
    assert M.fallback_flag(peaked, 1.5) == ""
    assert M.fallback_flag(np.full((2, T), 0.05, np.float32), 1.5) == M.FALLBACK_FLAT
    assert M.fallback_flag(np.zeros((2, T), np.float32), 1.5) == M.FALLBACK_FLAT
    nan = peaked.copy()
    nan[1, 2] = np.nan
    assert M.fallback_flag(nan, 1.5) == M.FALLBACK_NAN
    # threshold is on max/mean of the layer-mean map
    m = np.full((1, T), 1.0, np.float32)
    for ratio, flag in ((1.49, M.FALLBACK_FLAT), (1.51, "")):
        m[0, 0] = ratio * (T - 1) / (T - ratio)  # one peak with max/mean == ratio
        assert m.max() / m.mean() == pytest.approx(ratio, rel=1e-5)
        assert M.fallback_flag(m, 1.5) == flag


def test_subtraction_keeps_the_positive_excess_over_the_generic_map():
    generic = np.array([[[0.5, 0.1, 0.1, 0.3]]], np.float32)  # [1, 1, T]: token 0 is a sink
    target = np.array([[[0.45, 0.4, 0.05, 0.1]]], np.float32)
    out = M.remove_sink(target, generic, 1e-6, method="subtract", weight=1.0)
    # only token 1 rises above the generic map; the map keeps its sum
    np.testing.assert_allclose(out[0, 0], [0.0, 1.0, 0.0, 0.0], atol=1e-6)
    half = M.remove_sink(target, generic, 1e-6, method="subtract", weight=0.5)
    assert half[0, 0, 0] > 0 and half[0, 0, 1] > half[0, 0, 0]
    with pytest.raises(ValueError, match="unknown sink removal method"):
        M.remove_sink(target, generic, 1e-6, method="divide")


def test_localization_drops_sink_dominated_heads_before_ranking_by_entropy():
    T = 40
    generic = np.full((1, 3, T), 0.5 / T, np.float32)
    generic[..., 0] = 0.5  # one sink token, the same for every head
    target = np.full((1, 3, T), 0.2 / T, np.float32)
    target[0, 0] = 0.02 / T
    target[0, 0, 0] = 0.9  # head 0: almost all on the sink
    target[0, 0, 7] = 0.05  # ... and a concentrated remainder: lowest entropy after removal
    target[0, 1, [0, 5, 6]] = [0.3, 0.25, 0.25]  # head 1: the sink share is moderate, evidence on 5-6
    target[0, 2, 0] = 0.3  # head 2: diffuse besides the sink
    share = M.sink_share(target, generic, level=20.0)
    assert share[0, 0] > 0.8 > share[0, 1]
    res = M.instance_maps(target, aggregation="localization", k=1, sink_heads=generic, max_sink_share=0.8)
    clean = M.remove_sink(target, generic, 1e-6)
    np.testing.assert_allclose(res.maps[0], clean[0, 1], rtol=1e-6)  # head 1, not the sink head 0
    # with every head over the limit, the heads with the lowest sink share are kept
    res_all = M.instance_maps(target, aggregation="localization", k=1, sink_heads=generic, max_sink_share=0.01)
    np.testing.assert_allclose(res_all.maps[0], clean[0, int(np.argmin(share[0]))], rtol=1e-6)
    with pytest.raises(ValueError, match="needs the heads chosen"):
        M.aggregate_heads(target, "localization", 1)
