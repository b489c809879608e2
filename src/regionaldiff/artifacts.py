"""Step artifacts keyed by the part of the config they depend on.

``ArtifactStore(root).slot("pretrain", key)`` is the folder ``root/pretrain/<hash>``, where ``<hash>`` is a
hash of ``key`` (a JSON-able mapping, written next to the outputs as ``key.json``). A finished step writes
``DONE``; a later job with the same key reuses the outputs (a sweep over LDM variants pretrains the encoder
once), and an interrupted step finds its last checkpoint in the same folder and resumes.

``DONE`` carries the size and SHA-256 of every output file (``checksums``), written after the outputs and
atomically (a temporary file, then ``os.replace``), so a slot is never marked complete over a half-written file.
Reuse checks them (:attr:`Slot.done`): a file cut short or changed since (a full disk, a copy that stopped, a
crash of the file system) makes the slot not done, with a one-line warning naming the file, and the step builds
it again (under the slot's lock, so a sweep whose jobs share the slot rebuilds it once). Hashing costs about a
second per GB (docs/failures.md has the measurements); the files are small at the default sizes. A ``DONE``
written before checksums existed is trusted as before, and its checksums are recorded on that first reuse.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import shutil
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock

from regionaldiff.errors import UserError

log = logging.getLogger(__name__)

#: ``DONE``'s entry with the output files' sizes and SHA-256
CHECKSUMS = "checksums"
#: files of a slot that are not its outputs: the marker, the key, the lock, the rolling checkpoint, temporaries
NOT_OUTPUTS = ("DONE", "key.json", ".lock")


class DiskFullError(UserError, OSError):
    """The disk filled up while a cache, checkpoint or artifact was written (names the folder and the space)."""


def free_bytes(folder: Path) -> int | None:
    """Free space on the file system of ``folder`` (its nearest existing parent); None when unknown."""
    for candidate in [folder, *folder.parents]:
        if candidate.exists():
            try:
                return shutil.disk_usage(candidate).free
            except OSError:
                return None
    return None


def megabytes(n: int) -> str:
    return f"{n / 1e6:,.1f} MB"


def disk_full_error(folder: Path, what: str, needed: int | None = None) -> DiskFullError:
    """The one-line error for a full disk while writing ``what`` into ``folder``."""
    free = free_bytes(folder)
    space = f"{megabytes(free)} free there" if free is not None else "free space unknown"
    if needed:
        space += f", about {megabytes(needed)} needed"
    return DiskFullError(
        f"the disk is full: writing {what} in {folder} failed (no space left on device; {space}). Nothing "
        "half-written was marked complete: free some space there (or point paths.output_root / paths.cache_dir "
        "at a larger disk) and run the same command again; it resumes where it stopped.",
    )


def is_disk_full(err: BaseException) -> bool:
    """True for an ``OSError`` with ``errno.ENOSPC`` (or ``EDQUOT``, a full quota) anywhere in ``err``'s chain, and for
    torch's writer failing the same way (it raises ``RuntimeError`` with "file write failed")."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        current = current.__cause__ or current.__context__
    return False


@contextmanager
def disk_guard(folder: Path, what: str, needed: int | None = None) -> Iterator[None]:
    """Turn a full disk while writing ``what`` into ``folder`` into :class:`DiskFullError` (one line)."""
    try:
        yield
    except DiskFullError:
        raise
    except OSError as err:
        if is_disk_full(err):
            raise disk_full_error(folder, what, needed) from err
        raise


def write_atomic(path: Path, data: bytes | str) -> None:
    """Write ``path`` through a temporary file beside it and ``os.replace``: readers never see a partial file, and a
    failed write (a full disk) leaves the old file, or none, never a truncated one."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with disk_guard(path.parent, path.name):
            with open(tmp, "wb") as f:
                f.write(data.encode() if isinstance(data, str) else data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def file_checksum(path: Path) -> dict[str, Any]:
    """``{"size": bytes, "sha256": hex}`` of ``path``."""
    with open(path, "rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()
    return {"size": path.stat().st_size, "sha256": digest}


def output_files(folder: Path) -> list[Path]:
    """A slot's output files: everything under it except :data:`NOT_OUTPUTS`, ``checkpoints/`` and hidden files."""
    files = []
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if not path.is_file() or rel.parts[0] == "checkpoints" or str(rel) in NOT_OUTPUTS:
            continue
        if any(part.startswith(".") for part in rel.parts):
            continue
        files.append(path)
    return files


