"""The attention simulator imitates the published properties of real VLM attention: shared sinks,
sparse evidence on the visible part, spill, head diversity, layer dependence; and what is made
from it is marked smoke."""

import numpy as np
import pytest

from pipeline.attention import maps as M
from pipeline.attention.params import ExtractParams
from pipeline.sampling import attention_simulator as S
from pipeline.sampling import synthetic

W, H = 672, 504


@pytest.fixture(scope="module")
def world():
    """Three scenes of 4 ellipses, simulated at a peak-depth layer, an early and a late one."""
    rng = np.random.default_rng(3)
    placement = synthetic.grid_placement(W, H, fine=(36, 48))
    params = S.SimulatorParams()
    layers = [1, 12, 30]  # 12 / 32 = 0.375, the default peak depth
    out = []
    for i in range(3):
        scene = synthetic.random_scene(rng, W, H, 4, first_id=10 * i)
        out.append((scene, S.simulate_image(scene, placement, params, layers, rng)))
    return placement, params, out


def _on(mask, placement):
    return S._tokens_on(mask, S.token_centres(placement))


def test_maps_are_softmax_image_shares(world):
    placement, params, sims = world
    for scene, sim in sims:
        for m in [*sim.target.values(), sim.generic]:
            assert m.shape == (3, params.num_heads, len(placement)) and m.dtype == np.float32
            assert (m >= 0).all()
            np.testing.assert_allclose(m.sum(-1), params.image_share, rtol=1e-4)


def test_sinks_are_the_same_tokens_for_every_prompt_and_take_their_share(world):
    placement, params, sims = world
    kinds = params.head_kinds()
    for scene, sim in sims:
        assert sim.sinks.size == params.n_sinks
        # the sinks sit on the background (no object covers their centre)
        on_object = np.zeros(len(placement), bool)
        for a in scene.amodal.values():
            on_object |= _on(a, placement)
        assert not on_object[sim.sinks].any()
        for m in [*sim.target.values(), sim.generic]:
            share = m[..., sim.sinks].sum(-1) / m.sum(-1)  # [L, H]
            ordinary = share[:, kinds != S.HEAD_SINK]
            assert 0.35 < ordinary.mean() < 0.75  # sink_share 0.6, jitter 0.1, plus diffuse mass
            assert share[:, kinds == S.HEAD_SINK].min() > 0.8
            # the sinks are the highest tokens of every ordinary head ...
            top = np.argsort(-m, axis=-1)[..., : params.n_sinks]
            assert np.mean([set(t) == set(sim.sinks) for t in top[:, kinds == S.HEAD_DIFFUSE].reshape(-1, params.n_sinks)]) > 0.9
        # ... with the same relative weights for the target and the generic prompt
        g = sim.generic[..., sim.sinks] / sim.generic[..., sim.sinks].sum(-1, keepdims=True)
        for m in sim.target.values():
            t = m[..., sim.sinks] / m[..., sim.sinks].sum(-1, keepdims=True)
            np.testing.assert_allclose(t, g, atol=0.05)


def test_evidence_is_sparse_on_the_visible_part_with_spill_onto_other_objects(world):
    placement, params, sims = world
    kinds = params.head_kinds()
    loc = kinds == S.HEAD_LOCALISING
    for scene, sim in sims:
        for g, m in sim.target.items():
            content = m[1][loc].mean(0)  # the peak-depth layer, localising heads
            content[sim.sinks] = 0
            vis = _on(scene.visible[g], placement)
            others = np.zeros_like(vis)
            for o in scene.visible:
                if o != g:
                    others |= _on(scene.visible[o], placement)
            background = ~(vis | others)
            # the target's own tokens are hottest, the other objects' (spill) next, background last
            assert content[vis].mean() > 1.5 * content[others & ~vis].mean()
            assert content[others & ~vis].mean() > 1.5 * content[background].mean()
            # sparse: the hot tenth of the visible tokens holds most of the visible mass
            v = np.sort(content[vis])[::-1]
            k = max(1, round(params.hot_fraction * v.size))
            assert v[:k].sum() > 0.6 * v.sum()


def test_generic_prompt_prefers_no_object(world):
    placement, _, sims = world
    for scene, sim in sims:
        m = sim.generic[1].mean(0)
        m[sim.sinks] = 0
        per_object = [m[_on(v, placement)].mean() for v in scene.visible.values() if _on(v, placement).any()]
        assert max(per_object) < 1.6 * min(per_object)


