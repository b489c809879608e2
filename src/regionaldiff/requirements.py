"""What a component reads, declared in code: :class:`RequiredPath`, and the cheap checks of one path.

A datamodule, map generator or model part lists the files and folders it reads (``required_files()``); the checks
here say whether each is there, readable and of the expected format. :mod:`regionaldiff.preflight` only gathers
these declarations for a whole config and prints them; a component raises :func:`raise_if_missing` itself before
it starts work. This module imports nothing of the package but :mod:`regionaldiff.errors`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from regionaldiff.errors import BadInputError, MissingFileError, one_line

__all__ = [
    "DIFFUSERS_WEIGHT_FILES",
    "SETUP_DOC",
    "TRANSFORMERS_WEIGHT_FILES",
    "PreflightItem",
    "RequiredPath",
    "check_required",
    "describe",
    "diffusers_part",
    "format_problem",
    "format_size",
    "model_folder_check",
    "raise_if_missing",
]

#: the guide that says where each dataset file and weight comes from
SETUP_DOC = "docs/setup.md"
#: weight files of a diffusers model folder (UNet, VAE) and of a transformers one (CLIP)
DIFFUSERS_WEIGHT_FILES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
TRANSFORMERS_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


@dataclass
class RequiredPath:
    """A file or folder something reads, as a datamodule or loader declares it.

    Parameters
    ----------
    what : str
        What it is, e.g. ``"EEG-ImageNet EEG file"``.
    path : Path
        Where it is expected.
    key : str
        The config key(s) that set the path, e.g. ``"dataset.root, dataset.eeg_file"``.
    kind : {"file", "folder"}
        A file or a folder.
    fmt : str or None
        A cheap format check: ``"torch"`` (torch.save file), ``"npy"`` (numpy file), ``"json"``; None = none.
    check : callable, optional
        An extra cheap check ``check(path) -> problem or None`` (run only when the path is there).
    required : bool
        False for files whose absence only skips something (metric weights).
    """

    what: str
    path: Path
    key: str
    kind: str = "file"
    fmt: str | None = None
    check: Callable[[Path], str | None] | None = None
    required: bool = True


@dataclass
class PreflightItem:
    """One checked path: ``status`` is ``ok``, ``missing``, ``unreadable`` or ``bad``; ``note`` says more."""

    what: str
    path: str
    key: str
    status: str
    note: str = ""
    required: bool = True

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def describe(items: list[PreflightItem]) -> list[str]:
    """Short descriptions of unusable items; items missing with their folder are grouped by that folder."""
    parts: list[str] = []
    groups: dict[str, list[PreflightItem]] = {}
    for item in items:
        parent = Path(item.path).parent
        if item.status == "missing" and not parent.exists():
            groups.setdefault(str(parent), []).append(item)
        else:
            parts.append(f"{item.what} {item.status}: {item.path} ({item.key}{': ' + item.note if item.note else ''})")
    grouped = [
        f"folder {folder} does not exist (expected there: "
        f"{', '.join(f'{Path(i.path).name} ({i.what})' for i in members)}; set {members[0].key.split(',')[0]})"
        for folder, members in groups.items()
    ]
    return grouped + parts


# -- path checks ------------------------------------------------------------------------------------------------------
def format_size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit in ("B", "KB") else f"{n:.2f} {unit}"
        n /= 1000
    return f"{n:.2f} TB"  # pragma: no cover


def format_problem(path: Path, fmt: str) -> str | None:
    """A cheap format check of an existing, readable file; a problem description or None."""
    with open(path, "rb") as f:
        head = f.read(16)
    if fmt == "torch":
        if head.startswith(b"PK\x03\x04"):
            return None
        if len(head) > 1 and head[0] == 0x80 and 2 <= head[1] <= 5:  # legacy format: a pickle, protocol 2..5
            return None
        return "not a torch.save file (neither the zip nor the legacy format)"
    if fmt == "npy":
        if not head.startswith(b"\x93NUMPY"):
            return "not a .npy file (no numpy magic string)"
        return None
    if fmt == "json":
        try:
            json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            return f"not valid JSON ({err})"
        return None
    return None


def check_required(req: RequiredPath) -> PreflightItem:
    """Check one path: there, readable, of the expected kind and format, and its own ``check``."""
    path = Path(req.path)
    item = PreflightItem(req.what, str(path), req.key, "ok", required=req.required)
    if not path.exists():
        item.status = "missing"
        if not path.parent.exists():
            item.note = f"the folder {path.parent} does not exist either"
        return item
    if req.kind == "folder" and not path.is_dir():
        item.status, item.note = "bad", "a file, not a folder"
        return item
    if req.kind == "file" and not path.is_file():
        item.status, item.note = "bad", "a folder, not a file"
        return item
    if not os.access(path, os.R_OK | (os.X_OK if req.kind == "folder" else 0)):
        item.status, item.note = "unreadable", "no read permission"
        return item
    try:
        if req.kind == "file":
            size = path.stat().st_size
            item.note = format_size(size)
            if size == 0:
                item.status, item.note = "bad", "empty file"
                return item
            problem = format_problem(path, req.fmt) if req.fmt else None
        else:
            problem = None
        if problem is None and req.check is not None:
            problem = req.check(path)
    except OSError as err:
        item.status, item.note = "unreadable", f"{type(err).__name__}: {err}"
        return item
    if problem:
        item.status, item.note = "bad", one_line(problem)
    return item


def raise_if_missing(required: Iterable[RequiredPath], hint: str | None = None) -> None:
    """Raise one :class:`~regionaldiff.errors.MissingFileError` naming every required path that is not usable.

    Datamodules call this before they start a cache, so a missing file never leaves a half-started one.
    """
    bad = [item for item in (check_required(r) for r in required) if item.required and not item.ok]
    if bad:
        listing = "; ".join(describe(bad))
        cls = MissingFileError if all(item.status == "missing" for item in bad) else BadInputError
        raise cls(f"{listing}. See {SETUP_DOC} for where to get the files, then run `regionaldiff check`.", hint=hint)


def model_folder_check(part: str, weight_files: tuple[str, ...]) -> Callable[[Path], str | None]:
    """A :attr:`RequiredPath.check` for a saved model folder (diffusers / transformers): ``config.json`` that
    parses, and one of ``weight_files``."""

    def check(folder: Path) -> str | None:
        config = folder / "config.json"
        if not config.is_file():
            return f"no config.json in the {part} folder"
        problem = format_problem(config, "json")
        if problem:
            return f"{config.name}: {problem}"
        if not any((folder / name).is_file() for name in weight_files):
            return f"no weights file ({' or '.join(weight_files)})"
        return None

    return check


def diffusers_part(what: str, part: str, node: Mapping[str, Any], key: str, default_subfolder: str) -> RequiredPath:
    """The folder a diffusers model part reads (``node["pretrained"]`` / its ``subfolder``), with its check."""
    sub = node.get("subfolder", default_subfolder) or ""
    return RequiredPath(
        what,
        Path(str(node["pretrained"])) / sub,
        f"{key}.pretrained, {key}.subfolder",
        kind="folder",
        check=model_folder_check(part, DIFFUSERS_WEIGHT_FILES),
    )
