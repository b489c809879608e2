"""Step artifacts keyed by the part of the config they depend on.

``ArtifactStore(root).slot("pretrain", key)`` is the folder ``root/pretrain/<hash>``, where ``<hash>`` is a
hash of ``key`` (a JSON-able mapping, written next to the outputs as ``key.json``). A finished step writes
``DONE``; a later job with the same key reuses the outputs (a sweep over LDM variants pretrains the encoder
once), and an interrupted step finds its last checkpoint in the same folder and resumes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock


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
        return (self.path / "DONE").is_file()

    def mark_done(self, info: Mapping[str, Any] | None = None) -> None:
        (self.path / "DONE").write_text(json.dumps(dict(info or {}), indent=2, default=str))

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
