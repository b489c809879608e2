"""Stimulus images: decoding, resizing, the missing/corrupt-image policy and a memory-mapped image table.

Images are decoded once, at the dataset's ``image_size``, into a uint8 ``[N, S, S, 3]`` cache array (see
:mod:`regionaldiff.data.cache`); :class:`ImageTable` then serves them by stimulus id without decoding.

A file that is missing or cannot be decoded (ImageNet holds a few such files) is reported by name. With
``on_missing_image="fail"`` the conversion stops with the list; with ``"skip"`` the trials showing it are
dropped, and their number is logged (``data/n_skipped_trials_missing_image``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from regionaldiff.config import RESIZE_MODES, check_choice
from regionaldiff.errors import BadInputError

log = logging.getLogger(__name__)


class ImageFileError(BadInputError):
    """Stimulus images are missing or cannot be decoded (``on_missing_image=fail``)."""


def load_image(path: str | Path, size: int, mode: str = "center_crop") -> np.ndarray:
    """Decode ``path`` into uint8 ``[size, size, 3]`` RGB.

    Parameters
    ----------
    path : str or Path
        An image file PIL can read.
    size : int
        Output side in pixels.
    mode : {"center_crop", "squash", "pad"}
        ``center_crop`` scales the short side to ``size`` and crops the centre (keeps the aspect ratio);
        ``squash`` resizes to a square; ``pad`` fits the whole image and pads with black.

    Raises
    ------
    FileNotFoundError
        No such file.
    OSError
        The file cannot be decoded (truncated or not an image).
    """
    from PIL import Image, ImageOps

    check_choice("dataset.image_resize", mode, RESIZE_MODES)
    with Image.open(path) as file:
        file.load()  # decode now: truncated files fail here, not later in a worker
        img = file.convert("RGB")
        resample = Image.Resampling.BICUBIC
        if mode == "center_crop":
            img = ImageOps.fit(img, (size, size), method=resample)
        elif mode == "pad":
            img = ImageOps.pad(img, (size, size), method=resample, color=(0, 0, 0))
        else:
            img = img.resize((size, size), resample=resample)
        return np.asarray(img, dtype=np.uint8).copy()


def decode_images(
    ids: Sequence[str], paths: Sequence[Path], out: np.ndarray, size: int, mode: str, desc: str = "images"
) -> dict[str, str]:
    """Decode ``paths[i]`` into ``out[i]``; return ``{id: reason}`` of the files that failed (their rows stay 0)."""
    failed: dict[str, str] = {}
    for i, (image_id, path) in enumerate(tqdm(list(zip(ids, paths)), desc=desc, unit="img", leave=False)):
        try:
            out[i] = load_image(path, size, mode)
        except FileNotFoundError:
            failed[image_id] = f"missing file {path}"
        except Exception as err:  # noqa: BLE001 - PIL raises OSError, SyntaxError, ValueError, DecompressionBombError...
            failed[image_id] = f"cannot decode {path} ({type(err).__name__}: {str(err)[:120]})"
    return failed


def report_failed_images(failed: Mapping[str, str], policy: str, dataset: str) -> None:
    """Apply the missing/corrupt-image policy: raise (``fail``) or warn by name (``skip``)."""
    if not failed:
        return
    listing = "\n".join(f"  {name}: {reason}" for name, reason in list(failed.items())[:20])
    more = f"\n  ... and {len(failed) - 20} more" if len(failed) > 20 else ""
    if policy == "fail":
        raise ImageFileError(
            f"{dataset}: {len(failed)} stimulus image(s) are missing or cannot be decoded:\n{listing}{more}\n"
            "Restore the files, or set dataset.on_missing_image=skip to drop the trials that show them."
        )
    log.warning(
        "%s: %d stimulus image(s) are missing or cannot be decoded; their trials are skipped "
        "(dataset.on_missing_image=skip):\n%s%s",
        dataset,
        len(failed),
        listing,
        more,
    )


class ImageTable(Mapping):
    """Read-only mapping stimulus id -> uint8 ``[S, S, 3]`` over a (memory-mapped) ``[N, S, S, 3]`` array.

    Parameters
    ----------
    ids : sequence of str
        The id of each row.
    array : np.ndarray
        uint8 ``[N, S, S, 3]``.
    unavailable : collection of str
        Ids whose image failed to load: looking them up raises ``KeyError``.
    """

    def __init__(self, ids: Sequence[str], array: np.ndarray, unavailable: Sequence[str] = ()) -> None:
        if len(ids) != len(array):
            raise ValueError(f"ImageTable: {len(ids)} ids for {len(array)} images.")
        bad = set(unavailable)
        self._rows = {image_id: i for i, image_id in enumerate(ids) if image_id not in bad}
        self._array = array

    def __getitem__(self, image_id: str) -> np.ndarray:
        return np.array(self._array[self._rows[image_id]])  # a writable copy

    def __contains__(self, image_id: object) -> bool:
        return image_id in self._rows

    def __iter__(self) -> Iterator[str]:
        return iter(self._rows)

    def __len__(self) -> int:
        return len(self._rows)
