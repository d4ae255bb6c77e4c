"""Our EfficientSAM against the official implementation's outputs (reference golden.npz).

The weights are rebuilt from the official key list with the README's seeded recipe, saved as the
official checkpoints are (`{"model": state_dict}` in a .pt) and loaded strictly through our loader.
"""

import json

import numpy as np
import pytest
import torch

from pipeline.models.efficient_sam import load_efficient_sam, seeded_state_dict
from pipeline.models.efficient_sam.official_formulation import official_mask_decoder

TOLERANCE = 1e-4  # the reference README's expected agreement for an independent float32 implementation


@pytest.fixture(scope="module")
def reference(shared_reference):
    root = shared_reference / "efficient_sam"
    shapes = json.loads((root / "state_dict_shapes.json").read_text())
    golden = dict(np.load(root / "golden.npz"))
    return shapes, golden


@pytest.mark.parametrize("variant", ["vitt", "vits"])
def test_outputs_equal_official(variant, reference, tmp_path):
    shapes, golden = reference
    checkpoint = tmp_path / f"efficient_sam_{variant}.pt"
    torch.save({"model": seeded_state_dict(shapes[variant])}, checkpoint)
    model = load_efficient_sam(variant, checkpoint)

    image = torch.from_numpy(golden["image"]).permute(2, 0, 1)[None].float() / 255.0
    points = torch.from_numpy(golden["points"])
    labels = torch.from_numpy(golden["point_labels"])
    with torch.inference_mode():
        embedding = model.get_image_embeddings(image)
        masks, iou = model.predict_masks(embedding, points, labels, multimask_output=True, input_h=480, input_w=640)
        # the plain tiled formulation (the reference of the decoder's factored attention) too
        tokens = model.encode_prompts(points, labels, 480, 640)
        plain_masks, plain_iou = official_mask_decoder(model.mask_decoder, embedding, model.prompt_encoder.get_dense_pe(), tokens)
    plain_masks, plain_iou = plain_masks[:, 1:].reshape(masks.shape), plain_iou[:, 1:].reshape(iou.shape)

    for name, ours in [("image_embedding", embedding), ("low_res_masks", masks), ("iou_predictions", iou),
                       ("low_res_masks", plain_masks), ("iou_predictions", plain_iou)]:
        expected = golden[f"{variant}_{name}"]
        assert ours.shape == expected.shape, name
        np.testing.assert_allclose(ours.numpy(), expected, rtol=0, atol=TOLERANCE, err_msg=f"{variant} {name}")
