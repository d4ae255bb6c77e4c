"""EfficientSAM model: official state-dict layout, checkpoint loading, prompt handling, second decoder."""

import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from pipeline.models.efficient_sam import (
    DECODER_MAX_NUM_INPUT_POINTS,
    CheckpointError,
    EfficientSam,
    MaskDecoder,
    build_efficient_sam,
    build_mask_decoder,
    build_seeded_efficient_sam,
    load_efficient_sam,
    load_mask_decoder,
)
from pipeline.models.efficient_sam.official_formulation import official_mask_decoder, official_two_way_transformer

PREFIX = "mask_decoder."


@pytest.fixture(scope="module")
def official_shapes(shared_reference):
    return json.loads((shared_reference / "efficient_sam" / "state_dict_shapes.json").read_text())


@pytest.fixture(scope="module")
def model():
    return build_seeded_efficient_sam("vitt")


@pytest.fixture(scope="module")
def embedding():
    return torch.randn(2, 256, 64, 64, generator=torch.Generator().manual_seed(0))


def _shapes(module):
    return {k: list(v.shape) for k, v in module.state_dict().items()}


@pytest.mark.parametrize("variant", ["vitt", "vits"])
def test_state_dict_equals_official_keys_and_shapes(variant, official_shapes):
    model = build_efficient_sam(variant)
    assert _shapes(model) == official_shapes[variant]
    assert not model.training


def test_unknown_variant_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown EfficientSAM variant 'vitb'"):
        build_efficient_sam("vitb")


@pytest.mark.parametrize("wrapped", [True, False])
def test_pt_checkpoint_loads_strict_with_weights_only(model, tmp_path, wrapped):
    path = tmp_path / "efficient_sam_vitt.pt"
    state = model.state_dict()
    torch.save({"model": state} if wrapped else state, path)
    loaded = load_efficient_sam("vitt", path)
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_safetensors_round_trip(model, tmp_path):
    path = tmp_path / "efficient_sam_vitt.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    loaded = load_efficient_sam("vitt", path)
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, model.state_dict()[key]), key


def test_checkpoint_errors_name_the_file(model, tmp_path):
    missing = tmp_path / "nowhere.pt"
    with pytest.raises(CheckpointError, match="nowhere.pt.*not found"):
        load_efficient_sam("vitt", missing)

    vits_state = build_efficient_sam("vits").state_dict()
    wrong_variant = tmp_path / "vits_as_vitt.pt"
    torch.save({"model": vits_state}, wrong_variant)
    with pytest.raises(CheckpointError, match=r"vits_as_vitt.pt.*wrong shape.*image_encoder"):
        load_efficient_sam("vitt", wrong_variant)

    state = dict(model.state_dict())
    state.pop("prompt_encoder.invalid_points.weight")
    state["extra.weight"] = torch.zeros(1)
    wrong_keys = tmp_path / "wrong_keys.pt"
    torch.save(state, wrong_keys)
    with pytest.raises(CheckpointError, match=r"wrong_keys.pt.*1 missing keys \[prompt_encoder.invalid_points.weight\].*extra.weight"):
        load_efficient_sam("vitt", wrong_keys)

    not_a_state_dict = tmp_path / "list.pt"
    torch.save([torch.zeros(1)], not_a_state_dict)
    with pytest.raises(CheckpointError, match="list.pt.*state dict"):
        load_efficient_sam("vitt", not_a_state_dict)

    unknown_format = tmp_path / "weights.bin"
    unknown_format.write_bytes(b"\0")
    with pytest.raises(CheckpointError, match="weights.bin.*unknown checkpoint format"):
        load_efficient_sam("vitt", unknown_format)


def test_mask_decoder_keys_are_the_official_decoder_keys(official_shapes):
    expected = {k[len(PREFIX):]: v for k, v in official_shapes["vitt"].items() if k.startswith(PREFIX)}
    assert _shapes(build_mask_decoder()) == expected
    assert expected == {k[len(PREFIX):]: v for k, v in official_shapes["vits"].items() if k.startswith(PREFIX)}


