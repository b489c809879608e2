"""Calibrate the region head's background/object decision on the validation split.

The region head is trained with cross-entropy against *soft* coarse targets (the fraction of each grid cell each
label covers). Cells that an object covers only in part, and the many trials where the EEG says little about
where an object is, pull its object probabilities towards the background prior; after bilinear upsampling, the
argmax map then shows objects smaller than they are and misses small ones. One scalar, a bias added to the
background logit, trades the two errors off. It is fitted after training by a grid search that maximises the
map mIoU on the validation split (never the test split), and kept in the encoder's state
(:attr:`EEGEncoder.region_background_bias`), so every user of the encoder's maps (the LDM's conditions,
the evaluation, :class:`regionaldiff.reconstruction.RegionalDiffPipeline`) sees the calibrated map.

Written here (not taken from a library) because it is a one-parameter search over our own metric.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch

from regionaldiff.encoder.base import EEGEncoder
from regionaldiff.evaluation.region import mean_iou
from regionaldiff.regions import fuse_class_into_map, upsample_prediction

#: the background-logit biases tried (natural-log units; 0 = uncalibrated)
BIAS_GRID = tuple(float(b) for b in np.round(np.arange(-3.0, 1.01, 0.25), 2))


@dataclass(frozen=True)
class Calibration:
    """The fitted background bias and the validation map mIoU before and after it."""

    bias: float
    miou_before: float
    miou_after: float
    n_trials: int


@torch.no_grad()
def region_logits(model: EEGEncoder, batches: Iterable[dict], class_fused: bool) -> tuple[torch.Tensor, np.ndarray]:
    """The region head's log-probabilities ``[N, L, g, g]`` (class-fused when ``class_fused`` and the labels are
    classes) on ``batches``, and their reference maps ``[N, H, W]``."""
    logits, maps = [], []
    for batch in batches:
        if "region_map" not in batch:
            raise ValueError("scoring the region head needs batches with region maps ('region_map').")
        device = model.region_background_bias.device
        subject = batch.get("subject")
        out = model(batch["eeg"].to(device), None if subject is None else subject.to(device))
        region = out["region_logits"]
        if class_fused and model.region_labels_are_classes:
            region = fuse_class_into_map(region.softmax(dim=1), out["class_logits"].softmax(dim=-1)).clamp_min(1e-8)
            region = region.log()
        logits.append(region.cpu())
        maps.append(batch["region_map"].cpu().numpy().astype(np.int64))
    if not logits:
        raise ValueError("scoring the region head: the split is empty.")
    return torch.cat(logits), np.concatenate(maps)


@torch.no_grad()
def map_miou(model: EEGEncoder, batches: Iterable[dict], class_fused: bool) -> float:
    """The map mIoU of ``model``'s region head as it stands (its calibrated bias applied) on ``batches``: how
    :mod:`regionaldiff.evaluation.known_truth` scores ``eval/region_miou``, without the LDM."""
    was_training = model.training
    model.eval()
    logits, maps = region_logits(model, batches, class_fused)
    model.train(was_training)
    return mean_iou(upsample_prediction(logits.softmax(dim=1).numpy(), maps.shape[-1]), maps, logits.shape[1])


@torch.no_grad()
def fit_background_bias(
    model: EEGEncoder,
    batches: Iterable[dict],
    class_fused: bool,
    grid: tuple[float, ...] = BIAS_GRID,
) -> Calibration:
    """Set ``model.region_background_bias`` to the value of ``grid`` that maximises the validation map mIoU.

    Parameters
    ----------
    model : EEGEncoder
        A trained encoder with a region head; its bias is reset to 0 before scoring and then set to the best.
    batches : iterable of dict
        Validation batches with ``eeg`` ``[B, C, T]`` and ``region_map`` ``[B, H, W]`` (labels, 0 = background).
    class_fused : bool
        Score the class-fused map (:func:`regionaldiff.regions.fuse_class_into_map`), which is what the
        LDM is conditioned on when the class head is trained (``ldm.class_fused_maps``).
    grid : tuple of float
        Biases tried; 0 must be among them, so calibration never lowers the validation score.
    """
    if model.region_grid <= 0:
        raise ValueError("fit_background_bias needs an encoder with a region head (encoder.net.region_grid > 0).")
    if 0.0 not in grid:
        raise ValueError("fit_background_bias: the grid of biases must contain 0 (the uncalibrated head).")
    was_training = model.training
    model.eval()
    model.region_background_bias.zero_()
    all_logits, all_maps = region_logits(model, batches, class_fused)
    num_labels = all_logits.shape[1]
    size = all_maps.shape[-1]
    scores = {}
    for bias in grid:
        shifted = all_logits.clone()
        shifted[:, 0] += bias
        scores[bias] = mean_iou(upsample_prediction(shifted.softmax(dim=1).numpy(), size), all_maps, num_labels)
    best = max(grid, key=lambda b: (np.nan_to_num(scores[b], nan=-1.0), -abs(b)))
    model.region_background_bias.fill_(best)
    model.train(was_training)
    return Calibration(bias=best, miou_before=scores[0.0], miou_after=scores[best], n_trials=len(all_maps))
