"""Checkpoint lookup: EfficientSAM search order, clear errors, VLMs in a (fake) hub cache, `vlmsam weights`."""

import json

import pytest
import torch
import typer
from typer.testing import CliRunner

import pipeline.weights as weights
from pipeline.cli import app
from pipeline.models.efficient_sam import build_seeded_efficient_sam, load_efficient_sam
from pipeline.weights import MissingWeightsError, resolve_efficient_sam, weights_status, weights_status_for_models

LLAVA_NEXT = "llava-hf/llava-v1.6-mistral-7b-hf"
LLAVA_15 = "llava-hf/llava-1.5-7b-hf"


@pytest.fixture
def places(tmp_path, monkeypatch):
    """Empty env, project and user-cache folders, wired into the search order."""
    env, project, home = tmp_path / "env", tmp_path / "project_weights", tmp_path / "home"
    for d in (env, project, home):
        d.mkdir()
    monkeypatch.setenv(weights.WEIGHTS_DIR_ENV, str(env))
    monkeypatch.setattr(weights, "PROJECT_WEIGHTS_DIR", project)
    monkeypatch.setenv("HOME", str(home))
    cache = home / ".cache" / "vlmsam"
    cache.mkdir(parents=True)
    return {"env": env, "project": project, "cache": cache, "tmp": tmp_path}


def _touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def test_search_order_explicit_env_project_user_cache(places):
    in_cache = _touch(places["cache"] / "efficient_sam_vitt.pt")
    assert resolve_efficient_sam("vitt") == in_cache
    in_project = _touch(places["project"] / "efficient_sam_vitt.pt")
    assert resolve_efficient_sam("vitt") == in_project
    in_env = _touch(places["env"] / "efficient_sam_vitt.pt")
    assert resolve_efficient_sam("vitt") == in_env
    explicit = _touch(places["tmp"] / "elsewhere" / "my_vitt.pt")
    assert resolve_efficient_sam("vitt", explicit) == explicit
    assert resolve_efficient_sam("vitt", explicit.parent.parent / "env") == in_env  # a folder holding it
    # the variants do not mix
    with pytest.raises(MissingWeightsError, match="efficient_sam_vits.pt"):
        resolve_efficient_sam("vits")


def test_unset_env_skips_that_folder_and_safetensors_is_accepted(places, monkeypatch):
    monkeypatch.delenv(weights.WEIGHTS_DIR_ENV)
    _touch(places["env"] / "efficient_sam_vits.pt")
    converted = _touch(places["cache"] / "efficient_sam_vits.safetensors")
    assert weights.efficient_sam_search_dirs() == [places["project"], places["cache"]]
    assert resolve_efficient_sam("vits") == converted


def test_missing_checkpoint_says_what_and_where(places):
    with pytest.raises(MissingWeightsError) as err:
        resolve_efficient_sam("vitt")
    message = str(err.value)
    for expected in ("efficient_sam_vitt.pt", "github.com/yformer/EfficientSAM/raw/main/weights/efficient_sam_vitt.pt",
                     str(places["env"]), str(places["project"]), str(places["cache"]), "VLMSAM_WEIGHTS_DIR"):
        assert expected in message
    with pytest.raises(MissingWeightsError, match=r"efficient_sam_vits.pt.zip \(unzip"):
        resolve_efficient_sam("vits")


def test_missing_explicit_path_is_an_error_even_when_found_elsewhere(places):
    _touch(places["env"] / "efficient_sam_vitt.pt")
    with pytest.raises(MissingWeightsError, match=r"models.efficient_sam.checkpoint = .*typo.pt does not exist"):
        resolve_efficient_sam("vitt", places["tmp"] / "typo.pt")


def test_zipped_vits_gives_an_unzip_hint(places):
    _touch(places["project"] / "efficient_sam_vits.pt.zip")
    with pytest.raises(MissingWeightsError, match=r"found .*efficient_sam_vits.pt.zip: unzip it in place"):
        resolve_efficient_sam("vits")


def test_resolved_checkpoint_loads(places):
    model = build_seeded_efficient_sam("vitt")
    torch.save({"model": model.state_dict()}, places["env"] / "efficient_sam_vitt.pt")
    loaded = load_efficient_sam("vitt", resolve_efficient_sam("vitt"))
    assert torch.equal(loaded.image_encoder.pos_embed, model.image_encoder.pos_embed)