@pytest.mark.parametrize("prefixed", [True, False])
def test_load_mask_decoder_with_or_without_prefix(model, tmp_path, prefixed):
    decoder_state = model.mask_decoder.state_dict()
    stored = {(PREFIX + k if prefixed else k): v for k, v in decoder_state.items()}
    path = tmp_path / "amodal_decoder.pt"
    torch.save(stored, path)
    decoder = load_mask_decoder(path)
    assert isinstance(decoder, MaskDecoder) and not decoder.training
    for key, value in decoder.state_dict().items():
        assert torch.equal(value, decoder_state[key])


def test_load_mask_decoder_rejects_other_state_dicts(model, tmp_path):
    whole = tmp_path / "efficient_sam_vitt.pt"
    torch.save({"model": model.state_dict()}, whole)
    with pytest.raises(CheckpointError, match="efficient_sam_vitt.pt.*unexpected keys.*image_encoder"):
        load_mask_decoder(whole)

    state = dict(model.mask_decoder.state_dict())
    state["iou_prediction_head.fc.weight"] = torch.zeros(5, 256)
    bad_shape = tmp_path / "bad_shape.safetensors"
    save_file(state, str(bad_shape))
    with pytest.raises(CheckpointError, match=r"bad_shape.safetensors.*iou_prediction_head.fc.weight \(5, 256\)"):
        load_mask_decoder(bad_shape)


def _prompts(batch=1):
    """Two queries per image: a positive and a negative point; a box."""
    points = torch.tensor([[[[100.0, 50.0], [30.0, 40.0]], [[10.0, 200.0], [300.0, 220.0]]]])
    labels = torch.tensor([[[1, 0], [2, 3]]])
    return points.expand(batch, -1, -1, -1), labels.expand(batch, -1, -1)


def test_second_decoder_runs_on_the_same_prompt_tokens(model, embedding):
    embedding = embedding[:1]
    points, labels = _prompts()
    other = build_mask_decoder()
    with torch.inference_mode():
        tokens = model.encode_prompts(points, labels, input_h=240, input_w=320)
        assert tokens.shape == (1, 2, DECODER_MAX_NUM_INPUT_POINTS, 256)
        own = model.predict_masks(embedding, points, labels, True, 240, 320)
        own_via_tokens = model.decode(embedding, tokens, True)
        via_other = model.decode(embedding, tokens, True, mask_decoder=other)
        expected_other = other(embedding, model.prompt_encoder.get_dense_pe(), tokens, True)
    torch.testing.assert_close(own_via_tokens, own, rtol=0, atol=0)
    torch.testing.assert_close(via_other, expected_other, rtol=0, atol=0)
    assert (via_other[0] - own[0]).abs().max() > 1e-2  # a different decoder gives different masks


def test_output_shapes_and_upsampling(model, embedding):
    points, labels = _prompts(batch=2)
    with torch.inference_mode():
        low, iou = model.predict_masks(embedding, points, labels, True, 240, 320)
        single, single_iou = model.predict_masks(embedding, points, labels, False, 240, 320)
        full, full_iou = model.predict_masks(embedding, points, labels, True, 240, 320, output_h=240, output_w=320)
    assert low.shape == (2, 2, 3, 256, 256) and iou.shape == (2, 2, 3)
    assert single.shape == (2, 2, 1, 256, 256) and single_iou.shape == (2, 2, 1)
    assert full.shape == (2, 2, 3, 240, 320)
    torch.testing.assert_close(full_iou, iou, rtol=0, atol=0)
    expected = F.interpolate(low.reshape(4, 3, 256, 256), (240, 320), mode="bicubic").reshape(2, 2, 3, 240, 320)
    torch.testing.assert_close(full, expected, rtol=0, atol=1e-6)


def test_queries_and_images_are_independent(model, embedding):
    points, labels = _prompts(batch=2)
    with torch.inference_mode():
        batched, batched_iou = model.predict_masks(embedding, points, labels, True, 240, 320)
        alone, alone_iou = model.predict_masks(embedding[1:], points[1:, 1:], labels[1:, 1:], True, 240, 320)
    torch.testing.assert_close(batched[1:, 1:], alone, rtol=0, atol=1e-5)
    torch.testing.assert_close(batched_iou[1:, 1:], alone_iou, rtol=0, atol=1e-5)


