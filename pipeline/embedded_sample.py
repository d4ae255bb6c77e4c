"""The sample dataset shipped in the repository (`sample/d2sa/`), the default of params.yaml.

It is made by the synthetic-scene generator (`pipeline.synth`) with the settings below and is
committed as written; `python -m pipeline.embedded_sample` rewrites it (byte-identical for the
same generator). Without real checkpoints, `models.profile: auto` runs the smoke profile on
this dataset only (`pipeline.profiles.resolve_profile`).
"""

from __future__ import annotations

import os
from pathlib import Path

from pipeline.synth.generate import ANNOTATION_NAME

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SAMPLE_DIR = PROJECT_ROOT / "sample" / "d2sa"
SAMPLE_ANNOTATIONS = SAMPLE_DIR / ANNOTATION_NAME
SAMPLE_IMAGES = SAMPLE_DIR / "images"
# generator settings of the committed sample
SAMPLE_N_IMAGES = 4
SAMPLE_SEED = 0
SAMPLE_WIDTH = 320
SAMPLE_HEIGHT = 240


def is_embedded_sample(annotations: str | os.PathLike | None) -> bool:
    """True when `annotations` (relative to the working directory) is the embedded sample's file."""
    if annotations is None:
        return False
    return Path(annotations).resolve() == SAMPLE_ANNOTATIONS.resolve()


def write_sample(out_dir: str | os.PathLike = SAMPLE_DIR, progress: bool = True) -> Path:
    """Generate the sample into `out_dir`; returns its annotation file."""
    from pipeline.synth import generate

    return generate(out_dir, SAMPLE_N_IMAGES, seed=SAMPLE_SEED, width=SAMPLE_WIDTH, height=SAMPLE_HEIGHT,
                    progress=progress)


if __name__ == "__main__":
    print(f"wrote {write_sample()}")
