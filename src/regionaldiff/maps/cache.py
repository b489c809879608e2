"""On-disk, resumable cache of region maps, keyed by the generator's config and by each image.

Layout under ``cache_root``::

    <generator name>-<hash of the cache key>/
        config.json                 the cache key in clear (generator config, caller's key, format version)
        shards/shard-<hash>.npz     one file per computed chunk: ids, image digests, maps (and instance maps)

The cache key is :meth:`RegionMapGenerator.config` (the settings that change the maps; not the device or batch
size) plus the caller's optional ``key``. Within a folder an entry is keyed by the stimulus id *and* a digest
of the image's pixels, so a changed image is recomputed even under the same id, and datasets that share
images share their maps.

Maps are computed ``chunk_size`` images at a time; each chunk is written to a temporary file, flushed to disk
and atomically renamed into ``shards/``. An interrupted run therefore loses at most the chunk in progress, and
the next run skips every image already in a shard. A shard that cannot be read is set aside (``*.bad``) and
its images recomputed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from regionaldiff.config import plain
from regionaldiff.data.base import SPLITS, EEGDataModule
from regionaldiff.maps.base import RegionMapGenerator, Regions

log = logging.getLogger(__name__)

CACHE_VERSION = 1


def cache_key(generator: RegionMapGenerator, key: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The full key of ``generator``'s cache folder."""
    return {"version": CACHE_VERSION, "generator": plain(generator.config()), "key": plain(key)}


def cache_folder(cache_root: str | Path, generator: RegionMapGenerator, key: Mapping[str, Any] | None = None) -> Path:
    """``cache_root / <name>-<hash>``: the folder of ``generator``'s maps."""
    text = json.dumps(cache_key(generator, key), sort_keys=True, default=str)
    return Path(cache_root) / f"{generator.name}-{hashlib.sha256(text.encode()).hexdigest()[:16]}"


def image_digest(image: np.ndarray) -> str:
    """Hash of an image's shape, dtype and pixels."""
    image = np.ascontiguousarray(image)
    digest = hashlib.sha1(f"{image.shape}{image.dtype}".encode())
    digest.update(image.tobytes())
    return digest.hexdigest()[:20]


def _compact(array: np.ndarray) -> np.ndarray:
    """The smallest unsigned dtype holding a non-negative label array (stored; read back as int64)."""
    top = int(array.max()) if array.size else 0
    dtype = np.uint8 if top < 2**8 else np.uint16 if top < 2**16 else np.int64
    return array.astype(dtype)