def _cache_model(cache_dir, model_id, shards=("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors")):
    """A hub-cache layout: refs/main -> snapshots/<commit>/{config.json, index, shards}."""
    repo = cache_dir / ("models--" + model_id.replace("/", "--"))
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    index = {"metadata": {}, "weight_map": {f"w{i}": s for i, s in enumerate(shards)}}
    (snapshot / "model.safetensors.index.json").write_text(json.dumps(index))
    for s in shards:
        (snapshot / s).write_bytes(b"x")
    return snapshot


def _by_name(rows):
    return {r.name: r for r in rows}


def test_status_lists_everything_and_finds_cached_vlms(places):
    hub = places["tmp"] / "hub"
    snapshot = _cache_model(hub, LLAVA_NEXT)
    partial = _cache_model(hub, LLAVA_15)
    (partial / "model-00002-of-00002.safetensors").unlink()
    _touch(places["project"] / "efficient_sam_vitt.pt")

    rows = _by_name(weights_status(hf_cache_dir=hub))
    segmenters = {n for n in rows if n.startswith("segmenter ")}
    assert "segmenter sam facebook/sam-vit-huge" in segmenters and "segmenter sam_hq syscv-community/sam-hq-vit-base" in segmenters
    assert {f"segmenter sam2 facebook/sam2.1-hiera-{v}" for v in ("tiny", "small", "base-plus", "large")} <= segmenters
    assert not any(rows[n].needed or rows[n].present for n in segmenters)
    sam_rows = _by_name(weights_status(hf_cache_dir=hub, segmenter_family="sam"))
    assert sam_rows["segmenter sam facebook/sam-vit-huge"].needed and not sam_rows["EfficientSAM vitt"].needed
    assert "hf download facebook/sam-vit-huge" in sam_rows["segmenter sam facebook/sam-vit-huge"].get_it
    assert set(rows) - segmenters == {"EfficientSAM vitt", "EfficientSAM vits", "amodal mask decoder (optional)", f"VLM {LLAVA_NEXT}",
                         f"VLM {LLAVA_15}", "VLM llava-hf/llava-onevision-qwen2-0.5b-ov-hf",
                         "VLM Qwen/Qwen2.5-VL-3B-Instruct", "VLM Qwen/Qwen2.5-VL-7B-Instruct",
                         "VLM Qwen/Qwen2-VL-7B-Instruct",
                         *(f"VLM Qwen/Qwen3-VL-{size}-Instruct" for size in ("2B", "4B", "8B", "32B", "30B-A3B"))}
    assert rows["EfficientSAM vitt"].present and rows["EfficientSAM vitt"].needed
    assert not rows["EfficientSAM vits"].present and not rows["EfficientSAM vits"].needed
    assert "efficient_sam_vits.pt.zip" in rows["EfficientSAM vits"].get_it
    assert rows[f"VLM {LLAVA_NEXT}"].present and rows[f"VLM {LLAVA_NEXT}"].path == snapshot
    assert rows[f"VLM {LLAVA_NEXT}"].needed
    assert not rows[f"VLM {LLAVA_15}"].present and "1 of 2 weight shards missing" in rows[f"VLM {LLAVA_15}"].note
    onevision = rows["VLM llava-hf/llava-onevision-qwen2-0.5b-ov-hf"]
    assert not onevision.present and "hf download llava-hf/llava-onevision-qwen2-0.5b-ov-hf --cache-dir" in onevision.get_it
    assert not rows["amodal mask decoder (optional)"].needed
    qwen = rows["VLM Qwen/Qwen2.5-VL-3B-Instruct"]
    assert not qwen.present and not qwen.needed and "hf download Qwen/Qwen2.5-VL-3B-Instruct" in qwen.get_it


def test_status_follows_the_models_section(places):
    local_vlm = places["tmp"] / "my_llava"
    local_vlm.mkdir()
    (local_vlm / "config.json").write_text("{}")
    (local_vlm / "model.safetensors").write_bytes(b"x")
    vits = _touch(places["tmp"] / "ckpt" / "vits.pt")
    models = {
        "profile": "real",
        "efficient_sam": {"variant": "vits", "checkpoint": str(vits), "amodal_decoder": str(places["tmp"] / "amodal.pt")},
        "vlm": {"id": str(local_vlm), "cache_dir": str(places["tmp"] / "empty_hub")},
    }
    rows = _by_name(weights_status_for_models(models))
    assert rows["EfficientSAM vits"].needed and rows["EfficientSAM vits"].path == vits
    assert not rows["EfficientSAM vitt"].needed
    amodal = rows["amodal mask decoder"]
    assert amodal.needed and not amodal.present
    assert rows[f"VLM {local_vlm}"].present and rows[f"VLM {local_vlm}"].needed
    assert not rows[f"VLM {LLAVA_NEXT}"].needed and not rows[f"VLM {LLAVA_NEXT}"].present