def checksums(folder: Path) -> dict[str, dict[str, Any]]:
    """Size and SHA-256 of each of ``folder``'s output files, by relative path."""
    return {str(path.relative_to(folder)): file_checksum(path) for path in output_files(folder)}


def verify(folder: Path, recorded: Mapping[str, Mapping[str, Any]]) -> str:
    """Why ``folder``'s files do not match ``recorded`` (empty: they do): a file missing, of another size, or with
    another SHA-256. The size is checked first, so a file cut short costs no hashing."""
    for rel, expected in recorded.items():
        path = folder / rel
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            return f"{path} is missing"
        if size != expected.get("size"):
            return f"{path} has {size} bytes, {expected.get('size')} were written"
    for rel, expected in recorded.items():
        if file_checksum(folder / rel)["sha256"] != expected.get("sha256"):
            return f"{folder / rel} changed since it was written (SHA-256 differs)"
    return ""


def config_hash(key: Mapping[str, Any]) -> str:
    """Stable short hash of a JSON-able mapping (key order does not matter)."""
    blob = json.dumps(key, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Slot:
    """One step's artifact folder."""

    path: Path
    key_hash: str

    @property
    def done(self) -> bool:
        """True when the slot is complete and its files are those ``DONE`` recorded. A slot whose files fail the
        check is marked not done (``DONE`` moved to ``DONE.invalid``) with a warning naming the file, so the step
        builds it again; call it under :meth:`lock`, as the steps do."""
        marker = self.path / "DONE"
        if not marker.is_file():
            return False
        try:
            info = json.loads(marker.read_text() or "{}")
        except (OSError, json.JSONDecodeError) as err:
            return self._invalid(f"its marker {marker} is unreadable ({err})")
        recorded = info.get(CHECKSUMS) if isinstance(info, dict) else None
        if not isinstance(recorded, dict):
            # written before checksums existed: trusted as before; its checksums are recorded now, so that a later
            # change is caught
            try:
                info = info if isinstance(info, dict) else {}
                write_atomic(marker, json.dumps({**info, CHECKSUMS: checksums(self.path)}, indent=2, default=str))
            except OSError as err:
                log.debug("could not record the checksums of %s: %s", self.path, err)
            return True
        problem = verify(self.path, recorded)
        if problem:
            return self._invalid(problem)
        return True

    def _invalid(self, problem: str) -> bool:
        log.warning("artifact %s is damaged: %s; building it again", self.path, problem)
        (self.path / "DONE").replace(self.path / "DONE.invalid")
        return False

    def mark_done(self, info: Mapping[str, Any] | None = None) -> None:
        """Mark the slot complete, with ``info`` (e.g. the final metrics) and the checksums of its output files; call
        it only once every output is written."""
        payload = {**dict(info or {}), CHECKSUMS: checksums(self.path)}
        write_atomic(self.path / "DONE", json.dumps(payload, indent=2, default=str))

    def lock(self) -> FileLock:
        """A lock so that two jobs of a parallel sweep never build the same artifact at once."""
        return FileLock(str(self.path / ".lock"))


class ArtifactStore:
    """Folder of step artifacts shared by every job under one output root."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def slot(self, step: str, key: Mapping[str, Any]) -> Slot:
        digest = config_hash(key)
        path = self.root / step / digest
        path.mkdir(parents=True, exist_ok=True)
        key_file = path / "key.json"
        if not key_file.exists():
            key_file.write_text(json.dumps(key, indent=2, sort_keys=True, default=str))
        return Slot(path, digest)
