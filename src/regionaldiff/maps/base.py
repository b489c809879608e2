"""Mask-map generators: stimulus image -> regional semantic map (int64 ``[H, W]``, 0 = background).

A generator is selected by the ``maskmap`` config group and instantiated with Hydra. The pipeline's
``prepare`` step calls :meth:`MaskMapGenerator.generate` once per dataset and caches the result on disk,
keyed by the generator's config; ``None`` means "no regions" (``maskmap=none``).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from tqdm.auto import tqdm

from regionaldiff.data.base import SPLITS, EEGDataModule


class MaskMapGenerator:
    """Base class. Per-image generators override :meth:`segment`; others override :meth:`generate`."""

    name = "base"

    def segment(self, image: np.ndarray, label: int) -> np.ndarray:
        """Semantic map of one uint8 ``[H, W, 3]`` image whose class index is ``label``.

        Returns int64 ``[H, W]`` with 0 for background and ``label + 1`` for the depicted object(s).
        """
        raise NotImplementedError

    def generate(self, datamodule: EEGDataModule, splits: tuple[str, ...] = SPLITS) -> Mapping[str, np.ndarray] | None:
        """Maps of every stimulus of ``splits``, by stimulus id."""
        maps: dict[str, np.ndarray] = {}
        for split in splits:
            ids, images, labels = datamodule.stimuli(split)
            for image_id, image, label in tqdm(
                list(zip(ids, images, labels)), desc=f"{self.name} maps ({split})", leave=False
            ):
                if image_id not in maps:
                    maps[image_id] = np.asarray(self.segment(image, label), dtype=np.int64)
        return maps


class NoMaskMap(MaskMapGenerator):
    """``maskmap=none``: regions off (global-only ablations)."""

    name = "none"

    def generate(self, datamodule: EEGDataModule, splits: tuple[str, ...] = SPLITS) -> None:
        return None


class OracleMaskMap(MaskMapGenerator):
    """``maskmap=oracle``: the dataset's known-truth maps (the synthetic benchmark only)."""

    name = "oracle"

    def generate(self, datamodule: EEGDataModule, splits: tuple[str, ...] = SPLITS) -> Mapping[str, np.ndarray]:
        maps = datamodule.ground_truth_region_maps()
        if maps is None:
            raise ValueError(
                f"maskmap=oracle needs known-truth region maps, which dataset {datamodule.name!r} does not have. "
                "Use maskmap=sam or maskmap=slic for real datasets, or maskmap=none."
            )
        return maps
