"""Region metrics: mean intersection-over-union of label maps."""

from __future__ import annotations

import numpy as np


def mean_iou(pred: np.ndarray, target: np.ndarray, num_labels: int, include_background: bool = False) -> float:
    """Dataset-level mean IoU of integer label maps (label 0 = background).

    Intersections and unions are accumulated per label over the whole set (the standard semantic-segmentation
    definition, as in the PASCAL VOC / Cityscapes benchmarks), then averaged over the labels that occur in the
    prediction or the target. Background is left out unless ``include_background``.

    Parameters
    ----------
    pred, target : np.ndarray
        int ``[N, H, W]`` (or any equal shapes) label maps.
    num_labels : int
        Number of labels including background.
    """
    pred = np.asarray(pred).ravel()
    target = np.asarray(target).ravel()
    if pred.shape != target.shape:
        raise ValueError(f"mean_iou: prediction has {pred.size} pixels, target {target.size}.")
    if pred.size and (pred.max() >= num_labels or target.max() >= num_labels or min(pred.min(), target.min()) < 0):
        raise ValueError(f"mean_iou: labels must be in [0, {num_labels}).")
    confusion = np.bincount(target * num_labels + pred, minlength=num_labels * num_labels).reshape(num_labels, num_labels)
    intersection = np.diag(confusion).astype(float)
    union = confusion.sum(0) + confusion.sum(1) - intersection
    labels = np.arange(num_labels) if include_background else np.arange(1, num_labels)
    present = labels[union[labels] > 0]
    if len(present) == 0:
        return float("nan")
    return float(np.mean(intersection[present] / union[present]))
