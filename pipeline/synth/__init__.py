"""Synthetic D2SA-format scenes with known amodal and visible masks (tests and smoke runs)."""

from pipeline.synth.generate import ANNOTATION_NAME, generate, iter_scenes, synth_coco
from pipeline.synth.scene import SceneConfig

__all__ = ["ANNOTATION_NAME", "SceneConfig", "generate", "iter_scenes", "synth_coco"]
