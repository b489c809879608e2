"""A cache of memory-mapped arrays with a manifest, for dataset conversions.

The first use of a dataset converts its official files (pickles of many small tensors, or whole-file
``np.save`` dicts) into ``.npy`` arrays that later runs open with ``np.load(..., mmap_mode="r")``: nothing is
read until a batch asks for it, so a run starts in well under a second and its memory stays far below the
files' size.

Layout::

    <cache_dir>/<name>/<key>/manifest.json    format version, config, source fingerprints, arrays, meta
    <cache_dir>/<name>/<key>/<array>.npy      the arrays
    <cache_dir>/<name>/<key>.lock             serialises builders of the same key

``key`` is a hash of ``name`` and the preprocessing ``config``, so each configuration has its own entry. An
entry is reused only when the manifest's config equals the requested one and every source file still
matches its fingerprint:

- *hashed* sources (the EEG files): size, a SHA-256 of three 1 MiB samples (start, middle, end) and the
  modification time; when the time differs (a copy, a ``touch``) the full SHA-256 recorded at build time
  decides. ``verify="full"`` always recomputes the full SHA-256.
- *stat* sources (thousands of image files): existence, size and modification time.

Otherwise the entry is rebuilt. Builds are atomic: arrays and the manifest are written to a temporary
folder beside the entry, which replaces the entry by ``os.replace`` only once complete, so an interrupted
conversion never leaves a half-written entry (at worst a stale temporary folder, removed by the next build).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from regionaldiff.artifacts import disk_guard
from regionaldiff.config import VERIFY_MODES, check_choice

log = logging.getLogger(__name__)

CACHE_FORMAT = 1
SAMPLE_BYTES = 1 << 20


# -- fingerprints -------------------------------------------------------------------------------
def sample_digest(path: Path, size: int | None = None) -> str:
    """SHA-256 of the size and three 1 MiB samples (start, middle, end) of ``path``: cheap on any size."""
    size = path.stat().st_size if size is None else size
    digest = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        for offset in sorted({0, max(0, size // 2 - SAMPLE_BYTES // 2), max(0, size - SAMPLE_BYTES)}):
            f.seek(offset)
            digest.update(f.read(SAMPLE_BYTES))
    return digest.hexdigest()


def full_digest(path: Path) -> str:
    """SHA-256 of the whole file."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def hashed_fingerprint(path: Path) -> dict[str, Any]:
    """Fingerprint of a hashed source: size, mtime, sample and full SHA-256."""
    st = path.stat()
    return {
        "path": str(path),
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "sample_sha256": sample_digest(path, st.st_size),
        "sha256": full_digest(path),
    }


def stat_fingerprint(path: Path) -> list[int] | None:
    """Fingerprint of a stat source: ``[size, mtime_ns]``, or None when the file does not exist."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return [st.st_size, st.st_mtime_ns]


def array_checksum(path: Path) -> dict[str, Any]:
    """What a cache's manifest records of an array file it wrote: size, sample and full SHA-256 (an empty array
    kept in memory has no file: nothing)."""
    if not path.is_file():
        return {}
    size = path.stat().st_size
    return {"size": size, "sample_sha256": sample_digest(path, size), "sha256": full_digest(path)}


def config_key(name: str, config: Mapping[str, Any]) -> str:
    """16 hex digits identifying ``name`` + ``config`` (JSON, sorted keys)."""
    text = json.dumps({"name": name, "config": config, "format": CACHE_FORMAT}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# -- entries ------------------------------------------------------------------------------------
@dataclass
class CacheEntry:
    """A complete cache entry: its arrays (memory-mapped, read-only) and the builder's metadata."""

    path: Path
    arrays: dict[str, np.ndarray]
    meta: dict[str, Any]
    status: str  # "hit" (reused) or "built"
    manifest: dict[str, Any] = field(repr=False, default_factory=dict)

    def __getitem__(self, name: str) -> np.ndarray:
        return self.arrays[name]


