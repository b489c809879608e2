"""The region-map grid: what a map's labels name, and how maps and the coarse label grid turn into each other.

A region map is an int64 ``[H, W]`` label image (0 = background). What its other labels name is the dataset's
choice, :class:`RegionLabels` (``dataset.region_labels``). The encoder's region head predicts it on a coarse
``grid x grid`` raster: it is trained against :func:`coarse_region_target` (the fraction of each cell each label
covers), and its probabilities ``[B, L, grid, grid]`` go back to pixels through :func:`upsample_probs` (the
ControlNet's condition image) or :func:`upsample_prediction` (label maps, as ``eval/region_miou`` scores them).
:func:`fuse_class_into_map` makes a predicted map agree with the decoded class; :func:`sharpen_map` sharpens it.

A leaf module: it imports nothing of the package but its errors, so that the dataset, the encoder, the LDM and
the evaluation can all read the grid the same way without importing each other.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from regionaldiff.errors import ConfigError


class RegionLabels(enum.Enum):
    """What the labels of a region map name (``dataset.region_labels``), parsed once by the dataset.

    - ``class``: a map's object regions carry their class (label ``c + 1`` for class ``c``; ``num_classes + 1``
      labels): closed label sets such as the synthetic benchmark and EEG-ImageNet;
    - ``layout``: object (1) vs background (0) only (2 labels): transfers to concepts never seen in training, and
      its size does not grow with the concept count, as THINGS-EEG2's zero-shot test split needs.
    """

    CLASS = "class"
    LAYOUT = "layout"

    @classmethod
    def parse(cls, value: str | RegionLabels) -> RegionLabels:
        """The value a config names (``"class"`` or ``"layout"``); a ConfigError naming the allowed ones otherwise."""
        if isinstance(value, cls):
            return value
        try:
            return cls(value)
        except ValueError:
            allowed = [member.value for member in cls]
            raise ConfigError(f"dataset.region_labels must be one of {allowed}; got {value!r}.") from None

    @property
    def are_classes(self) -> bool:
        """Whether a map's object labels name classes (``class``), so that the class head can judge them."""
        return self is RegionLabels.CLASS

    def count(self, num_classes: int) -> int:
        """Labels of a map, background included: ``num_classes + 1`` (class) or 2 (layout)."""
        return num_classes + 1 if self.are_classes else 2

    def names(self, class_names: Sequence[str]) -> list[str]:
        """The name of each label, background first."""
        return ["background", *class_names] if self.are_classes else ["background", "object"]

    def relabel(self, class_map: np.ndarray) -> np.ndarray:
        """A class-labelled map (0 = background, ``c + 1`` = class ``c``) with these labels: itself (class), or
        object (1) / background (0) in the same dtype (layout)."""
        if self.are_classes:
            return class_map
        class_map = np.asarray(class_map)
        return (class_map > 0).astype(class_map.dtype)


def coarse_region_target(region_map: torch.Tensor, num_labels: int, grid: int) -> torch.Tensor:
    """Soft coarse target ``[B, num_labels, grid, grid]``: the fraction of each cell covered by each label.

    Only the labels present in the batch are one-hot encoded and pooled (a map shows a few of them), then scattered
    into the ``num_labels`` channels: the cost grows with the labels in the batch, not with ``num_labels`` (1,855
    for THINGS-EEG2's concepts, where a full one-hot map of a batch of 32 at 64 px is about 1 GB).
    """
    region_map = region_map.long()
    if region_map.numel() and (int(region_map.min()) < 0 or int(region_map.max()) >= num_labels):
        raise ValueError(
            f"region map labels must be in [0, {num_labels}); got [{int(region_map.min())}, {int(region_map.max())}]."
        )
    present, compact = torch.unique(region_map, return_inverse=True)
    pooled = F.adaptive_avg_pool2d(F.one_hot(compact, len(present)).permute(0, 3, 1, 2).float(), grid)
    target = pooled.new_zeros(region_map.shape[0], num_labels, grid, grid)
    target[:, present] = pooled
    return target


def upsample_probs(region_probs: torch.Tensor, size: int) -> torch.Tensor:
    """Coarse label probabilities ``[B, L, g, g]`` -> ``[B, L, size, size]`` (bilinear, the grid's cell centres)."""
    return F.interpolate(region_probs, size=(size, size), mode="bilinear", align_corners=False)


def upsample_prediction(region_probs: np.ndarray, size: int) -> np.ndarray:
    """Coarse probabilities ``[N, L, g, g]`` -> label maps ``[N, size, size]`` (:func:`upsample_probs`, then argmax)."""
    return upsample_probs(torch.from_numpy(region_probs.astype(np.float32)), size).argmax(1).numpy()


def fuse_class_into_map(region_probs: torch.Tensor, class_probs: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Make a predicted region map agree with the decoded class (a product of experts per cell).

    The region head says *where* (background vs object, and which class per cell); the classification head is
    the better judge of *what*. Per cell, the object classes' probabilities are multiplied by the class head's
    and renormalised, keeping the cell's object mass ``1 - p(background)``:
    ``p'(c) = (1 - p(bg)) * p_region(c) p_class(c) / sum_k p_region(k) p_class(k)``. Only for maps whose labels
    are classes (:attr:`RegionLabels.are_classes`).

    Parameters
    ----------
    region_probs : torch.Tensor
        ``[B, K + 1, g, g]`` label probabilities (label 0 = background).
    class_probs : torch.Tensor
        ``[B, K]`` class probabilities.
    """
    if region_probs.shape[1] != class_probs.shape[1] + 1:
        raise ValueError(
            f"region map has {region_probs.shape[1]} labels; expected K + 1 = {class_probs.shape[1] + 1}."
        )
    background = region_probs[:, :1]
    objects = region_probs[:, 1:] * class_probs[:, :, None, None]
    objects = objects / objects.sum(dim=1, keepdim=True).clamp_min(eps) * (1.0 - background)
    return torch.cat([background, objects], dim=1)


def sharpen_map(region_probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """Sharpen ``[B, L, g, g]`` label probabilities per cell: ``p ** (1 / T)`` renormalised over the labels.

    ``temperature`` 1 returns the map unchanged and 0 the one-hot map of its argmax; the argmax never changes.
    """
    if temperature < 0:
        raise ValueError(f"map temperature must be >= 0; got {temperature}.")
    if temperature == 1.0:
        return region_probs
    if temperature == 0.0:
        return F.one_hot(region_probs.argmax(dim=1), region_probs.shape[1]).permute(0, 3, 1, 2).to(region_probs.dtype)
    logp = region_probs.clamp_min(1e-12).log() / temperature
    return logp.softmax(dim=1)
