"""Merging the shards' part files into the stage outputs, by whichever process finds them complete.

Every process of a sharded run writes its images' parts, then checks whether the parts of
*all* images exist. The one that finds them complete takes a non-blocking `flock` on
`<parts folder>/.merge.lock` and merges (a second finisher finds the lock taken, or the parts
gone, and stops). No process waits for another. A single-process run merges the same way
without the lock, so its outputs are the bytes a sharded run writes. `vlmsam merge` does the
same on demand, e.g. when a shard was re-run after the others had finished.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
from pathlib import Path
from typing import Callable, Iterator, TypeVar

from pipeline.scaling.shards import Shard

log = logging.getLogger(__name__)

LOCK_NAME = ".merge.lock"
T = TypeVar("T")


class MergeLockUnavailable(RuntimeError):
    """The file system does not support `flock` on the parts folder."""


@contextlib.contextmanager
def merge_lock(folder: Path) -> Iterator[bool]:
    """Yield True while this process holds the merge lock of `folder`; False when another
    process holds it or the folder is gone (already merged)."""
    try:
        fd = os.open(folder / LOCK_NAME, os.O_CREAT | os.O_RDWR, 0o666)
    except FileNotFoundError:
        yield False
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                yield False
                return
            raise MergeLockUnavailable(
                f"{folder / LOCK_NAME}: cannot lock ({e.strerror}); run `vlmsam merge` once every shard has finished"
            ) from e
        yield True
    finally:
        os.close(fd)


def merge_when_complete(folder: Path, missing: Callable[[], list[int]], merge: Callable[[], T],
                        shard: Shard, what: str) -> T | None:
    """Run `merge` when no image is `missing`; None when this process does not merge.

    A single process merges at once (`merge` reports missing images). A shard merges only
    when every image's part exists and it holds the merge lock."""
    if shard.is_single:
        return merge()
    left = missing()
    if left:
        log.info("%s: %s finished; %d image(s) of other shards still to do: the last shard to finish "
                 "merges (or run `vlmsam merge`)", shard, what, len(left))
        return None
    try:
        with merge_lock(folder) as held:
            if not held or missing():
                log.info("%s: another process merges %s", shard, what)
                return None
            log.info("%s: every image is done; merging %s", shard, what)
            return merge()
    except MergeLockUnavailable as e:
        log.warning("%s", e)
        return None


def merge_now(folder: Path, missing: Callable[[], list[int]], merge: Callable[[], T], what: str) -> T:
    """Explicit merge (`vlmsam merge`): every part must exist and no other process may be merging."""
    if not folder.exists():
        raise FileNotFoundError(f"{folder}: no parts to merge for {what}")
    left = missing()
    if left:
        raise FileNotFoundError(f"{folder}: {len(left)} image(s) not finished, e.g. {left[:10]}; "
                                "re-run their shards first")
    with merge_lock(folder) as held:
        if not held:
            raise RuntimeError(f"{folder}: another process is merging {what}")
        return merge()
