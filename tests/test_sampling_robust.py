"""The positive rules (sample.contrast, pos_margin, snap) on simulated attention whose truth is
known: in worlds where the earlier rules put positives off the visible part (coarse 28-px
tokens, look-alikes with strong spill, evidence on the edges of the visible part), the new
defaults keep them on it."""

from pathlib import Path

import numpy as np
import pytest

from pipeline.attention.params import ExtractParams
from pipeline.sampling import attention_simulator as S
from pipeline.sampling import synthetic
from pipeline.sampling.params import SampleParams
from pipeline.sampling.run import LayerChoice, sample_image

W, H = 672, 504
BEFORE = SampleParams(pos_margin=0.0, contrast="occluders", snap=False)


def _positives_in_visible(sim_params, placement, params_list, n_images=6, seed=0):
    extract = ExtractParams()
    layers = S.simulated_layers(sim_params, extract)
    rng = np.random.default_rng(seed)
    counts = np.zeros((len(params_list), 3))
    for image_id in range(1, n_images + 1):
        scene = synthetic.random_scene(rng, W, H, 4, first_id=10 * image_id)
        record = synthetic.scene_record(scene, image_id, Path("unused"))
        sim = S.simulate_image(scene, placement, sim_params, layers, rng)
        image = S.image_attention(sim, scene, placement, extract, image_id)
        choice = LayerChoice(list(range(len(layers))), np.ones(len(layers)))
        for k, params in enumerate(params_list):
            for gt, pts in sample_image(image, record, params, choice).items():
                pos = pts.label == 1
                on = scene.visible[gt][pts.y[pos].astype(int), pts.x[pos].astype(int)]
                counts[k] += [on.sum(), pos.sum(), bool(pts.fallback)]
    return counts[:, 0] / counts[:, 1], counts[:, 2]


@pytest.mark.parametrize("world", [
    pytest.param((S.SimulatorParams(), 28), id="28-px tokens"),
    pytest.param((S.SimulatorParams(spill=0.7), None), id="same-class spill 0.7"),
    pytest.param((S.SimulatorParams(hot_place="edges"), None), id="evidence on edges"),
])
def test_new_positive_rules_stay_on_the_visible_part_where_the_old_ones_did_not(world):
    sim_params, side = world
    placement = synthetic.patch_placement(W, H, side) if side else synthetic.grid_placement(W, H, fine=(36, 48))
    (before, after), fallbacks = _positives_in_visible(sim_params, placement, [BEFORE, SampleParams()])
    assert after >= 0.9 and after >= before + 0.03, (before, after)
    assert fallbacks[1] <= 4  # of 24 instances: vetoed instances fall back, and are counted


def test_spill_above_the_targets_own_evidence_is_vetoed_to_the_counted_fallback():
    """Look-alikes whose spill outshines the target's own evidence (spill 1.2): the target's map
    is above its own evidence on every look-alike, the rivals' maps above the target's on its
    own: every candidate is vetoed and the instance falls back to its box centre."""
    placement = synthetic.grid_placement(W, H, fine=(36, 48))
    _, fallbacks = _positives_in_visible(S.SimulatorParams(spill=1.2), placement, [SampleParams()], n_images=3)
    assert fallbacks[0] >= 10  # of 12