class StreamedArray:
    """A ``.npy`` file written sequentially in blocks of rows (see :meth:`CacheWriter.create_stream`).

    Parameters
    ----------
    path : Path
        The ``.npy`` file to write.
    shape : tuple of int
        The full array's shape; blocks of ``shape[1:]`` rows are appended until ``shape[0]`` rows are written.
    dtype : numpy.dtype
        The element type (blocks are converted to it).
    """

    def __init__(self, path: Path, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.path = path
        self.shape = shape
        self.dtype = dtype
        self.rows = 0
        self._file = open(path, "wb")  # noqa: SIM115 - closed by close()
        header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape}
        np.lib.format.write_array_header_2_0(self._file, header)

    def write(self, block: np.ndarray) -> None:
        """Append rows ``block`` (shape ``[n, *shape[1:]]``)."""
        block = np.ascontiguousarray(block, dtype=self.dtype)
        if block.shape[1:] != self.shape[1:] or self.rows + len(block) > self.shape[0]:
            raise ValueError(
                f"{self.path.name}: block of shape {block.shape} does not fit rows {self.rows}.. of {self.shape}."
            )
        self._file.write(block.reshape(-1).view(np.uint8).data)
        self.rows += len(block)

    def close(self) -> None:
        """Close the file; every row must have been written."""
        if self._file.closed:
            return
        self._file.close()
        if self.rows != self.shape[0]:
            raise ValueError(f"{self.path.name}: {self.rows} of {self.shape[0]} rows were written.")


class CacheWriter:
    """Hands out arrays to fill inside a build's temporary folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._arrays: dict[str, np.ndarray | StreamedArray] = {}

    def create(self, name: str, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        """A writable array ``name`` of ``shape`` and ``dtype``, memory-mapped to its ``.npy`` file."""
        self._check_name(name)
        shape = tuple(int(s) for s in shape)
        if int(np.prod(shape)) == 0:  # numpy cannot memory-map an empty file
            array = np.empty(shape, dtype=dtype)
        else:
            array = np.lib.format.open_memmap(self.folder / f"{name}.npy", mode="w+", dtype=dtype, shape=shape)
        self._arrays[name] = array
        return array

    def create_stream(self, name: str, shape: tuple[int, ...], dtype: Any) -> StreamedArray:
        """An array ``name`` written front to back in row blocks (:meth:`StreamedArray.write`), straight to its
        ``.npy`` file: unlike :meth:`create`, no written page stays mapped in this process, so the memory of a
        conversion stays at one block whatever the array's size."""
        self._check_name(name)
        stream = StreamedArray(self.folder / f"{name}.npy", tuple(int(s) for s in shape), np.dtype(dtype))
        self._arrays[name] = stream
        return stream

    def save(self, name: str, array: np.ndarray) -> None:
        """Store an in-memory array as ``name``."""
        out = self.create(name, np.shape(array), np.asarray(array).dtype)
        out[...] = array

    def _check_name(self, name: str) -> None:
        if not name.replace("_", "").replace("-", "").isalnum() or name in self._arrays:
            raise ValueError(f"Cache array name {name!r} is invalid or already used.")

    def finish(self) -> dict[str, dict[str, Any]]:
        specs = {}
        for name, array in self._arrays.items():
            if isinstance(array, StreamedArray):
                array.close()
            elif isinstance(array, np.memmap):
                array.flush()
            else:
                np.save(self.folder / f"{name}.npy", array)
            specs[name] = {"shape": list(array.shape), "dtype": array.dtype.str}
        self._arrays.clear()
        return specs


