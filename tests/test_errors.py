"""One clear line per mistake: the project's errors share one base, every entry (`python -m
stages.X`, `vlmsam`) prints them as one line and exits 1, with a traceback only on request;
unknown parameter keys are rejected at every level; the library never imports `stages`."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.errors import ParamsError, VlmsamError, run_entry
from pipeline.params_file import load_params

REPO = Path(__file__).resolve().parents[1]
STAGES = ("extract", "sample", "decode", "evaluate")


def _params_with(tmp_path: Path, edit) -> Path:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    edit(params)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def _typo_top_level(params: dict) -> None:
    params["prompt_mod"] = params.pop("prompt_mode")


def _stage(stage: str, *args: str, debug_env: bool = False) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "VLMSAM_DEBUG"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    if debug_env:
        env["VLMSAM_DEBUG"] = "1"
    return subprocess.run([sys.executable, "-m", f"stages.{stage}", *args], cwd=REPO, env=env,
                          capture_output=True, text=True)


@pytest.mark.parametrize("stage", STAGES)
def test_a_typo_in_a_top_level_key_stops_every_stage_with_one_line(stage, tmp_path):
    params = _params_with(tmp_path, _typo_top_level)
    proc = _stage(stage, "--params", str(params))
    assert proc.returncode == 1
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"error: {params}: top level: unknown parameter(s) ['prompt_mod']")
    assert "known: [" in lines[0] and "'prompt_mode'" in lines[0]


def test_debug_flag_and_environment_show_the_traceback(tmp_path):
    params = _params_with(tmp_path, _typo_top_level)
    for proc in (_stage("sample", "--params", str(params), "--debug"),
                 _stage("sample", "--params", str(params), debug_env=True)):
        assert proc.returncode == 1
        assert "Traceback (most recent call last)" in proc.stderr and "ParamsError" in proc.stderr


def test_bad_value_and_bad_input_are_one_line_too(tmp_path):
    bad_value = _params_with(tmp_path, lambda p: p["decode"].update(completion="magic"))
    proc = _stage("decode", "--params", str(bad_value))
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1
    assert proc.stderr.startswith(f"error: {bad_value}: decode.completion 'magic'")

    missing = tmp_path / "absent.yaml"
    proc = _stage("evaluate", "--params", str(missing))
    assert proc.returncode == 1 and proc.stderr == f"error: {missing}: parameter file not found\n"


@pytest.mark.parametrize("edit, message", [
    (lambda p: p["models"]["segmenter"].update(family="sam3"), "models.segmenter.family 'sam3': expected one of ["),
    (lambda p: p["decode"].update(negatives="sometimes"), "decode.negatives 'sometimes': expected one of ("),
])
def test_a_bad_segmenter_parameter_stops_decode_with_one_line(tmp_path, edit, message):
    params = _params_with(tmp_path, edit)
    proc = _stage("decode", "--params", str(params))
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith(f"error: {params}: {message}")


def test_a_segmenter_folder_of_another_family_or_missing_a_file_is_one_line(tmp_path, capsys, monkeypatch):
    import shutil

    from pipeline.decoding.params import SamModelParams
    from pipeline.decoding.sam import load_sam_models
    from pipeline.segmenters.params import SegmenterParams

    folder = tmp_path / "sam-vit-base"
    shutil.copytree(REPO / "tests" / "data" / "segmenter_folders" / "sam", folder)
    (folder / "model.safetensors").write_bytes(b"")  # the config is read before any weight

    def load_as(family):
        return lambda argv: load_sam_models("real", SamModelParams(), False, segmenter=SegmenterParams(family, str(folder)))

    monkeypatch.delenv("VLMSAM_DEBUG", raising=False)
    assert run_entry(load_as("sam_hq"), []) == 1
    assert capsys.readouterr().err == (f"error: models.segmenter.id {str(folder)!r}: config.json is model_type 'sam', "
                                       "not 'sam_hq' (models.segmenter.family 'sam_hq')\n")
    (folder / "preprocessor_config.json").unlink()
    assert run_entry(load_as("sam"), []) == 1
    assert capsys.readouterr().err == (f"error: {folder / 'preprocessor_config.json'}: missing from the checkpoint "
                                       "folder (models.segmenter.id)\n")


def test_vlmsam_command_prints_project_errors_as_one_line(tmp_path):
    params = _params_with(tmp_path, lambda p: p["models"].update(profil="smoke"))
    vlmsam = Path(sys.executable).parent / "vlmsam"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    env.pop("VLMSAM_DEBUG", None)
    proc = subprocess.run([str(vlmsam), "predict", str(tmp_path / "x.png"), "--box", "0", "0", "1", "1",
                           "--class", "cup", "--params", str(params)], cwd=tmp_path, env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        f"error: {params}: models: unknown parameter(s) ['profil']; known: ['efficient_sam', 'profile', 'segmenter', 'vlm']"]


def test_run_entry_one_line_exit_status_and_debug(capsys, monkeypatch):
    from pipeline.datasets import DatasetError

    def fails(argv):
        raise DatasetError("data.json: record 3: no 'bbox'\n(second line)")

    monkeypatch.delenv("VLMSAM_DEBUG", raising=False)
    assert run_entry(fails, []) == 1
    assert capsys.readouterr().err == "error: data.json: record 3: no 'bbox' | (second line)\n"
    with pytest.raises(DatasetError):
        run_entry(fails, ["--debug"])
    seen = []
    assert run_entry(seen.append, ["--params", "x", "--debug"]) == 0 and seen == [["--params", "x"]]

    def bug(argv):
        raise ZeroDivisionError("a bug keeps its traceback")

    with pytest.raises(ZeroDivisionError):
        run_entry(bug, [])


def test_the_project_errors_share_one_base():
    from pipeline.api import PredictInputError
    from pipeline.attention.cache import CacheFormatError
    from pipeline.attention.vlm import VlmNotAvailableError
    from pipeline.datasets import DatasetError
    from pipeline.decoding.prompts import PromptError
    from pipeline.models.efficient_sam import CheckpointError
    from pipeline.predictions import PredictionFormatError
    from pipeline.sampling.run import SampleInputError
    from pipeline.weights import MissingWeightsError

    for cls in (PredictInputError, CacheFormatError, VlmNotAvailableError, DatasetError, PromptError,
                CheckpointError, PredictionFormatError, SampleInputError, MissingWeightsError, ParamsError):
        assert issubclass(cls, VlmsamError), cls
    assert issubclass(MissingWeightsError, FileNotFoundError) and issubclass(DatasetError, ValueError)


@pytest.mark.parametrize("edit, where, key", [
    (_typo_top_level, "top level", "prompt_mod"),
    (lambda p: p["models"].update(profil="smoke"), "models", "profil"),
    (lambda p: p["models"]["vlm"].update(dtpye="float16"), "models.vlm", "dtpye"),
    (lambda p: p["models"]["efficient_sam"].update(variants="vitt"), "models.efficient_sam", "variants"),
    (lambda p: p["sample"].update(n_positive=3), "sample", "n_positive"),
    (lambda p: p["evaluate"].update(bins=3), "evaluate", "bins"),
])
def test_unknown_keys_are_rejected_at_every_level(tmp_path, edit, where, key):
    path = _params_with(tmp_path, edit)
    with pytest.raises(ParamsError) as e:
        load_params(path)
    assert str(e.value).startswith(f"{path}: {where}: unknown parameter(s) ['{key}']; known: [")


def test_the_library_never_imports_stages():
    offenders = []
    for path in sorted((REPO / "pipeline").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            offenders += [f"{path.relative_to(REPO)}: {n}" for n in names if n == "stages" or n.startswith("stages.")]
    assert offenders == []