def test_decoder_equals_the_official_tiled_formulation(model, embedding):
    """Shared image tokens projected once per image and per-query image tokens never projected
    (see token_image_attention) give the official numbers up to float rounding."""
    decoder = model.mask_decoder
    tokens = torch.randn(2, 3, 6, 256, generator=torch.Generator().manual_seed(1))
    pe = model.prompt_encoder.get_dense_pe()
    with torch.inference_mode():
        ours_hs, ours_src = decoder.transformer(embedding, pe, decoder.with_output_tokens(tokens))
        official_hs, official_src = official_two_way_transformer(
            decoder.transformer, embedding.repeat_interleave(3, dim=0), pe, decoder.with_output_tokens(tokens).flatten(0, 1)
        )
        ours = decoder(embedding, pe, tokens, multimask_output=True)
        official_masks, official_iou = official_mask_decoder(decoder, embedding, pe, tokens)
    assert ours_src.shape == (2, 3, 64 * 64, 256)
    torch.testing.assert_close(ours_hs.flatten(0, 1), official_hs, rtol=0, atol=2e-5)
    torch.testing.assert_close(ours_src.flatten(0, 1), official_src, rtol=0, atol=2e-5)
    torch.testing.assert_close(ours[0], official_masks[:, 1:].reshape(2, 3, 3, 256, 256), rtol=0, atol=2e-5)
    torch.testing.assert_close(ours[1], official_iou[:, 1:].reshape(2, 3, 3), rtol=0, atol=2e-5)


def test_point_rescaling_padding_and_official_cut(model, embedding):
    scaled = EfficientSam.rescale_points(torch.tensor([[[[320.0, 120.0], [-1.0, 5.0], [0.0, -3.0]]]]), 240, 640)
    torch.testing.assert_close(scaled, torch.tensor([[[[512.0, 512.0], [-1.0, 1024 * 5 / 240], [0.0, -1.0]]]]))

    embedding = embedding[:1]
    points, labels = _prompts()
    padded_points = torch.cat([points, torch.full((1, 2, 2, 2), -1.0)], dim=2)
    padded_labels = torch.cat([labels, torch.full((1, 2, 2), -1, dtype=labels.dtype)], dim=2)
    seven_points = torch.cat([padded_points, padded_points[:, :, :3] + 7.0], dim=2)
    seven_labels = torch.cat([padded_labels, torch.ones(1, 2, 3, dtype=labels.dtype)], dim=2)
    with torch.inference_mode():
        plain = model.predict_masks(embedding, points, labels, True, 240, 320)
        padded = model.predict_masks(embedding, padded_points, padded_labels, True, 240, 320)
        first_six = model.predict_masks(embedding, seven_points[:, :, :6], seven_labels[:, :, :6], True, 240, 320)
        with pytest.warns(UserWarning, match="7 prompt points.*first 6"):
            cut = model.predict_masks(embedding, seven_points, seven_labels, True, 240, 320)
    torch.testing.assert_close(padded, plain, rtol=0, atol=0)
    torch.testing.assert_close(cut, first_six, rtol=0, atol=0)


def test_image_input_checks(model):
    with pytest.raises(ValueError, match="float"):
        model.get_image_embeddings(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        model.get_image_embeddings(torch.full((1, 3, 32, 32), 255.0))
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        model.get_image_embeddings(torch.zeros(3, 32, 32))


def test_forward_is_embedding_then_multimask_prediction_at_input_size(model, monkeypatch):
    image = torch.rand(1, 3, 120, 200, generator=torch.Generator().manual_seed(1))
    points, labels = _prompts()
    seen = []
    real_embeddings = model.get_image_embeddings

    def spy(images):
        seen.append((images, real_embeddings(images)))
        return seen[-1][1]

    monkeypatch.setattr(model, "get_image_embeddings", spy)
    with torch.inference_mode():
        masks, iou = model(image, points, labels)
        assert len(seen) == 1 and seen[0][0] is image
        expected = model.predict_masks(seen[0][1], points, labels, True, 120, 200, 120, 200)
    assert seen[0][1].shape == (1, 256, 64, 64)
    assert masks.shape == (1, 2, 3, 120, 200)
    torch.testing.assert_close((masks, iou), expected, rtol=0, atol=0)

