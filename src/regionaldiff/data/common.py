"""Pieces shared by the real-dataset datamodules (EEG-ImageNet, THINGS-EEG2).

- :class:`RowView`: a read-only ``[N, C, T]`` selection of rows of memory-mapped arrays, without a copy (a
  split is a list of rows of the cache; fancy indexing a memmap would read it all into memory).
- :func:`image_table`: decode the stimuli once into the image cache and serve them by id.
- :func:`leak_report`: the stimulus-overlap checks run on every setup.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from regionaldiff.data.cache import ArrayCache
from regionaldiff.data.images import ImageTable, decode_images, report_failed_images

log = logging.getLogger(__name__)


class RowView:
    """Read-only ``[N, C, T]`` view: item ``i`` is ``parts[part[i]][rows[i]]`` (nothing is copied up front).

    Parameters
    ----------
    parts : sequence of np.ndarray
        ``[M_k, C, T]`` arrays (typically memory-mapped), same ``C``, ``T`` and dtype.
    part : np.ndarray
        int ``[N]``: which array each item comes from.
    rows : np.ndarray
        int ``[N]``: its row there.
    """

    ndim = 3

    def __init__(self, parts: Sequence[np.ndarray], part: np.ndarray, rows: np.ndarray) -> None:
        self.parts = list(parts)
        self.part = np.asarray(part, dtype=np.int64)
        self.rows = np.asarray(rows, dtype=np.int64)
        if self.part.shape != self.rows.shape or self.part.ndim != 1:
            raise ValueError("RowView: part and rows must be 1-D and of equal length.")
        inner = {tuple(p.shape[1:]) for p in self.parts}
        if len(inner) > 1:
            raise ValueError(f"RowView: the arrays have different [C, T] shapes {sorted(inner)}.")
        self._inner = inner.pop() if inner else (0, 0)
        self.dtype = self.parts[0].dtype if self.parts else np.dtype(np.float32)

    @classmethod
    def of(cls, array: np.ndarray, rows: np.ndarray) -> RowView:
        return cls([array], np.zeros(len(rows), dtype=np.int64), rows)

    @property
    def shape(self) -> tuple[int, int, int]:
        return (len(self.rows), *self._inner)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index):
        if isinstance(index, (int, np.integer)):
            return np.array(self.parts[self.part[index]][self.rows[index]])  # a writable copy of one row
        selected = np.arange(len(self))[index]
        return np.stack([self[int(i)] for i in selected]) if len(selected) else np.empty((0, *self._inner), self.dtype)

    def __array__(self, dtype=None, copy=None):
        out = self[np.arange(len(self))]
        return out.astype(dtype, copy=False) if dtype is not None else out


def image_table(
    cache_dir: str | Path | None,
    name: str,
    ids: Sequence[str],
    paths: Sequence[Path],
    image_size: int,
    resize: str,
    policy: str,
    verify: str,
) -> tuple[ImageTable, dict[str, str], str]:
    """Stimuli decoded once into the image cache; returns the table, ``{id: reason}`` of failures and the
    cache status (``hit``/``built``). Applies the missing-image policy (raises on ``fail``)."""
    ids = list(ids)
    config = {"ids": ids, "paths": [str(p) for p in paths], "image_size": image_size, "resize": resize}
    cache = ArrayCache(
        cache_dir,
        f"{name}_images",
        config,
        sources={},
        stat_sources={str(i): p for i, p in enumerate(paths)},
        verify=verify,
    )

    def fill(writer):
        out = writer.create("images", (len(ids), image_size, image_size, 3), np.uint8)
        failed = decode_images(ids, list(paths), out, image_size, resize, desc=f"{name} images -> cache")
        return {"failed": failed}

    entry = cache.get_or_build(fill)
    failed = dict(entry.meta.get("failed", {}))
    report_failed_images(failed, policy, name)
    return ImageTable(ids, entry["images"], unavailable=list(failed)), failed, entry.status


def leak_report(
    splits: Mapping[str, Sequence[str]], strict: Sequence[tuple[str, str]] = (("train", "test"), ("val", "test"))
) -> dict[str, int]:
    """Stimulus overlap counts of every pair of splits; raise if a pair in ``strict`` shares a stimulus."""
    from regionaldiff.data.base import check_no_stimulus_leak

    counts = check_no_stimulus_leak(splits, pairs=tuple(strict))
    names = list(splits)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            counts.setdefault(f"{a}_{b}", len(set(splits[a]) & set(splits[b])))
    return counts