def test_local_vlm_without_weights_and_bad_ids_are_missing(places):
    folder = places["tmp"] / "config_only"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    assert weights.vlm_weights_dir(str(folder))[0] is None
    assert "no weights" in weights.vlm_weights_dir(str(folder))[1]
    missing_folder = weights.vlm_weights_dir(str(places["tmp"] / "no" / "such" / "folder"))
    assert missing_folder[0] is None and "no such local folder" in missing_folder[1]


def test_weights_command(places):
    runner = CliRunner()
    single = typer.Typer()
    single.command()(weights.weights_command)
    params = places["tmp"] / "params.yaml"
    params.write_text("models:\n  profile: real\n  vlm:\n    cache_dir: " + str(places["tmp"] / "hub") + "\n")

    result = runner.invoke(single, ["--params", str(params)])
    assert result.exit_code == 1, result.output
    assert "[MISSING] EfficientSAM vitt (needed)" in result.output
    assert "get it: https://github.com/yformer/EfficientSAM/raw/main/weights/efficient_sam_vitt.pt" in result.output
    assert "2 needed checkpoint(s) missing" in result.output

    auto = params.read_text().replace("profile: real", "profile: auto")
    params.write_text(auto)
    result = runner.invoke(single, ["--params", str(params)])
    assert result.exit_code == 1 and "embedded sample runs the SMOKE profile" in result.output
    params.write_text(auto.replace("profile: auto", "profile: smoke"))
    smoke = runner.invoke(single, ["--params", str(params)])
    assert smoke.exit_code == 0 and "no checkpoint is read" in smoke.output
    assert "weights" in [c.name for c in app.registered_commands]


def test_weights_command_reports_bad_params(places):
    single = typer.Typer()
    single.command()(weights.weights_command)
    params = places["tmp"] / "params.yaml"
    params.write_text("models:\n  profile: real\n  efficient_sam:\n    variant: vitb\n")
    result = CliRunner().invoke(single, ["--params", str(params)])
    assert result.exit_code == 2 and "vitb" in result.output
    params.write_text("dataset: {}\n")
    result = CliRunner().invoke(single, ["--params", str(params)])
    assert result.exit_code == 2 and "section 'models' is missing" in result.output


def test_weights_command_exit_status_follows_presence_and_loading(places, tmp_path):
    """Exit 0 only when every needed checkpoint is present AND loads; a present file that does not
    load is reported as BROKEN with the reason, and fails the command."""
    from pipeline.vlm_families import build_smoke_vlm

    model, processor = build_smoke_vlm("llava_next")
    vlm_dir = tmp_path / "local_vlm"
    model.save_pretrained(vlm_dir)
    processor.save_pretrained(vlm_dir)
    params = places["tmp"] / "params.yaml"
    params.write_text(f"models:\n  profile: real\n  vlm:\n    id: {vlm_dir}\n")
    single = typer.Typer()
    single.command()(weights.weights_command)
    runner = CliRunner()

    (places["env"] / "efficient_sam_vitt.pt").write_bytes(b"not a checkpoint")
    broken = runner.invoke(single, ["--params", str(params)])
    assert broken.exit_code == 1, broken.output
    assert "[BROKEN ] EfficientSAM vitt (needed)" in broken.output and "does not load:" in broken.output
    assert "1 needed checkpoint(s) missing or not loading: EfficientSAM vitt" in broken.output

    torch.save({"model": build_seeded_efficient_sam("vitt").state_dict()}, places["env"] / "efficient_sam_vitt.pt")
    ok = runner.invoke(single, ["--params", str(params)])
    assert ok.exit_code == 0, ok.output
    assert f"[ok     ] VLM {vlm_dir} (needed)" in ok.output and "present and loads" in ok.output

    (vlm_dir / "model.safetensors").write_bytes(b"\x00" * 16)  # truncated weights
    assert runner.invoke(single, ["--params", str(params)]).exit_code == 1


def test_a_cached_qwen_checkpoint_is_found_and_needed(places):
    hub = places["tmp"] / "hub"
    snapshot = _cache_model(hub, "Qwen/Qwen2.5-VL-7B-Instruct")
    models = {"profile": "real", "vlm": {"family": "qwen2_5_vl", "id": "Qwen/Qwen2.5-VL-7B-Instruct",
                                         "cache_dir": str(hub)}}
    rows = _by_name(weights_status_for_models(models))
    qwen = rows["VLM Qwen/Qwen2.5-VL-7B-Instruct"]
    assert qwen.needed and qwen.present and qwen.path == snapshot
    assert not rows["VLM Qwen/Qwen2-VL-7B-Instruct"].needed