def test_heads_differ_and_middle_layers_localise_best(world):
    placement, params, sims = world
    kinds = params.head_kinds()
    assert (kinds == S.HEAD_LOCALISING).sum() >= 1 and (kinds == S.HEAD_SINK).sum() >= 1
    for scene, sim in sims:
        for g, m in sim.target.items():
            clean = M.remove_sink(m, sim.generic, 1e-6)
            ent = M.entropy(clean)  # [L, H]
            assert ent[1, kinds == S.HEAD_LOCALISING].max() < ent[1, kinds == S.HEAD_DIFFUSE].min()
            vis = _on(scene.visible[g], placement)
            on_target = (m[:, kinds == S.HEAD_LOCALISING][..., vis].sum(-1)).mean(1)  # [L]
            assert on_target[1] > on_target[0] and on_target[1] > on_target[2]
    assert params.depth_profile(12) == pytest.approx(1.0, abs=0.01)
    assert params.depth_profile(31) < 0.2


def test_sink_share_picks_out_sink_dominated_heads(world):
    _, params, sims = world
    kinds = params.head_kinds()
    for _, sim in sims:
        for m in sim.target.values():
            share = M.sink_share(m, sim.generic, level=20.0)
            assert share[:, kinds == S.HEAD_SINK].min() > 0.8 >= share[:, kinds != S.HEAD_SINK].max()
            clean = M.remove_sink(m, sim.generic, 1e-6)
            chosen = M.localization_heads(clean, share, k=2, max_share=0.8)
            assert (kinds[chosen[1]] == S.HEAD_LOCALISING).all()  # at the peak-depth layer
            assert (kinds[chosen] != S.HEAD_SINK).all()


def test_image_attention_runs_the_extract_maps_and_is_marked_smoke(world):
    placement, params, sims = world
    scene, sim = sims[0]
    extract = ExtractParams(layers=[1, 12, 30])
    layers = S.simulated_layers(params, extract)
    assert layers == [1, 12, 30]
    image = S.image_attention(sim, scene, placement, extract, image_id=5)
    assert set(image.instances) == set(scene.visible)
    g = next(iter(scene.visible))
    expected = M.instance_maps(sim.target[g], sink_heads=sim.generic, **extract.map_options())
    np.testing.assert_array_equal(image.instances[g].maps, expected.maps)
    assert image.instances[g].occluder_ids == scene.occluders[g]
    info = S.cache_info(params, extract)
    assert info.smoke is True and info.layers == layers and "simulated" in info.params


def test_simulator_parameters_are_checked():
    with pytest.raises(ValueError, match="sink_share"):
        S.SimulatorParams(sink_share=1.5)
    with pytest.raises(ValueError, match="localising_heads"):
        S.SimulatorParams(localising_heads=0.8, sink_heads=0.5)
    with pytest.raises(ValueError, match="num_heads"):
        S.SimulatorParams(num_heads=0)
    with pytest.raises(ValueError, match="hot_place"):
        S.SimulatorParams(hot_place="corners")
    with pytest.raises(ValueError, match="sink_place"):
        S.SimulatorParams(sink_place="sky")
    with pytest.raises(ValueError, match="occluder_spill"):
        S.SimulatorParams(occluder_spill=-1.0)


def _salient_tokens(scene, placement, params, g, rng_seed=0):
    """Tokens of the target's own evidence: its hot tokens at the peak-depth layer, localising
    heads, sinks cleared, with no spill (spill 0) so only the target's own evidence is hot."""
    sim = S.simulate_image(scene, placement, params, [12], np.random.default_rng(rng_seed))
    content = sim.target[g][0][params.head_kinds() == S.HEAD_LOCALISING].mean(0)
    content[sim.sinks] = 0
    vis = _on(scene.visible[g], placement)
    k = max(1, round(params.hot_fraction * vis.sum()))
    return np.argsort(-content)[:k], vis


@pytest.mark.parametrize("place", ["edges", "labels"])
def test_evidence_place_puts_the_hot_tokens_on_edges_or_one_patch(world, place):
    placement, _, sims = world
    centres = S.token_centres(placement)
    for scene, _ in sims:
        g = next(iter(scene.visible))
        texture = S.SimulatorParams(spill=0.0, noise=0.1)
        placed = S.SimulatorParams(spill=0.0, noise=0.1, hot_place=place)
        hot_t, vis = _salient_tokens(scene, placement, texture, g)
        hot_p, _ = _salient_tokens(scene, placement, placed, g)
        assert vis[hot_p].all()
        if place == "edges":
            edge = S._edge_tokens(scene.visible[g], placement, centres)
            assert edge[hot_p].all() and edge[vis].mean() < 0.7  # edges are a minority of the part
        else:
            def spread(idx):
                return np.linalg.norm(centres[idx] - centres[idx].mean(0), axis=1).mean()
            assert spread(hot_p) < 0.6 * spread(hot_t)