class ArrayCache:
    """One cache entry: reuse it when config and sources match, build it otherwise.

    Parameters
    ----------
    cache_dir : str or Path or None
        The cache root (``paths.cache_dir``). None: a fresh temporary folder (nothing is reused).
    name : str
        The dataset's name (a sub-folder).
    config : Mapping
        Everything the arrays depend on (JSON-serialisable).
    sources : Mapping[str, Path]
        Hashed source files by role (see the module docstring).
    stat_sources : Mapping[str, Path]
        Source files checked by existence, size and modification time only (e.g. images).
    verify : {"quick", "full"}
        How hashed sources are checked on reuse.
    """

    def __init__(
        self,
        cache_dir: str | Path | None,
        name: str,
        config: Mapping[str, Any],
        sources: Mapping[str, Path],
        stat_sources: Mapping[str, Path] | None = None,
        verify: str = "quick",
    ) -> None:
        check_choice("dataset.cache_verify", verify, VERIFY_MODES)
        if cache_dir is None:
            cache_dir = tempfile.mkdtemp(prefix="regionaldiff-cache-")
            log.warning("No dataset.cache_dir set: converting into the temporary folder %s (not reused).", cache_dir)
        self.root = Path(cache_dir) / name
        self.name = name
        self.config = json.loads(json.dumps(dict(config), sort_keys=True, default=str))
        self.sources = {k: Path(v) for k, v in sources.items()}
        self.stat_sources = {k: Path(v) for k, v in (stat_sources or {}).items()}
        self.verify = verify
        self.key = config_key(name, self.config)
        self.path = self.root / self.key
        self.reason = ""  # why the last load() did not reuse the entry
        self.damaged = False  # whether that was a damaged file (warned about) rather than a changed config or source

    # -- reuse ------------------------------------------------------------------------------
    def load(self) -> CacheEntry | None:
        """The entry, when complete and up to date; otherwise None (``self.reason`` says why)."""
        manifest_file = self.path / "manifest.json"
        self.damaged = False
        if not manifest_file.is_file():
            self.reason = "no cache entry yet"
            return None
        try:
            manifest = json.loads(manifest_file.read_text())
        except (OSError, json.JSONDecodeError) as err:
            self.reason = f"unreadable manifest ({err})"
            return None
        if manifest.get("format") != CACHE_FORMAT or manifest.get("config") != self.config:
            self.reason = "the manifest's config differs"
            return None
        if set(manifest.get("sources", {})) != set(self.sources) or set(manifest.get("stat_sources", {})) != set(
            self.stat_sources
        ):
            self.reason = "the set of source files differs"
            return None
        changed = False
        for role, path in self.sources.items():
            ok, updated = self._check_hashed(manifest["sources"][role], path)
            if not ok:
                self.reason = f"source {role} ({path}) changed"
                return None
            changed |= updated
        for role, path in self.stat_sources.items():
            if manifest["stat_sources"][role] != stat_fingerprint(path):
                self.reason = f"source {role} ({path}) changed"
                return None
        arrays = {}
        for name, spec in manifest.get("arrays", {}).items():
            file = self.path / f"{name}.npy"
            damage = self._check_array_file(file, spec)
            if damage:
                self.reason, self.damaged = f"array {name} unreadable ({damage})", True
                return None
            try:
                array = np.load(file, mmap_mode="r" if int(np.prod(spec["shape"])) else None, allow_pickle=False)
            except (OSError, ValueError) as err:
                self.reason, self.damaged = f"array {name} unreadable ({err})", True
                return None
            if list(array.shape) != spec["shape"] or array.dtype.str != spec["dtype"]:
                self.reason = f"array {name} has shape {array.shape} {array.dtype}, manifest says {spec}"
                return None
            arrays[name] = array
        if changed:  # same content, new mtimes: record them so the next check is cheap again
            self._write_manifest(self.path, manifest)
        self.reason = ""
        return CacheEntry(self.path, arrays, manifest.get("meta", {}), "hit", manifest)

    def _check_array_file(self, file: Path, spec: Mapping[str, Any]) -> str:
        """Why an array file does not match the checksum its manifest recorded (empty: it does, or the entry predates
        checksums): the size always, a sample SHA-256 (3 MiB) always, the full SHA-256 with ``verify="full"``."""
        if "size" not in spec:
            return ""
        try:
            size = file.stat().st_size
        except FileNotFoundError:
            return f"{file} is missing"
        if size != spec["size"]:
            return f"{file} has {size} bytes, {spec['size']} were written"
        if sample_digest(file, size) != spec.get("sample_sha256"):
            return f"{file} changed since it was written (SHA-256 of its samples differs)"
        if self.verify == "full" and full_digest(file) != spec.get("sha256"):
            return f"{file} changed since it was written (SHA-256 differs)"
        return ""

    def _check_hashed(self, recorded: dict[str, Any], path: Path) -> tuple[bool, bool]:
        """(matches, manifest updated) for one hashed source."""
        try:
            st = path.stat()
        except FileNotFoundError:
            return False, False
        if st.st_size != recorded.get("size") or sample_digest(path, st.st_size) != recorded.get("sample_sha256"):
            return False, False
        if self.verify == "quick" and st.st_mtime_ns == recorded.get("mtime_ns") and str(path) == recorded.get("path"):
            return True, False
        log.info("Verifying the full SHA-256 of %s (%.1f MB) against the cache manifest", path, st.st_size / 1e6)
        if full_digest(path) != recorded.get("sha256"):
            return False, False
        recorded.update(path=str(path), mtime_ns=st.st_mtime_ns)
        return True, True

    # -- build ------------------------------------------------------------------------------
    def build(self, fill: Callable[[CacheWriter], Mapping[str, Any] | None]) -> CacheEntry:
        """Build the entry: ``fill(writer)`` creates/saves the arrays and returns JSON-able metadata."""
        self.root.mkdir(parents=True, exist_ok=True)
        self._remove_stale_temporaries()
        tmp = self.root / f".{self.key}.tmp-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            # fingerprint before reading, so a source changed during the build is caught by the next load
            sources = {role: hashed_fingerprint(path) for role, path in self.sources.items()}
            stat_sources = {role: stat_fingerprint(path) for role, path in self.stat_sources.items()}
            writer = CacheWriter(tmp)
            start = time.perf_counter()
            with disk_guard(self.root, f"the dataset cache {self.name}"):
                meta = dict(fill(writer) or {})
                specs = writer.finish()
            manifest = {
                "format": CACHE_FORMAT,
                "name": self.name,
                "key": self.key,
                "config": self.config,
                "sources": sources,
                "stat_sources": stat_sources,
                "arrays": {name: {**spec, **array_checksum(tmp / f"{name}.npy")} for name, spec in specs.items()},
                "meta": meta,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "build_seconds": round(time.perf_counter() - start, 3),
            }
            with disk_guard(self.root, f"the dataset cache {self.name}"):
                self._write_manifest(tmp, manifest)
            if self.path.exists():
                old = self.root / f".{self.key}.old-{uuid.uuid4().hex[:8]}"
                os.replace(self.path, old)
                shutil.rmtree(old, ignore_errors=True)
            os.replace(tmp, self.path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        entry = self.load()
        if entry is None:  # pragma: no cover - only if the files changed during the build
            raise RuntimeError(f"The cache entry {self.path} was built but does not validate: {self.reason}.")
        entry.status = "built"
        return entry

    def get_or_build(self, fill: Callable[[CacheWriter], Mapping[str, Any] | None]) -> CacheEntry:
        """Reuse the entry when valid, else build it (one builder per key at a time, across processes)."""
        from filelock import FileLock

        entry = self.load()
        if entry is not None:
            log.info("%s: using the cache %s", self.name, self.path)
            return entry
        self.root.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.root / f"{self.key}.lock")):
            entry = self.load()  # another process may have built it meanwhile
            if entry is not None:
                return entry
            if self.damaged:
                log.warning("%s: the cache %s is damaged (%s); building it again", self.name, self.path, self.reason)
            else:
                log.info("%s: building the cache %s (%s)", self.name, self.path, self.reason)
            return self.build(fill)

    # -- helpers ----------------------------------------------------------------------------
    @staticmethod
    def _write_manifest(folder: Path, manifest: Mapping[str, Any]) -> None:
        tmp = folder / f".manifest.{uuid.uuid4().hex[:8]}.json"
        with open(tmp, "w") as f:
            json.dump(manifest, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, folder / "manifest.json")

    def _remove_stale_temporaries(self) -> None:
        """Leftovers of interrupted builds of this key (callers hold the key's lock or build alone)."""
        for stale in list(self.root.glob(f".{self.key}.tmp-*")) + list(self.root.glob(f".{self.key}.old-*")):
            shutil.rmtree(stale, ignore_errors=True)


