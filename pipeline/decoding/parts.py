"""Resumable decode results: one JSON part per finished image, merged atomically at the end.

Parts live in `<visible predictions>.parts/<run hash>/<image_id>.json`, each holding
`{"visible": [...], "amodal": [...]}` (entries of `pipeline/predictions.py`'s format). A part
is written atomically, so it exists only when its image is complete. Parts under another run
hash (other parameters, models or inputs) are deleted when a run starts, so results of
different settings never mix. `finalize` writes both prediction files atomically, then
removes the parts; a pass over the whole split (completion 'exemplar') runs inside it, so
an interruption there leaves the parts in place and a re-run only repeats that pass.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from pipeline.atomic import write_json
from pipeline.predictions import write_predictions


class PartStore:
    """Per-image parts of one decode run."""

    def __init__(self, visible_path: str | os.PathLike, amodal_path: str | os.PathLike, run_hash: str):
        self.visible_path, self.amodal_path = Path(visible_path), Path(amodal_path)
        self.root = self.visible_path.with_name(self.visible_path.name + ".parts")
        self.dir = self.root / run_hash
        if self.root.exists():
            for other in self.root.iterdir():
                if other != self.dir:  # another shard of this run may remove it at the same time
                    shutil.rmtree(other, onerror=_gone_is_fine) if other.is_dir() else other.unlink(missing_ok=True)
        self.dir.mkdir(parents=True, exist_ok=True)

    @classmethod
    def existing(cls, visible_path: str | os.PathLike, amodal_path: str | os.PathLike) -> "PartStore":
        """The parts already on disk (one run hash), for merging them without the run's inputs."""
        root = Path(visible_path).with_name(Path(visible_path).name + ".parts")
        runs = sorted(p for p in root.iterdir() if p.is_dir()) if root.exists() else []
        if len(runs) != 1:
            raise FileNotFoundError(f"{root}: expected the parts of one decode run, found {len(runs)}")
        store = cls.__new__(cls)
        store.visible_path, store.amodal_path = Path(visible_path), Path(amodal_path)
        store.root, store.dir = root, runs[0]
        return store

    def missing(self, image_ids) -> list[int]:
        """The images of `image_ids` without a finished part."""
        return [int(i) for i in image_ids if not self._part(i).exists()]

    def _part(self, image_id: int) -> Path:
        return self.dir / f"{int(image_id)}.json"

    def done_image_ids(self) -> set[int]:
        """Images whose part is complete (skipped on a re-run)."""
        return {int(p.stem) for p in self.dir.glob("*.json") if p.stem.isdigit()}

    def write(self, image_id: int, visible: list[dict], amodal: list[dict]) -> None:
        """Store one finished image atomically."""
        write_json(self._part(image_id), {"visible": visible, "amodal": amodal}, indent=None)

    def finalize(self, image_ids, split_pass=None) -> tuple[int, int]:
        """Merge the parts of `image_ids` in order into both prediction files; returns the counts.

        `split_pass(visible, amodal) -> amodal`, when given, rewrites the merged amodal entries
        before they are written."""
        visible, amodal = [], []
        for i in image_ids:
            part = self._part(i)
            if not part.exists():
                raise FileNotFoundError(f"{part}: image {i} was not decoded; cannot finalize")
            d = json.loads(part.read_text(encoding="utf-8"))
            visible.extend(d["visible"])
            amodal.extend(d["amodal"])
        if split_pass is not None:
            amodal = split_pass(visible, amodal)
        write_predictions(self.visible_path, visible)
        write_predictions(self.amodal_path, amodal)
        shutil.rmtree(self.root)
        return len(visible), len(amodal)


def _gone_is_fine(function, path, excinfo) -> None:
    if not issubclass(excinfo[0], FileNotFoundError):
        raise excinfo[1]
