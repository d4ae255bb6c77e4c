"""The point-prompt table (`cache/points.parquet`): the one definition of its schema.

One row per point. Columns:
    image_id     int64    dataset image id
    gt_id        int64    ground-truth instance the point prompts for
    rank         int16    0 = best point of the instance; points are stored best first
    x, y         float32  original-image pixels
    label        int8     1 positive, 0 negative (EfficientSAM's point labels)
    score        float32  the sampler's confidence (attention mass) of the point
    source       string   one of SOURCES
    fallback     string   per instance: '' or why the sampler fell back (e.g. 'flat', 'nan')
    params_hash  string   hash of the sample parameters that produced the row

File metadata key b"vlmsam" holds JSON: {"params": {...}, "params_hash": str,
"smoke": bool, "cache": {...provenance of the attention cache...}}.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.atomic import atomic_path

SOURCES = ("peak", "occluder", "background", "kmeans", "fallback")
METADATA_KEY = b"vlmsam"

SCHEMA = pa.schema(
    [
        ("image_id", pa.int64()),
        ("gt_id", pa.int64()),
        ("rank", pa.int16()),
        ("x", pa.float32()),
        ("y", pa.float32()),
        ("label", pa.int8()),
        ("score", pa.float32()),
        ("source", pa.string()),
        ("fallback", pa.string()),
        ("params_hash", pa.string()),
    ]
)


def write_points(path: str | os.PathLike, table: pa.Table, metadata: dict) -> None:
    """Write a points table (cast to SCHEMA) with its metadata, atomically."""
    table = table.select(SCHEMA.names).cast(SCHEMA)
    table = table.replace_schema_metadata({METADATA_KEY: json.dumps(metadata).encode()})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def read_points(path: str | os.PathLike) -> tuple[pa.Table, dict]:
    """Read a points table and its metadata; a clear error for a missing or foreign file."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: points file not found (run the sample stage first)")
    table = pq.read_table(path)
    missing = [n for n in SCHEMA.names if n not in table.schema.names]
    if missing:
        raise ValueError(f"{path}: not a points file, missing columns {missing}")
    meta = table.schema.metadata or {}
    if METADATA_KEY not in meta:
        raise ValueError(f"{path}: points file has no {METADATA_KEY.decode()} metadata")
    return table.select(SCHEMA.names).cast(SCHEMA), json.loads(meta[METADATA_KEY])