# -- single-file caches (the synthetic benchmarks) -------------------------------------------------
def cached_npz(
    cache_dir: Path | None,
    stem: str,
    config: Mapping[str, Any],
    generate: Callable[[], dict[str, np.ndarray]],
    needed_bytes: int | None = None,
) -> dict[str, np.ndarray]:
    """The arrays of ``cache_dir/<stem>.npz`` when it is there and intact, else ``generate()`` saved there.

    ``<stem>.json`` beside it is the marker that the file is complete: the generating ``config`` and the file's size
    and SHA-256 (``file``), written after the file was moved into place. Reuse checks both (hashing the default
    synthetic cache takes milliseconds, docs/failures.md); a file cut short, changed, or unreadable is generated
    again with a one-line warning naming it. A cache written before checksums existed (its ``.json`` holds the bare
    config) is trusted when it loads, and its checksum is recorded then. The file is written to a temporary name
    and moved into place (``os.replace``), so an interrupted or full-disk write never leaves a cache that looks
    complete; a full disk is one line naming the folder and the space needed (``needed_bytes``, else the
    arrays' size).
    ``cache_dir=None`` generates every time.
    """
    from regionaldiff.artifacts import file_checksum, write_atomic

    path = cache_dir / f"{stem}.npz" if cache_dir else None
    if path is not None and path.is_file():
        arrays = _read_npz(path)
        if arrays is not None:
            log.info("synthetic benchmark read from cache %s", path)
            return arrays
    log.info("generating the synthetic benchmark (%s)", stem)
    arrays = generate()
    if path is None:
        return arrays
    # one temporary file per process: parallel jobs of a sweep may build the same dataset at once
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.partial.npz")
    try:
        needed = needed_bytes or sum(int(np.asarray(a).nbytes) for a in arrays.values())
        with disk_guard(path.parent, f"the dataset cache {path.name}", needed):
            path.parent.mkdir(parents=True, exist_ok=True)
            np.savez(tmp, allow_pickle=True, **arrays)  # the default, named so that **arrays cannot bind it
            checksum = file_checksum(tmp)
            tmp.replace(path)  # atomic: an interrupted run never leaves a half-written cache
            marker = {"config": dict(config), "file": {"name": path.name, **checksum}}
            write_atomic(path.with_suffix(".json"), json.dumps(marker, indent=2, default=str))
    finally:
        tmp.unlink(missing_ok=True)
    return arrays


