"""The attention cache layout: round trip, resume, and parameter isolation."""

import numpy as np
import pytest

from pipeline.attention import cache as ac


def _info(**params):
    return ac.CacheInfo(
        model_id="tiny", model_revision="", prompt_templates={"target": "{name}"},
        layers=[1, 2], params={"layers": [1, 2], **params}, smoke=True,
    )


def _image(image_id, n_tokens=6):
    rng = np.random.default_rng(image_id)
    placement = ac.TokenPlacement(
        view=np.zeros(n_tokens, np.int8), row=np.arange(n_tokens, dtype=np.int32) // 3,
        col=np.arange(n_tokens, dtype=np.int32) % 3,
        rect=rng.uniform(0, 10, (n_tokens, 4)).astype(np.float32),
    )
    inst = ac.InstanceAttention(
        gt_id=image_id * 10, category_name="cup", query_text="the cup", target_tokens=["cup"],
        maps=rng.random((2, n_tokens), dtype=np.float32), occluder_names=["plate"], occluder_ids=[3],
    )
    return ac.ImageAttention(image_id, 30, 20, placement, {inst.gt_id: inst}, '{"a": 1}', "raw", "")


def test_round_trip_and_resume(tmp_path):
    path = tmp_path / "attention.h5"
    w = ac.AttentionCacheWriter(path, _info())
    w.write_image(_image(1))
    # a second writer with the same params resumes; with other params it starts over
    assert ac.AttentionCacheWriter(path, _info()).done_image_ids() == {1}
    w2 = ac.AttentionCacheWriter(path, _info())
    w2.write_image(_image(2))
    w2.finalize([2, 1])
    assert not w2.parts_dir.exists()
    images = list(ac.iter_images(path))
    assert [im.image_id for im in images] == [2, 1]
    expected = _image(1)
    got = ac.read_image(path, 1)
    np.testing.assert_array_equal(got.instances[10].maps, expected.instances[10].maps)
    np.testing.assert_array_equal(got.placement.rect, expected.placement.rect)
    assert got.instances[10].occluder_ids == [3] and got.occlusion_json == '{"a": 1}'
    info = ac.read_info(path)
    assert info.smoke is True and info.layers == [1, 2]


def test_reading_without_the_words_keeps_everything_sampling_reads(tmp_path):
    path = tmp_path / "attention.h5"
    w = ac.AttentionCacheWriter(path, _info())
    w.write_image(_image(1))
    w.finalize([1])
    full = ac.read_image(path, 1)
    (lean,) = ac.read_images(path, [1], with_words=False)
    for field in ("view", "row", "col", "rect"):
        got, want = getattr(lean.placement, field), getattr(full.placement, field)
        assert got.dtype == want.dtype and np.array_equal(got, want)
    assert (lean.image_id, lean.width, lean.height) == (full.image_id, full.width, full.height)
    a, b = lean.instances[10], full.instances[10]
    assert a.maps.dtype == np.float32 and np.array_equal(a.maps, b.maps)
    assert (a.occluder_ids, a.fallback) == (b.occluder_ids, b.fallback) == ([3], "")
    assert (a.category_name, a.query_text, a.target_tokens, a.occluder_names) == (None, None, None, None)
    assert (lean.occlusion_json, lean.occlusion_raw, lean.occlusion_error) == (None, None, None)
    assert (b.category_name, b.target_tokens, full.occlusion_raw) == ("cup", ["cup"], "raw")


def test_changed_params_discard_parts(tmp_path):
    path = tmp_path / "attention.h5"
    ac.AttentionCacheWriter(path, _info()).write_image(_image(1))
    assert ac.AttentionCacheWriter(path, _info(sink=True)).done_image_ids() == set()


def test_finalize_refuses_missing_images_and_missing_file_is_clear(tmp_path):
    path = tmp_path / "attention.h5"
    w = ac.AttentionCacheWriter(path, _info())
    with pytest.raises(ac.CacheFormatError, match="not extracted"):
        w.finalize([5])
    with pytest.raises(ac.CacheFormatError, match="not found"):
        ac.read_info(path)


def test_merge_from_parts_alone_and_refusal_of_other_parameters(tmp_path):
    """`merge_parts` without the run's info (`vlmsam merge`) writes the bytes `finalize` writes;
    a part of other parameters is never merged."""
    a, b = tmp_path / "a.h5", tmp_path / "b.h5"
    for path in (a, b):
        w = ac.AttentionCacheWriter(path, _info())
        w.write_image(_image(1))
        w.write_image(_image(2))
    ac.AttentionCacheWriter(a, _info()).finalize([1, 2])
    ac.merge_parts(b, [1, 2])
    assert a.read_bytes() == b.read_bytes()

    path = tmp_path / "mixed.h5"
    ac.AttentionCacheWriter(path, _info()).write_image(_image(1))
    stale = (ac.parts_dir(path) / "1.h5").read_bytes()
    ac.AttentionCacheWriter(path, _info(sink=True)).write_image(_image(2))  # discards part 1
    (ac.parts_dir(path) / "1.h5").write_bytes(stale)  # a stale part slipped in afterwards
    with pytest.raises(ac.CacheFormatError, match="part of other parameters"):
        ac.merge_parts(path, [2, 1])
    assert not path.exists() and ac.missing_parts(path, [1, 2, 3]) == [3]
