"""The identity of a dataset's image files, part of every resume key that reads pixels.

A cache made from other pixels must not be taken as up to date: changing `dataset.images`, or
replacing image files in place, changes `image_files_identity`. Each file counts by its path as
the run resolves it, its size in bytes and its modification time (ns); reading every file's
content would cost a pass over the whole split before any work starts.
"""

from __future__ import annotations

import hashlib
import os

from pipeline.datasets.record import AmodalDataset


def image_files_identity(dataset: AmodalDataset) -> dict:
    """{"count": images, "sha256": hash over (path, size, mtime_ns) of each image in file order};
    a missing file counts as 'missing' (the stage that reads it records the skip)."""
    digest = hashlib.sha256()
    for record in dataset.images:
        try:
            st = os.stat(record.path)
            stamp = f"{st.st_size}:{st.st_mtime_ns}"
        except (OSError, TypeError):
            stamp = "missing"
        digest.update(f"{record.id}\t{record.path}\t{stamp}\n".encode())
    return {"count": len(dataset.images), "sha256": digest.hexdigest()}
