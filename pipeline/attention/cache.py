"""The attention cache (`cache/attention.h5`): the one definition of its HDF5 layout.

Written by the extract stage, read by the sample stage (and by `predict`/`visualize`).

Layout (h5py, gzip-compressed datasets)::

    /                                file attributes (ATTR_* below):
        format_version  int          FORMAT_VERSION
        model_id        str          model id or local path of the VLM
        model_revision  str          commit hash / revision ('' when unknown)
        prompt_templates str (JSON)  {name: template} used for the prompts
        layers          int[L]       language-model layers whose attention is stored
        params          str (JSON)   the extract parameters of the run
        params_hash     str          hash of `params` (see `params_hash`)
        smoke           bool         True when the VLM had random weights: a smoke run
    /images/<image_id>/              one group per finished image
        attrs: width, height (original image pixels), occlusion_json (str, parsed answer as
               JSON; '' when parsing failed), occlusion_raw (str, the model's raw answer),
               occlusion_error (str, '' when the answer parsed)
        tokens/view   int8[T]        0 = base view (coarse), 1 = high-resolution canvas (fine)
        tokens/row    int32[T]       row of the token in its view's grid
        tokens/col    int32[T]       column of the token in its view's grid
        tokens/rect   float32[T, 4]  x0, y0, x1, y1 of the token in original-image pixels
        instances/<gt_id>/
            attrs: category_name, query_text, target_tokens (JSON list of str),
                   occluder_names (JSON list), occluder_ids (int[]), fallback ('' or reason)
            maps      float32[L, T]     per-layer attention from the target rows to the
                                        image tokens (head-aggregated, mean over target rows)
            heads     float32[L, H, T]  optional per-head maps

T counts image tokens only (LLaVA-NeXT's newline tokens are dropped); token t of `maps`
is token t of `tokens/*`.

Resumability: each finished image is first written to its own file
`<cache>.parts/<image_id>.h5` (temp file + rename, so a part exists only when complete);
`finalize` (`merge_parts`) merges the parts in order into `<cache>` atomically. Parts whose
`params_hash` differs from the run's are discarded, so changed parameters never mix with old
results. The processes of a sharded run share the parts folder (`pipeline/scaling/`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import h5py
import numpy as np

from pipeline.atomic import atomic_path
from pipeline.errors import VlmsamError

FORMAT_VERSION = 1
VIEW_BASE = 0
VIEW_HIGHRES = 1
_COMPRESSION = {"compression": "gzip", "compression_opts": 4}


def params_hash(params: dict) -> str:
    """Stable short hash of a JSON-serialisable parameter dict."""
    blob = json.dumps(params, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


@dataclass
class TokenPlacement:
    """Where each image token of the prompt sits: view, grid row/col, pixel rectangle."""

    view: np.ndarray  # int8 [T]
    row: np.ndarray  # int32 [T]
    col: np.ndarray  # int32 [T]
    rect: np.ndarray  # float32 [T, 4] x0, y0, x1, y1 in original-image pixels

    def __len__(self) -> int:
        return int(self.view.shape[0])


@dataclass
class InstanceAttention:
    """Target attention of one ground-truth instance (the words are None when read without them,
    see `read_images`)."""

    gt_id: int
    category_name: str | None
    query_text: str | None
    target_tokens: list[str] | None
    maps: np.ndarray  # float32 [L, T]
    occluder_names: list[str] | None = field(default_factory=list)
    occluder_ids: list[int] = field(default_factory=list)
    fallback: str = ""
    heads: np.ndarray | None = None  # float32 [L, H, T]


@dataclass
class ImageAttention:
    """Everything the cache holds for one image (the occlusion answer is None when read without
    the words, see `read_images`)."""

    image_id: int
    width: int
    height: int
    placement: TokenPlacement
    instances: dict[int, InstanceAttention]
    occlusion_json: str | None = ""
    occlusion_raw: str | None = ""
    occlusion_error: str | None = ""


@dataclass
class CacheInfo:
    """File-level attributes of a cache."""

    model_id: str
    model_revision: str
    prompt_templates: dict
    layers: list[int]
    params: dict
    smoke: bool

    @property
    def params_hash(self) -> str:
        return params_hash(self.params)


class CacheFormatError(VlmsamError, ValueError):
    """The cache file is missing, from another format version, or inconsistent."""


# ---------------------------------------------------------------- writing

def _write_info(f: h5py.File, info: CacheInfo) -> None:
    f.attrs["format_version"] = FORMAT_VERSION
    f.attrs["model_id"] = info.model_id
    f.attrs["model_revision"] = info.model_revision
    f.attrs["prompt_templates"] = json.dumps(info.prompt_templates)
    f.attrs["layers"] = np.asarray(info.layers, dtype=np.int64)
    f.attrs["params"] = json.dumps(info.params, sort_keys=True)
    f.attrs["params_hash"] = info.params_hash
    f.attrs["smoke"] = bool(info.smoke)


def _write_image(parent: h5py.Group, image: ImageAttention) -> None:
    n_tokens = len(image.placement)
    g = parent.create_group(str(int(image.image_id)))
    g.attrs["width"] = int(image.width)
    g.attrs["height"] = int(image.height)
    g.attrs["occlusion_json"] = image.occlusion_json
    g.attrs["occlusion_raw"] = image.occlusion_raw
    g.attrs["occlusion_error"] = image.occlusion_error
    t = g.create_group("tokens")
    t.create_dataset("view", data=np.asarray(image.placement.view, np.int8))
    t.create_dataset("row", data=np.asarray(image.placement.row, np.int32))
    t.create_dataset("col", data=np.asarray(image.placement.col, np.int32))
    t.create_dataset("rect", data=np.asarray(image.placement.rect, np.float32))
    ig = g.create_group("instances")
    for gt_id, inst in image.instances.items():
        maps = np.asarray(inst.maps, np.float32)
        if maps.ndim != 2 or maps.shape[1] != n_tokens:
            raise CacheFormatError(
                f"image {image.image_id} instance {gt_id}: maps shape {maps.shape} "
                f"does not match {n_tokens} image tokens"
            )
        h = ig.create_group(str(int(gt_id)))
        h.attrs["category_name"] = inst.category_name
        h.attrs["query_text"] = inst.query_text
        h.attrs["target_tokens"] = json.dumps(inst.target_tokens)
        h.attrs["occluder_names"] = json.dumps(inst.occluder_names)
        h.attrs["occluder_ids"] = np.asarray(inst.occluder_ids, dtype=np.int64)
        h.attrs["fallback"] = inst.fallback
        h.create_dataset("maps", data=maps, **_COMPRESSION)
        if inst.heads is not None:
            h.create_dataset("heads", data=np.asarray(inst.heads, np.float32), **_COMPRESSION)


class AttentionCacheWriter:
    """Resumable writer: `write_image` per finished image, `finalize` once at the end."""

    def __init__(self, path: str | os.PathLike, info: CacheInfo):
        self.path = Path(path)
        self.info = info
        self.parts_dir = parts_dir(self.path)
        self.parts_dir.mkdir(parents=True, exist_ok=True)
        for part in self.parts_dir.glob("*.h5"):
            if _part_hash(part) != info.params_hash:
                part.unlink(missing_ok=True)  # another shard of the run may remove it too

    def done_image_ids(self) -> set[int]:
        """Image ids whose complete part is already on disk (skipped on a re-run)."""
        return {int(p.stem) for p in self.parts_dir.glob("*.h5")}

    def write_image(self, image: ImageAttention) -> None:
        """Write one finished image atomically to its part file."""
        part = self.parts_dir / f"{int(image.image_id)}.h5"
        with atomic_path(part) as tmp:
            with h5py.File(tmp, "w") as f:
                _write_info(f, self.info)
                _write_image(f.require_group("images"), image)

    def finalize(self, image_ids: Iterable[int]) -> None:
        """Merge the parts of `image_ids` (all must be done) into the cache file atomically."""
        merge_parts(self.path, image_ids, self.info)


def parts_dir(path: str | os.PathLike) -> Path:
    """The folder of the per-image part files of the cache `path`."""
    path = Path(path)
    return path.with_name(path.name + ".parts")


def missing_parts(path: str | os.PathLike, image_ids: Iterable[int]) -> list[int]:
    """The images of `image_ids` that have no finished part yet."""
    folder = parts_dir(path)
    return [int(i) for i in image_ids if not (folder / f"{int(i)}.h5").exists()]


def merge_parts(path: str | os.PathLike, image_ids: Iterable[int], info: CacheInfo | None = None) -> Path:
    """Write the parts of `image_ids`, in that order, into the cache `path` atomically, then
    remove the parts. All parts must exist and carry one params hash; `info` (None = the
    attributes stored in the parts) gives the file attributes."""
    path, image_ids = Path(path), [int(i) for i in image_ids]
    folder = parts_dir(path)
    missing = missing_parts(path, image_ids)
    if missing:
        raise CacheFormatError(f"{path}: cannot finalize, images not extracted: {missing[:10]}")
    if info is None:
        if not image_ids:
            raise CacheFormatError(f"{path}: no images to merge")
        with h5py.File(folder / f"{image_ids[0]}.h5", "r") as first:
            info = _info(first)
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as out:
            _write_info(out, info)
            images = out.create_group("images", track_order=True)
            for i in image_ids:
                with h5py.File(folder / f"{i}.h5", "r") as part:
                    if str(part.attrs.get("params_hash", "")) != info.params_hash:
                        raise CacheFormatError(
                            f"{folder / f'{i}.h5'}: part of other parameters (params_hash "
                            f"{part.attrs.get('params_hash')!r}, expected {info.params_hash!r}); re-run its shard")
                    part.copy(part["images"][str(i)], images, name=str(i))
    shutil.rmtree(folder)
    return path


def _part_hash(part: Path) -> str | None:
    try:
        with h5py.File(part, "r") as f:
            return str(f.attrs.get("params_hash", ""))
    except OSError:
        return None


# ---------------------------------------------------------------- reading

def _str(v) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def read_info(path: str | os.PathLike) -> CacheInfo:
    """File attributes of a finished cache."""
    with _open(path) as f:
        return _info(f)


def _open(path: str | os.PathLike) -> h5py.File:
    path = Path(path)
    if not path.exists():
        raise CacheFormatError(f"{path}: attention cache not found (run the extract stage first)")
    f = h5py.File(path, "r")
    version = int(f.attrs.get("format_version", -1))
    if version != FORMAT_VERSION:
        f.close()
        raise CacheFormatError(f"{path}: format_version {version}, expected {FORMAT_VERSION}")
    return f


def _info(f: h5py.File) -> CacheInfo:
    return CacheInfo(
        model_id=_str(f.attrs["model_id"]),
        model_revision=_str(f.attrs["model_revision"]),
        prompt_templates=json.loads(_str(f.attrs["prompt_templates"])),
        layers=[int(x) for x in f.attrs["layers"]],
        params=json.loads(_str(f.attrs["params"])),
        smoke=bool(f.attrs["smoke"]),
    )


def _whole(parent: h5py.Group, name: str) -> np.ndarray:
    """The whole dataset `name` of `parent` as an array: `parent[name][()]` through h5py's
    low-level calls, which skip the selection machinery (half the time on the maps' sizes)."""
    dataset = h5py.h5d.open(parent.id, name.encode())
    out = np.empty(dataset.shape, dataset.dtype)
    dataset.read(h5py.h5s.ALL, h5py.h5s.ALL, out)
    return out


def _read_image(g: h5py.Group, with_heads: bool, with_words: bool = True) -> ImageAttention:
    t = g["tokens"]
    placement = TokenPlacement(
        view=_whole(t, "view"), row=_whole(t, "row"), col=_whole(t, "col"), rect=_whole(t, "rect")
    )

    def words(attrs, name: str, parse=_str):
        return parse(_str(attrs[name])) if with_words else None

    instances = {}
    for key, h in g["instances"].items():
        instances[int(key)] = InstanceAttention(
            gt_id=int(key),
            category_name=words(h.attrs, "category_name"),
            query_text=words(h.attrs, "query_text"),
            target_tokens=words(h.attrs, "target_tokens", json.loads),
            maps=_whole(h, "maps"),
            occluder_names=words(h.attrs, "occluder_names", json.loads),
            occluder_ids=[int(x) for x in h.attrs["occluder_ids"]],
            fallback=_str(h.attrs["fallback"]),
            heads=_whole(h, "heads") if (with_heads and "heads" in h) else None,
        )
    return ImageAttention(
        image_id=int(g.name.rsplit("/", 1)[-1]),
        width=int(g.attrs["width"]),
        height=int(g.attrs["height"]),
        placement=placement,
        instances=instances,
        occlusion_json=words(g.attrs, "occlusion_json"),
        occlusion_raw=words(g.attrs, "occlusion_raw"),
        occlusion_error=words(g.attrs, "occlusion_error"),
    )


def iter_images(path: str | os.PathLike, with_heads: bool = False) -> Iterator[ImageAttention]:
    """Yield every image of a finished cache in stored order."""
    with _open(path) as f:
        for key in f["images"]:
            yield _read_image(f["images"][key], with_heads)


def read_image(path: str | os.PathLike, image_id: int, with_heads: bool = False) -> ImageAttention:
    """One image of a finished cache; a clear error when it is absent."""
    images = read_images(path, [image_id], with_heads)
    try:
        return next(images)
    finally:
        images.close()  # closes the file now


def read_occlusion(path: str | os.PathLike) -> dict[tuple[int, int], tuple[list[str], list[int], str]]:
    """The VLM's occlusion answer per instance, without reading any map.

    Returns {(image_id, gt_id): (occluder_names, occluder_ids, occlusion_error of the image)}.
    """
    out = {}
    with _open(path) as f:
        for key, g in f["images"].items():
            error = _str(g.attrs["occlusion_error"])
            for gt_key, h in g["instances"].items():
                out[(int(key), int(gt_key))] = (
                    json.loads(_str(h.attrs["occluder_names"])),
                    [int(x) for x in h.attrs["occluder_ids"]],
                    error,
                )
    return out


def image_ids(path: str | os.PathLike) -> list[int]:
    """Ids of the images of a finished cache, in stored order, without reading them."""
    with _open(path) as f:
        return [int(key) for key in f["images"]]


def read_images(
    path: str | os.PathLike, ids: Iterable[int], with_heads: bool = False, with_words: bool = True,
) -> Iterator[ImageAttention]:
    """Yield the images `ids` in that order from one open file; a clear error for an absent one.

    `with_words=False` leaves out what the VLM said and was asked (occlusion answer, category and
    query text, target tokens, occluder names: None), which sampling does not read; the maps,
    occluder ids and fallbacks are read either way.
    """
    with _open(path) as f:
        images = f["images"]
        for image_id in ids:
            key = str(int(image_id))
            if key not in images:
                raise CacheFormatError(f"{path}: image {image_id} is not in the attention cache")
            yield _read_image(images[key], with_heads, with_words)
