"""Shared test fixtures."""

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_REFERENCE = REPO.parent / "shared" / "reference"


@pytest.fixture(scope="session")
def shared_reference() -> Path:
    """`../shared/reference` beside the checkout (read-only reference data)."""
    if not SHARED_REFERENCE.exists():
        pytest.fail(f"{SHARED_REFERENCE} is missing: CI clones the project with ../shared beside it")
    return SHARED_REFERENCE


@pytest.fixture(scope="session")
def finished_smoke_run():
    """`smoke_run(root, n_images, seed, width, height, proposals=None)`, for module fixtures of
    finished runs."""
    return smoke_run


def smoke_run(root: Path, n_images: int, seed: int, width: int, height: int, proposals=None):
    """extract -> sample -> decode of the smoke profile on `n_images` synthetic images, run
    through the stages' `main` in `root` (params.yaml there); returns the dataset (its ground
    truth). `proposals(annotations)`, when given, writes a proposals file for the annotations
    and returns its path, which becomes dataset.proposals."""
    from pipeline.datasets import load_dataset
    from pipeline.demo import working_dir
    from pipeline.profiles import SMOKE_OVERRIDES, apply_overrides, default_params, write_params
    from pipeline.synth import generate
    from stages import decode, extract, sample

    annotations = generate(root / "data", n_images, seed=seed, width=width, height=height,
                           image_format="png", progress=False)
    params = apply_overrides(default_params(), {
        **SMOKE_OVERRIDES, "extract.max_new_tokens": 8,
        "dataset.annotations": str(annotations), "dataset.flavour": "d2sa",
        **({} if proposals is None else {"dataset.proposals": str(proposals(annotations))}),
    })
    write_params(root / "params.yaml", params)
    with working_dir(root):
        for stage in (extract, sample, decode):
            stage.main(["--params", "params.yaml"])
    return load_dataset(annotations)