def _read_npz(path: Path) -> dict[str, np.ndarray] | None:
    """The arrays of a cache file that passes its marker's check, else None (with a warning naming the file)."""
    import zipfile

    from regionaldiff.artifacts import file_checksum, write_atomic

    marker_path = path.with_suffix(".json")
    try:
        marker = json.loads(marker_path.read_text())
    except (OSError, json.JSONDecodeError):
        marker = None
    recorded = marker.get("file") if isinstance(marker, dict) and isinstance(marker.get("file"), dict) else None
    if recorded is not None:
        size = path.stat().st_size
        if size != recorded.get("size"):
            log.warning(
                "dataset cache %s has %d bytes, %s were written; generating it again", path, size, recorded.get("size")
            )
            return None
        if file_checksum(path)["sha256"] != recorded.get("sha256"):
            log.warning("dataset cache %s changed since it was written (SHA-256 differs); generating it again", path)
            return None
    try:
        with np.load(path) as data:
            arrays = {key: data[key] for key in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        log.warning("dataset cache %s is unreadable (%s); generating it again", path, err)
        return None
    if recorded is None:  # written before checksums existed: it loads, so record its checksum now
        try:
            config = marker if isinstance(marker, dict) else {}
            write_atomic(
                marker_path,
                json.dumps(
                    {"config": config, "file": {"name": path.name, **file_checksum(path)}}, indent=2, default=str
                ),
            )
        except OSError as err:
            log.debug("could not record the checksum of %s: %s", path, err)
    return arrays
