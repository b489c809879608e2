"""Region-level semantic alignment of reconstructions: segment them with the configured region-map generator.

The reconstructions are segmented by the same generator that made the reference maps (``regionmap=slic|sam``),
with each trial's true label painting the object's regions, so the score measures *where* the reconstruction
puts its object(s) against the reference map (the class is scored separately by n-way / the judge). Generators
that cannot segment new images (``oracle`` reads stored ground truth, ``none`` has no maps) are skipped with
the reason; on the synthetic benchmark the known-truth judge (``eval/recon_region_miou``) covers that case.
"""

from __future__ import annotations

import numpy as np

from regionaldiff.evaluation.region import region_alignment
from regionaldiff.maps.base import RegionMapGenerator
from regionaldiff.regions import RegionLabels

NAMES = ("eval/region_alignment_miou", "eval/region_alignment_acc")


def reconstruction_alignment(
    regionmap: RegionMapGenerator,
    generated: np.ndarray,
    reference_maps: np.ndarray | None,
    labels: np.ndarray,
    num_labels: int,
    region_labels: RegionLabels = RegionLabels.CLASS,
) -> tuple[dict[str, float], dict[str, str]]:
    """``(metrics, skipped)`` of :func:`region_alignment` for reconstructions ``[N, S, H, W, 3]``.

    ``reference_maps`` are the generator's maps of the true stimuli ``[N, H, W]`` (None: no maps), with
    ``num_labels`` labels; the reconstructions' maps are read with the same ``region_labels`` (object / background
    for layouts).
    """
    if reference_maps is None:
        return {}, {name: "no reference region maps (regionmap=none)" for name in NAMES}
    if not regionmap.per_image:
        reason = (
            f"regionmap={regionmap.name} cannot segment new images "
            "(use regionmap=slic or regionmap=sam; on the synthetic benchmark see eval/recon_region_miou)"
        )
        return {}, {name: reason for name in NAMES}
    n, s = generated.shape[:2]
    flat = [generated[i, k] for i in range(n) for k in range(s)]
    flat_labels = [int(labels[i]) for i in range(n) for _ in range(s)]
    regions = regionmap.segment_regions(flat, flat_labels)
    maps = region_labels.relabel(np.stack([r.semantic for r in regions]).reshape(n, s, *generated.shape[2:4]))
    return region_alignment(maps, reference_maps, num_labels), {}
