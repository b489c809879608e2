"""``regionmap=slic``: weight-free region maps from scikit-image superpixels and the semantic rule.

Each image is cut into superpixels, by SLIC (``method=slic``: k-means in Lab colour + position,
:func:`skimage.segmentation.slic`) or Felzenszwalb's graph segmentation (``method=felzenszwalb``,
:func:`skimage.segmentation.felzenszwalb`). Every superpixel is one class-agnostic proposal (quality 1);
:mod:`regionaldiff.maps.semantic` then decides which belong to the depicted object.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from skimage.segmentation import felzenszwalb, slic

from regionaldiff.config import SuperpixelRegionMapConfig, schema_from_arguments
from regionaldiff.maps.semantic import ProposalRegionMap, Proposals, SemanticRule


class SuperpixelRegionMap(ProposalRegionMap):
    """Superpixel proposals + the semantic rule.

    Parameters
    ----------
    method : str
        ``slic`` or ``felzenszwalb`` (:data:`regionaldiff.config.SUPERPIXEL_METHODS`).
    n_segments : int
        SLIC: approximate number of superpixels.
    compactness : float
        SLIC: balance of colour and space (higher = more square superpixels).
    sigma : float
        Gaussian smoothing (pixels) before segmenting, both methods.
    scale : float
        Felzenszwalb: observation scale (higher = larger segments).
    min_size : int
        Felzenszwalb: minimum segment size in pixels.
    mode : str
        ``semantic`` or ``instance`` (:mod:`regionaldiff.maps.semantic`).
    rule : mapping or SemanticRule or None
        The semantic rule's parameters (``regionmap.rule``).
    """

    name = "slic"

    def __init__(
        self,
        method: str = "felzenszwalb",
        n_segments: int = 250,
        compactness: float = 5.0,
        sigma: float = 0.5,
        scale: float = 400.0,
        min_size: int = 5,
        mode: str = "semantic",
        rule: SemanticRule | Mapping[str, Any] | None = None,
    ) -> None:
        schema_from_arguments(SuperpixelRegionMapConfig, locals())  # every value checked by the config's schema
        super().__init__(mode=mode, rule=rule)
        self.method = method
        self.n_segments = int(n_segments)
        self.compactness = float(compactness)
        self.sigma = float(sigma)
        self.scale = float(scale)
        self.min_size = int(min_size)

    def superpixels(self, image: np.ndarray) -> np.ndarray:
        """int ``[H, W]`` superpixel index of each pixel of a uint8 ``[H, W, 3]`` image."""
        if self.method == "slic":
            return slic(
                image,
                n_segments=self.n_segments,
                compactness=self.compactness,
                sigma=self.sigma,
                start_label=0,
                channel_axis=-1,
            )
        return felzenszwalb(image, scale=self.scale, sigma=self.sigma, min_size=self.min_size, channel_axis=-1)

    def propose_batch(self, images: Sequence[np.ndarray]) -> list[Proposals]:
        return [Proposals.from_partition(self.superpixels(image)) for image in images]

    def config(self) -> dict[str, Any]:
        params = {"method": self.method, "sigma": self.sigma}
        if self.method == "slic":
            params.update(n_segments=self.n_segments, compactness=self.compactness)
        else:
            params.update(scale=self.scale, min_size=self.min_size)
        return {**super().config(), **params}
