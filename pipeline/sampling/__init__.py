"""The sample stage: attention maps -> point prompts EfficientSAM reads -> Parquet.

Modules: `params` (SampleParams; the point limits are `pipeline.prompt_limits`), `pixel_map` (tokens ->
pixel maps), `points` (maps -> points, fallbacks), `run` (the stage over a cache and a
dataset), `points_schema` (the Parquet file), `preview` (PNGs), `synthetic` (caches built
from ground truth for tests and the benchmark), `command` (`vlmsam sample`).
"""