class ShardStore:
    """The shards of one cache folder.

    Parameters
    ----------
    folder : Path
        The cache folder (created when missing).
    key : mapping
        Written to ``config.json`` for people reading the folder.
    """

    def __init__(self, folder: Path, key: Mapping[str, Any]) -> None:
        self.folder = Path(folder)
        self.shards = self.folder / "shards"
        self.shards.mkdir(parents=True, exist_ok=True)
        config = self.folder / "config.json"
        if not config.is_file():
            self._atomic_write(
                config, lambda f: f.write(json.dumps(key, indent=2, sort_keys=True, default=str).encode())
            )

    def _atomic_write(self, path: Path, write) -> None:
        tmp = path.parent / f".tmp-{uuid.uuid4().hex}{path.suffix}"
        try:
            with open(tmp, "wb") as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)

    def index(self) -> dict[str, tuple[str, Path, int]]:
        """stimulus id -> (image digest, shard, position in the shard); later shards win."""
        index: dict[str, tuple[str, Path, int]] = {}
        for shard in sorted(self.shards.glob("shard-*.npz"), key=lambda p: p.stat().st_mtime_ns):
            try:
                with np.load(shard) as data:
                    ids, digests = data["ids"].tolist(), data["digests"].tolist()
            except Exception as err:  # noqa: BLE001 - a damaged file of any kind: set it aside and recompute its images
                log.warning("region-map cache: unreadable shard %s (%s); its images will be recomputed", shard, err)
                shard.replace(shard.with_suffix(".bad"))
                continue
            for j, (image_id, digest) in enumerate(zip(ids, digests)):
                index[image_id] = (digest, shard, j)
        return index

    def write(self, ids: Sequence[str], digests: Sequence[str], regions: Sequence[Regions]) -> Path:
        """Write one shard atomically; return its path."""
        arrays: dict[str, np.ndarray] = {"ids": np.asarray(ids, dtype=str), "digests": np.asarray(digests, dtype=str)}
        for j, r in enumerate(regions):
            arrays[f"s{j}"] = _compact(np.asarray(r.semantic))
            if r.instances is not None:
                arrays[f"i{j}"] = _compact(np.asarray(r.instances))
        name = hashlib.sha1("\n".join(f"{i}:{d}" for i, d in zip(ids, digests)).encode()).hexdigest()[:20]
        path = self.shards / f"shard-{name}.npz"
        self._atomic_write(path, lambda f: np.savez_compressed(f, **arrays))  # type: ignore[arg-type]
        return path

    def read(self, wanted: Mapping[str, tuple[str, Path, int]]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Maps and instance maps (where stored) of the ``wanted`` index entries, as int64."""
        by_shard: dict[Path, list[tuple[str, int]]] = {}
        for image_id, (_, shard, j) in wanted.items():
            by_shard.setdefault(shard, []).append((image_id, j))
        maps, instances = {}, {}
        for shard, entries in by_shard.items():
            with np.load(shard) as data:
                for image_id, j in entries:
                    maps[image_id] = data[f"s{j}"].astype(np.int64)
                    if f"i{j}" in data.files:
                        instances[image_id] = data[f"i{j}"].astype(np.int64)
        return maps, instances


def iter_stimuli(
    datamodule: EEGDataModule, splits: Sequence[str]
) -> Iterator[tuple[str, int, Mapping[str, np.ndarray]]]:
    """Unique stimuli of ``splits`` (first seen wins): id, label and the split's (possibly lazy) image mapping."""
    seen: set[str] = set()
    for split in splits:
        data = datamodule.get_split(split)
        for index, image_id in enumerate(data.image_ids):
            if image_id not in seen:
                seen.add(image_id)
                yield image_id, int(data.labels[index]), data.images


def _check(
    generator: RegionMapGenerator, image_id: str, image: np.ndarray, regions: Regions, num_classes: int | None
) -> None:
    semantic = np.asarray(regions.semantic)
    if semantic.shape != image.shape[:2] or not np.issubdtype(semantic.dtype, np.integer):
        raise ValueError(
            f"regionmap {generator.name!r} returned a {semantic.dtype} map of shape {semantic.shape} for image {image_id!r} "
            f"of shape {image.shape[:2]}; expected an integer map of the image's height and width."
        )
    top = num_classes if num_classes is not None else np.iinfo(np.int64).max
    if semantic.size and (semantic.min() < 0 or semantic.max() > top):
        raise ValueError(
            f"regionmap {generator.name!r} returned labels in [{semantic.min()}, {semantic.max()}] for image {image_id!r}; "
            f"region maps must lie in [0, num_classes={top}] (0 = background, class c -> c + 1)."
        )
    if regions.instances is not None and np.shape(regions.instances) != semantic.shape:
        raise ValueError(
            f"regionmap {generator.name!r}: instance map of image {image_id!r} has shape {np.shape(regions.instances)}."
        )


def generate_cached(
    generator: RegionMapGenerator,
    datamodule: EEGDataModule,
    cache_root: str | Path,
    key: Mapping[str, Any] | None = None,
    splits: Sequence[str] = SPLITS,
    chunk_size: int = 64,
    return_instances: bool = False,
):
    """Region maps of every stimulus of ``splits``, computed once and kept on disk.

    Parameters
    ----------
    generator : RegionMapGenerator
        The ``regionmap``. Generators that are not per-image (``none``, ``oracle``) are answered by their own
        :meth:`~RegionMapGenerator.generate`, uncached.
    datamodule : EEGDataModule
        Source of the stimuli (``get_split(split)``: ids, labels, images).
    cache_root : str or Path
        Root of the cache (e.g. ``${paths.cache_dir}/regionmaps``).
    key : mapping, optional
        Extra namespace of the cache key. Images are already keyed by id and pixels, so None lets datasets that
        share images share maps.
    splits : sequence of str
        Splits whose stimuli get maps.
    chunk_size : int
        Images per shard (the most an interruption can lose).
    return_instances : bool
        Also return the instance maps (stimulus id -> int64 ``[H, W]``, ids ``1..n``) of generators that make them.

    Returns
    -------
    dict or None
        stimulus id -> int64 ``[H, W]`` map (0 = background); ``(maps, instances)`` with ``return_instances``;
        None for ``regionmap=none``.
    """
    if not generator.per_image:
        maps = generator.generate(datamodule, tuple(splits))
        return (maps, {}) if return_instances else maps
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1; got {chunk_size}.")
    full_key = cache_key(generator, key)
    store = ShardStore(cache_folder(cache_root, generator, key), full_key)
    index = store.index()
    stimuli = list(iter_stimuli(datamodule, splits))
    num_classes = getattr(datamodule, "num_classes", None)
    wanted: dict[str, tuple[str, Path, int]] = {}
    computed = 0
    with tqdm(total=len(stimuli), desc=f"{generator.name} maps", unit="img") as bar:
        for start in range(0, len(stimuli), chunk_size):
            chunk = stimuli[start : start + chunk_size]
            images = [np.asarray(images_of[image_id]) for image_id, _, images_of in chunk]
            digests = [image_digest(image) for image in images]
            todo = [j for j, (image_id, _, _) in enumerate(chunk) if index.get(image_id, ("",))[0] != digests[j]]
            if todo:
                # the generator's own batches, so that the bar moves image by image (SAM on a CPU takes tens of
                # seconds an image: a bar that moved once a chunk looked stuck for the whole first chunk)
                regions = []
                step = max(1, int(getattr(generator, "batch_size", 1)))
                for sub in range(0, len(todo), step):
                    part = todo[sub : sub + step]
                    regions += generator.segment_regions([images[j] for j in part], [chunk[j][1] for j in part])
                    bar.update(len(part))
                if len(regions) != len(todo):
                    raise ValueError(
                        f"regionmap {generator.name!r} returned {len(regions)} maps for {len(todo)} images."
                    )
                for j, r in zip(todo, regions):
                    _check(generator, chunk[j][0], images[j], r, num_classes)
                ids = [chunk[j][0] for j in todo]
                shard = store.write(ids, [digests[j] for j in todo], regions)
                index.update({image_id: (digests[j], shard, pos) for pos, (image_id, j) in enumerate(zip(ids, todo))})
                computed += len(todo)
            wanted.update({image_id: index[image_id] for image_id, _, _ in chunk})
            bar.update(len(chunk) - len(todo))  # the cached ones (the computed ones moved the bar already)
            bar.set_postfix(computed=computed, cached=bar.n - computed)
    log.info("%s maps: %d computed, %d from cache %s", generator.name, computed, len(stimuli) - computed, store.folder)
    maps, instances = store.read(wanted)
    maps = {image_id: maps[image_id] for image_id, _, _ in stimuli}
    return (maps, instances) if return_instances else maps
