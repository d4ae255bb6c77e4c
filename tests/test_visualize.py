"""`vlmsam visualize` on a finished smoke run (extract -> sample -> decode on one synthetic
image, run through the stages' `main` functions in a temporary project folder)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.demo import working_dir
from pipeline.visualize import RunOutputs, select_instances, visualize_run


@pytest.fixture(scope="module")
def run(tmp_path_factory, finished_smoke_run):
    """A project folder holding params.yaml, the dataset and the finished stage outputs."""
    root = tmp_path_factory.mktemp("run")
    dataset = finished_smoke_run(root, 1, seed=3, width=160, height=120)
    assert dataset.instance_count() >= 3
    return root, dataset


def outputs_in(root: Path) -> RunOutputs:
    d = RunOutputs()
    return RunOutputs(root / d.cache, root / d.points, root / d.visible, root / d.amodal)


def test_select_instances_spreads_over_occlusion_rates_deterministically():
    candidates = [(rate, 1 + i % 2, i) for i, rate in enumerate([0.5, 0.0, 0.9, 0.1, 0.3, 0.7, 0.2])]
    chosen = select_instances(candidates, 3)
    assert chosen == [(2, 1), (1, 4), (1, 2)]  # lowest rate, median, highest
    assert select_instances(list(reversed(candidates)), 3) == chosen
    assert len(select_instances(candidates, 10)) == len(candidates)


def test_visualize_writes_n_figures_of_the_run(run, tmp_path):
    root, dataset = run
    paths = visualize_run(dataset, outputs_in(root), 2, tmp_path / "figs")
    assert len(paths) == 2 and sorted(tmp_path.joinpath("figs").iterdir()) == sorted(paths)
    rates = {(im.id, inst.id): inst.occlusion_rate for im in dataset.images for inst in im.instances}
    shown = [(int(p.stem.split("_")[1].removeprefix("image")), int(p.stem.split("_")[2].removeprefix("instance")))
             for p in paths]
    assert [rates[k] for k in shown] == [min(rates.values()), max(rates.values())]
    for path in paths:
        with Image.open(path) as fig:
            assert fig.format == "PNG" and fig.size[0] > 800 and fig.size[1] > 400


def test_visualize_command(run, tmp_path):
    root, dataset = run
    out = tmp_path / "figures"
    with working_dir(root):
        result = CliRunner().invoke(app, ["visualize", "--n", "3", "--out", str(out), "--params", "params.yaml"])
    assert result.exit_code == 0, result.output
    assert len(list(out.glob("*.png"))) == 3 and result.output.count("wrote ") == 3


def test_missing_output_names_the_file_and_its_stage(run, tmp_path):
    root, dataset = run
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    (copy / RunOutputs().points).unlink()
    with pytest.raises(FileNotFoundError, match=r"points\.parquet \(written by the sample stage"):
        visualize_run(dataset, outputs_in(copy), 2, tmp_path / "figs")
    (copy / RunOutputs().amodal).unlink()
    with working_dir(copy):
        result = CliRunner().invoke(app, ["visualize", "--n", "2", "--out", str(tmp_path / "figs")])
    assert result.exit_code == 1
    assert "sample stage" in result.output and "pred_amodal.json (written by the decode stage" in result.output
    assert not (tmp_path / "figs").exists()
