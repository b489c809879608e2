"""From class-agnostic masks to a semantic map: which regions belong to the depicted object.

SAM and superpixel methods return *class-agnostic* masks ("proposals"). The stimulus comes with one class /
concept label, so a semantic map needs a rule deciding which proposals show the depicted object. The rule
(:class:`SemanticRule`, config ``regionmap.rule``) is, in order:

1. **Filter.** Drop a proposal when its area is below ``min_area`` or above ``max_area`` (fractions of the
   image; the upper bound removes "whole image" / background masks), when its quality score (SAM's
   ``predicted_iou * stability_score``, 1 for superpixels) is below ``min_quality``, or when it covers more than
   ``max_border`` of the image's border frame (a background cue: objects rarely run all along the frame).
2. **Saliency prior.** A per-pixel saliency in [0, 1] (:func:`saliency_map`) mixes colour contrast and a
   centre prior: ``(1 - center_weight) * contrast + center_weight * centre``. *Contrast* is the CIE-Lab
   distance of a pixel to the nearest of ``border_clusters`` colours of the border frame (k-means; the frame is
   taken as background), divided by its 99th percentile and clipped to 1. *Centre* is a Gaussian of the
   distance to the image centre with standard deviation ``center_sigma`` (fraction of the image side).
3. **Score and keep.** A proposal's score is its mean saliency times its quality score. The kept proposals are
   those scoring at least ``max(keep_ratio * best score, min_saliency)``; the ``min_keep`` best are always
   kept (so an image with any valid proposal gets an object), and at most ``max_regions`` (0 = no limit).
4. **Paint.** The union of the kept proposals gets ``label + 1``, the rest 0. With ``largest_component``,
   only the largest 8-connected component of that union is kept (one object per image).

``mode`` (a generator argument) chooses what the downstream map is:

- ``semantic``: the map above.
- ``instance``: as in the authors' release, every proposal that passes step 1 is its own region. The instance
  ids (``1..n``, proposals painted from the largest to the smallest so that small regions stay visible) are
  returned in :attr:`Regions.instances` and cached beside the maps; the downstream map, which models one-hot
  encode with ``num_classes + 1`` channels, gets ``label + 1`` on every pixel covered by some region and 0
  elsewhere. Instance ids never enter the label space, so instance-mode maps are always valid inputs.

In both modes :attr:`Regions.instances` holds the filtered proposals' ids.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import ndimage
from skimage.color import rgb2lab

from regionaldiff.config import REGIONMAP_MODES, RuleConfig, check_choice, schema_from_arguments
from regionaldiff.maps.base import RegionMapGenerator, Regions


@dataclass
class Proposals:
    """Class-agnostic masks of one image.

    Attributes
    ----------
    masks : np.ndarray
        bool ``[K, H, W]`` (may overlap).
    quality : np.ndarray
        float ``[K]`` in [0, 1]: the proposal generator's own confidence (1 when it has none).
    """

    masks: np.ndarray
    quality: np.ndarray

    @classmethod
    def from_partition(cls, segments: np.ndarray) -> Proposals:
        """One proposal per distinct value of an integer ``[H, W]`` partition (e.g. superpixels)."""
        values = np.unique(segments)
        return cls(segments[None] == values[:, None, None], np.ones(len(values)))

    def __post_init__(self) -> None:
        self.masks = np.asarray(self.masks, dtype=bool)
        self.quality = np.asarray(self.quality, dtype=np.float64).reshape(-1)
        if self.masks.ndim != 3 or len(self.quality) != len(self.masks):
            raise ValueError(
                f"Proposals need masks [K, H, W] and quality [K]; got {self.masks.shape} and {self.quality.shape}."
            )


def _border_frame(height: int, width: int) -> np.ndarray:
    """bool ``[H, W]``: the outer frame, ``max(1, min(H, W) // 32)`` pixels wide."""
    w = max(1, min(height, width) // 32)
    frame = np.ones((height, width), dtype=bool)
    frame[w:-w, w:-w] = False
    return frame


def _kmeans(points: np.ndarray, k: int, iters: int = 10) -> np.ndarray:
    """Centres of a small deterministic k-means (farthest-point initialisation)."""
    k = max(1, min(k, len(points)))
    chosen = [points.mean(0)]
    for _ in range(k - 1):
        d = np.min([((points - c) ** 2).sum(1) for c in chosen], axis=0)
        chosen.append(points[int(d.argmax())])
    centres = np.stack(chosen)
    for _ in range(iters):
        assign = ((points[:, None] - centres[None]) ** 2).sum(-1).argmin(1)
        for j in range(k):
            if (assign == j).any():
                centres[j] = points[assign == j].mean(0)
    return centres


def saliency_map(
    image: np.ndarray, center_weight: float = 0.3, center_sigma: float = 0.3, border_clusters: int = 3
) -> np.ndarray:
    """Per-pixel saliency in [0, 1] of a uint8 ``[H, W, 3]`` image: border-colour contrast and a centre prior.

    Parameters
    ----------
    image : np.ndarray
        uint8 ``[H, W, 3]`` RGB.
    center_weight : float
        Weight of the centre prior (0 = contrast only, 1 = centre only).
    center_sigma : float
        Standard deviation of the centre prior, as a fraction of the image side.
    border_clusters : int
        Number of background colours taken from the border frame.

    Returns
    -------
    np.ndarray
        float64 ``[H, W]`` in [0, 1].
    """
    height, width = image.shape[:2]
    lab = rgb2lab(np.asarray(image)[..., :3])
    centres = _kmeans(lab[_border_frame(height, width)], border_clusters)
    contrast = np.sqrt(((lab[:, :, None, :] - centres[None, None]) ** 2).sum(-1)).min(-1)
    scale = float(np.percentile(contrast, 99))
    contrast = np.clip(contrast / scale, 0.0, 1.0) if scale > 1e-6 else np.zeros_like(contrast)
    ys = (np.arange(height) + 0.5) / height - 0.5
    xs = (np.arange(width) + 0.5) / width - 0.5
    centre = np.exp(-(ys[:, None] ** 2 + xs[None, :] ** 2) / (2 * center_sigma**2))
    return (1.0 - center_weight) * contrast + center_weight * centre


@dataclass(frozen=True)
class SemanticRule:
    """The configurable rule that keeps the proposals showing the depicted object (see the module docstring).

    Parameters
    ----------
    min_area, max_area : float
        Allowed proposal area, as fractions of the image (``0 <= min_area < max_area <= 1``).
    min_quality : float
        Minimum quality score of a proposal, in [0, 1].
    max_border : float
        Maximum fraction of the image's border frame a proposal may cover, in [0, 1].
    center_weight, center_sigma, border_clusters
        The saliency prior (:func:`saliency_map`).
    keep_ratio : float
        Keep proposals scoring at least this fraction of the best score, in [0, 1].
    min_saliency : float
        Absolute lower bound on a kept proposal's score, in [0, 1].
    min_keep : int
        The best ``min_keep`` proposals are always kept (0 allows an all-background map).
    max_regions : int
        At most this many proposals are kept (0 = no limit).
    largest_component : bool
        Keep only the largest connected component of the object (one object per image).
    """

    min_area: float = 0.0
    max_area: float = 0.6
    min_quality: float = 0.0
    max_border: float = 0.3
    center_weight: float = 0.3
    center_sigma: float = 0.3
    border_clusters: int = 3
    keep_ratio: float = 0.5
    min_saliency: float = 0.2
    min_keep: int = 1
    max_regions: int = 0
    largest_component: bool = False

    def __post_init__(self) -> None:
        schema_from_arguments(RuleConfig, asdict(self))  # every value checked by the config's schema

    @classmethod
    def build(cls, rule: SemanticRule | Mapping[str, Any] | None) -> SemanticRule:
        """A rule from a rule, a mapping of its parameters (a config node) or None (the defaults)."""
        if rule is None:
            return cls()
        if isinstance(rule, cls):
            return rule
        params = dict(rule)  # type: ignore[arg-type]  # a Mapping here (a SemanticRule returned above)
        unknown = sorted(set(params) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"Unknown regionmap.rule keys {unknown}; allowed: {sorted(cls.__dataclass_fields__)}.")
        return cls(**params)

    def config(self) -> dict[str, Any]:
        return asdict(self)

    def candidates(self, proposals: Proposals) -> np.ndarray:
        """Indices of the proposals that pass the filters (step 1)."""
        masks = proposals.masks
        if len(masks) == 0:
            return np.zeros(0, dtype=np.int64)
        height, width = masks.shape[1:]
        area = masks.sum((1, 2)) / float(height * width)
        frame = _border_frame(height, width)
        border = (masks & frame).sum((1, 2)) / float(frame.sum())
        ok = (
            (area > 0)
            & (area >= self.min_area)
            & (area <= self.max_area)
            & (proposals.quality >= self.min_quality)
            & (border <= self.max_border)
        )
        return np.flatnonzero(ok)

    def select(self, image: np.ndarray, proposals: Proposals, candidates: np.ndarray) -> np.ndarray:
        """bool ``[H, W]``: the object, the union of the kept candidates (steps 2-4)."""
        height, width = image.shape[:2]
        if len(candidates) == 0:
            return np.zeros((height, width), dtype=bool)
        saliency = saliency_map(image, self.center_weight, self.center_sigma, self.border_clusters)
        scores = np.array([saliency[proposals.masks[k]].mean() for k in candidates]) * proposals.quality[candidates]
        order = np.argsort(-scores, kind="stable")
        keep = scores >= max(self.keep_ratio * scores.max(), self.min_saliency)
        keep[order[: self.min_keep]] = True
        if self.max_regions:
            keep[order[self.max_regions :]] = False
        union = proposals.masks[candidates[keep]].any(0)
        if self.largest_component and union.any():
            components, n = ndimage.label(union, structure=np.ones((3, 3)))
            sizes = np.bincount(components.ravel(), minlength=n + 1)
            sizes[0] = 0
            union = components == sizes.argmax()
        return union


def instance_map(proposals: Proposals, candidates: np.ndarray) -> np.ndarray:
    """int64 ``[H, W]`` ids ``1..n`` of the candidates, painted largest first (0 = no region)."""
    height, width = proposals.masks.shape[1:]
    instances = np.zeros((height, width), dtype=np.int64)
    areas = proposals.masks[candidates].sum((1, 2))
    for rank, k in enumerate(candidates[np.argsort(-areas, kind="stable")], start=1):
        instances[proposals.masks[k]] = rank
    return instances


def proposals_to_regions(
    image: np.ndarray, proposals: Proposals, label: int, rule: SemanticRule, mode: str
) -> Regions:
    """Apply ``rule`` in ``mode`` (``semantic`` or ``instance``) to one image's proposals."""
    check_choice("regionmap.mode", mode, REGIONMAP_MODES)
    height, width = image.shape[:2]
    if proposals.masks.shape[1:] != (height, width):
        raise ValueError(f"Proposals of shape {proposals.masks.shape[1:]} for an image of shape {(height, width)}.")
    candidates = rule.candidates(proposals)
    instances = instance_map(proposals, candidates)
    foreground = instances > 0 if mode == "instance" else rule.select(image, proposals, candidates)
    semantic = np.where(foreground, int(label) + 1, 0).astype(np.int64)
    return Regions(semantic, instances)


class ProposalRegionMap(RegionMapGenerator):
    """Base of generators that propose class-agnostic masks and apply a :class:`SemanticRule`.

    Subclasses implement :meth:`propose_batch` and extend :meth:`config` with their own settings.

    Parameters
    ----------
    mode : str
        ``semantic`` or ``instance`` (see the module docstring).
    rule : SemanticRule, mapping or None
        The rule's parameters (``regionmap.rule``); None = the defaults.
    """

    def __init__(self, mode: str = "semantic", rule: SemanticRule | Mapping[str, Any] | None = None) -> None:
        check_choice("regionmap.mode", mode, REGIONMAP_MODES)
        self.mode = mode
        self.rule = SemanticRule.build(rule)

    def propose_batch(self, images: Sequence[np.ndarray]) -> list[Proposals]:
        """Class-agnostic proposals of each uint8 ``[H, W, 3]`` image."""
        raise NotImplementedError

    def segment_regions(self, images: Sequence[np.ndarray], labels: Sequence[int]) -> list[Regions]:
        images = [np.asarray(image) for image in images]
        for image in images:
            if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
                raise ValueError(f"{self.name}: images must be uint8 [H, W, 3]; got {image.dtype} {image.shape}.")
        proposals = self.propose_batch(images)
        return [
            proposals_to_regions(im, p, int(lab), self.rule, self.mode)
            for im, p, lab in zip(images, proposals, labels)
        ]

    def segment(self, image: np.ndarray, label: int) -> np.ndarray:
        return self.segment_regions([image], [label])[0].semantic

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "mode": self.mode, "rule": self.rule.config()}
