"""Score a folder of generated images against a folder of ground-truth images (e.g. another method's outputs).

Files are matched by name: reference ``<stem>.<ext>`` pairs with generated ``<stem>.<ext>`` and/or
``<stem>_s<k>.<ext>`` (``k = 0, 1, ...``: several samples for one trial, as the pipeline writes them). Every
reference needs the same number of samples. Extensions may differ (``.png``, ``.jpg``, ``.jpeg``, ``.webp``,
``.bmp``). Images are read as RGB; when sizes differ within a folder, set ``eval.image_size`` to resize all of it
(bicubic, square) - the metrics resize again to their own published resolutions.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from regionaldiff.config import EvalConfig
from regionaldiff.errors import BadInputError
from regionaldiff.evaluation.suite import EvalResult, eval_config, evaluate_images

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}
_SAMPLE = re.compile(r"^(?P<stem>.+)_s(?P<k>\d+)$")


def _images(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        raise BadInputError(f"evaluate_folders: {folder} is not a folder.")
    files: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() in IMAGE_EXTENSIONS:
            if path.stem in files:
                raise BadInputError(
                    f"evaluate_folders: {path.name} and {files[path.stem].name} have the same name in {folder}."
                )
            files[path.stem] = path
    if not files:
        raise BadInputError(f"evaluate_folders: no images ({sorted(IMAGE_EXTENSIONS)}) in {folder}.")
    return files


def match_folders(
    generated_dir: str | Path, reference_dir: str | Path
) -> tuple[list[str], list[list[Path]], list[Path]]:
    """Pair files by name: ``(stems, generated paths [N][S], reference paths [N])`` in sorted stem order."""
    references = _images(Path(reference_dir))
    generated: dict[str, dict[int, Path]] = {}
    for stem, path in _images(Path(generated_dir)).items():
        if stem in references:
            generated.setdefault(stem, {})[-1] = path
            continue
        match = _SAMPLE.match(stem)
        if match and match["stem"] in references:
            generated.setdefault(match["stem"], {})[int(match["k"])] = path
            continue
        raise BadInputError(
            f"evaluate_folders: generated image {path.name} has no reference named {stem} (or {stem} without _s<k>) in {reference_dir}."
        )
    missing = sorted(set(references) - set(generated))
    if missing:
        raise BadInputError(
            f"evaluate_folders: {len(missing)} reference image(s) have no generated image, e.g. {missing[:3]}."
        )
    stems = sorted(references)
    grouped = [[generated[s][k] for k in sorted(generated[s])] for s in stems]
    counts = {len(g) for g in grouped}
    if len(counts) != 1:
        raise BadInputError(
            f"evaluate_folders: every reference needs the same number of generated samples, found {sorted(counts)}."
        )
    return stems, grouped, [references[s] for s in stems]


def _load(paths: list[Path], size: int | None, what: str) -> np.ndarray:
    from PIL import Image

    arrays = []
    for path in paths:
        with Image.open(path) as opened:
            im = opened.convert("RGB")
            if size is not None and im.size != (size, size):
                im = im.resize((size, size), Image.Resampling.BICUBIC)
            arrays.append(np.asarray(im, dtype=np.uint8))
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1:
        raise BadInputError(
            f"evaluate_folders: {what} images have different sizes {sorted(shapes)[:3]}; set eval.image_size to resize them."
        )
    return np.stack(arrays)


def evaluate_folders(
    generated_dir: str | Path, reference_dir: str | Path, cfg: EvalConfig | Mapping[str, Any] | None
) -> EvalResult:
    """Run :func:`~regionaldiff.evaluation.suite.evaluate_images` on two folders of images matched by file name.

    Parameters
    ----------
    generated_dir, reference_dir : str or Path
        Folders of images (see the module docstring for the naming).
    cfg : EvalConfig, Mapping or None
        The ``eval`` settings (filled and checked by :func:`~regionaldiff.evaluation.suite.eval_config`);
        ``image_size`` (optional) resizes every image to a square of that size.
    """
    settings = eval_config(cfg)
    size = int(settings.image_size) if settings.image_size else None
    _, generated_paths, reference_paths = match_folders(generated_dir, reference_dir)
    reference = _load(reference_paths, size, "reference")
    flat = _load([p for group in generated_paths for p in group], size, "generated")
    generated = flat.reshape(len(reference_paths), len(generated_paths[0]), *flat.shape[1:])
    return evaluate_images(generated, reference, cfg=settings)