def test_occluder_spill_above_one_outshines_the_targets_own_evidence(world):
    placement, _, sims = world
    loc = S.SimulatorParams().head_kinds() == S.HEAD_LOCALISING
    seen = 0
    for scene, _ in sims:
        for g, occ in scene.occluders.items():
            if not occ:
                continue
            vis, occ_tokens = _on(scene.visible[g], placement), _on(scene.visible[occ[0]], placement)
            for spill, stronger in ((0.4, False), (2.0, True)):
                params = S.SimulatorParams(spill=0.0, occluder_spill=spill, noise=0.1)
                sim = S.simulate_image(scene, placement, params, [12], np.random.default_rng(0))
                content = sim.target[g][0][loc].mean(0)
                own, other = content[vis].max(), content[occ_tokens & ~vis].max()
                assert (other > own) == stronger
            seen += 1
    assert seen >= 2


def test_sink_place_and_residual(world):
    placement, _, sims = world
    scene, _ = sims[0]
    on_object = np.zeros(len(placement), bool)
    for a in scene.amodal.values():
        on_object |= _on(a, placement)
    sim = S.simulate_image(scene, placement, S.SimulatorParams(sink_place="objects"), [12], np.random.default_rng(0))
    assert on_object[sim.sinks].all()
    # residual: the sinks' relative weights differ between prompts, so removal leaves some
    for residual, differ in ((0.0, False), (0.5, True)):
        sim = S.simulate_image(scene, placement, S.SimulatorParams(sink_residual=residual), [12],
                               np.random.default_rng(0))
        g = sim.generic[..., sim.sinks] / sim.generic[..., sim.sinks].sum(-1, keepdims=True)
        t = next(iter(sim.target.values()))[..., sim.sinks]
        t = t / t.sum(-1, keepdims=True)
        assert (np.abs(t - g).max() > 0.1) == differ


def test_low_frequency_background_is_smooth_and_varies_per_prompt(world):
    placement, _, sims = world
    scene, _ = sims[0]
    centres = S.token_centres(placement)
    params = S.SimulatorParams(lowfreq=1.0)
    rng = np.random.default_rng(0)
    fields = [np.log(S._low_frequency(centres, np.hypot(W, H), params, rng)) for _ in range(2)]
    for f in fields:
        assert f.std() == pytest.approx(1.0, rel=1e-6)
        # smooth: neighbouring fine tokens (14 px apart) nearly agree
        fine = np.asarray(placement.view) == 1
        grid = f[fine].reshape(36, 48)
        assert np.abs(np.diff(grid, axis=1)).mean() < 0.1
    assert np.corrcoef(fields[0], fields[1])[0, 1] < 0.9
    diffuse = np.asarray(S.SimulatorParams().head_kinds()) == S.HEAD_DIFFUSE
    spread = []
    for p in (S.SimulatorParams(), params):
        sim = S.simulate_image(scene, placement, p, [12], np.random.default_rng(0))
        m = sim.generic[0][diffuse].mean(0)
        m[sim.sinks] = 0
        spread.append(m.std() / m.mean())
    assert spread[1] > 1.5 * spread[0]


def test_heavily_occluded_pairs_and_single_view_tokens():
    rng = np.random.default_rng(0)
    scene = synthetic.occluded_scene(rng, W, H, 2, first_id=10)
    backs = [g for g, o in scene.occluders.items() if o]
    assert len(backs) == 2
    for g in backs:
        share = scene.visible[g].sum() / scene.amodal[g].sum()
        assert 0.05 < share < 0.15
        assert scene.occluders[g] == [g + 1] and scene.visible[g + 1].all() == scene.amodal[g + 1].all()
    placement = synthetic.patch_placement(W, H, 32)
    assert len(placement) == 21 * 16 and set(np.asarray(placement.view).tolist()) == {0}
    rect = np.asarray(placement.rect)
    assert rect[:, 2].max() == W and rect[:, 3].max() == H
    assert ((rect[:, 2] - rect[:, 0]) * (rect[:, 3] - rect[:, 1])).sum() == W * H
