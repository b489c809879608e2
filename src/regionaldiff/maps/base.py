"""Region-map generators: stimulus image -> regional semantic map (int64 ``[H, W]``, 0 = background).

A generator is selected by the ``regionmap`` config group and instantiated with Hydra. The pipeline's
``prepare`` step calls :func:`regionaldiff.maps.cache.generate_cached`, which runs a per-image generator
(:attr:`RegionMapGenerator.per_image`) chunk by chunk through :meth:`RegionMapGenerator.segment_regions` and keeps
the maps on disk, keyed by :meth:`RegionMapGenerator.config` and each image; other generators (``none``,
``oracle``) answer :meth:`RegionMapGenerator.generate` directly. ``None`` means "no regions" (``regionmap=none``).

Label space
-----------
Every map handed downstream is int64 ``[H, W]`` with values in ``[0, num_classes]``: 0 = background and
``c + 1`` for class ``c`` (models one-hot encode maps with ``num_classes + 1`` channels). Generators that see
class-agnostic regions (SAM, superpixels) may also return an *instance* map (:class:`Regions.instances`):
int64 ``[H, W]``, 0 = no region, ``1..n`` one id per region. Instance ids can exceed ``num_classes``, so they
never enter the semantic map; they are kept beside it (see :mod:`regionaldiff.maps.cache`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from regionaldiff.data.base import SPLITS, EEGDataModule
from regionaldiff.requirements import RequiredPath


@dataclass
class Regions:
    """The regions of one image.

    Attributes
    ----------
    semantic : np.ndarray
        int64 ``[H, W]``: 0 = background, ``label + 1`` on the depicted object (the map used downstream).
    instances : np.ndarray or None
        int64 ``[H, W]``: 0 = no region, ``1..n`` one id per class-agnostic region; None when the generator
        has no instances.
    """

    semantic: np.ndarray
    instances: np.ndarray | None = None


class RegionMapGenerator:
    """Base class of the ``regionmap`` config group.

    Per-image generators override :meth:`segment` (or :meth:`segment_regions`, to batch several images);
    generators that do not work image by image set ``per_image = False`` and override :meth:`generate`.

    Attributes
    ----------
    name : str
        Short name (progress bars, cache folders).
    per_image : bool
        Whether maps are computed image by image (and so can be cached per image).
    produces_maps : bool
        Whether :meth:`generate` gives region maps at all (False only for ``regionmap=none``, whose
        :meth:`generate` returns None): a model conditioned on regions needs a generator that produces them.
    batch_size : int
        Images per :meth:`segment_regions` call.
    """

    name = "base"
    per_image = True
    produces_maps = True
    batch_size = 1

    @classmethod
    def required_files(cls, node: Mapping[str, Any], key: str) -> list[RequiredPath]:
        """The files this generator reads (weights, checkpoints), from its config ``node`` at ``key``, checked by
        ``regionaldiff check`` and before every run without building it; none by default."""
        return []

    def segment(self, image: np.ndarray, label: int) -> np.ndarray:
        """Semantic map of one uint8 ``[H, W, 3]`` image whose class index is ``label``.

        Returns int64 ``[H, W]`` with 0 for background and ``label + 1`` for the depicted object(s).
        """
        raise NotImplementedError

    def segment_regions(self, images: Sequence[np.ndarray], labels: Sequence[int]) -> list[Regions]:
        """Regions of a batch of images (default: :meth:`segment` image by image, no instances)."""
        return [
            Regions(np.asarray(self.segment(image, int(label)), dtype=np.int64))
            for image, label in zip(images, labels)
        ]

    def config(self) -> dict[str, Any]:
        """The settings that determine the maps (the on-disk cache key); runtime knobs (device, batch size) excluded."""
        return {"name": self.name}

    def generate(self, datamodule: EEGDataModule, splits: tuple[str, ...] = SPLITS) -> Mapping[str, np.ndarray] | None:
        """Maps of every stimulus of ``splits``, by stimulus id (in memory; see :mod:`regionaldiff.maps.cache`)."""
        maps: dict[str, np.ndarray] = {}
        for split in splits:
            ids, images, labels = datamodule.stimuli(split)
            todo = [i for i, image_id in enumerate(ids) if image_id not in maps]
            step = max(1, int(self.batch_size))
            with tqdm(total=len(todo), desc=f"{self.name} maps ({split})", leave=False) as bar:
                for start in range(0, len(todo), step):
                    chunk = todo[start : start + step]
                    for i, regions in zip(
                        chunk, self.segment_regions([images[i] for i in chunk], [labels[i] for i in chunk])
                    ):
                        maps[ids[i]] = np.asarray(regions.semantic, dtype=np.int64)
                    bar.update(len(chunk))
        return maps


class NoRegionMap(RegionMapGenerator):
    """``regionmap=none``: regions off (global-only ablations)."""

    name = "none"
    per_image = False
    produces_maps = False

    def generate(self, datamodule: EEGDataModule, splits: tuple[str, ...] = SPLITS) -> None:
        return None


class OracleRegionMap(RegionMapGenerator):
    """``regionmap=oracle``: the dataset's known-truth maps (the synthetic benchmark only)."""

    name = "oracle"
    per_image = False

    def generate(self, datamodule: EEGDataModule, splits: tuple[str, ...] = SPLITS) -> Mapping[str, np.ndarray]:
        maps = datamodule.ground_truth_region_maps()
        if maps is None:
            raise ValueError(
                f"regionmap=oracle needs known-truth region maps, which dataset {datamodule.name!r} does not have. "
                "Use regionmap=sam or regionmap=slic for real datasets, or regionmap=none."
            )
        return maps
