"""Region metrics: mean intersection-over-union of label maps, and region-level alignment of reconstructions."""

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
    confusion = np.bincount(target * num_labels + pred, minlength=num_labels * num_labels).reshape(
        num_labels, num_labels
    )
    intersection = np.diag(confusion).astype(float)
    union = confusion.sum(0) + confusion.sum(1) - intersection
    labels = np.arange(num_labels) if include_background else np.arange(1, num_labels)
    present = labels[union[labels] > 0]
    if len(present) == 0:
        return float("nan")
    return float(np.mean(intersection[present] / union[present]))


def region_alignment(generated_maps: np.ndarray, reference_maps: np.ndarray, num_labels: int) -> dict[str, float]:
    """Region-level semantic alignment of reconstructions with the reference regional maps.

    The reconstructions are segmented by the configured region-map generator (the caller does that); their label maps
    are compared with the reference maps of the same trials:

    - ``eval/region_alignment_miou``: dataset-level mIoU over the foreground labels (:func:`mean_iou`);
    - ``eval/region_alignment_acc``: fraction of reference foreground pixels whose label the reconstruction's map
      reproduces (label-wise pixel accuracy, as in semantic-segmentation benchmarks).

    With several samples per trial, each score is averaged over samples.

    Parameters
    ----------
    generated_maps : np.ndarray
        int ``[N, H, W]``, or ``[N, S, H, W]`` with S samples per trial.
    reference_maps : np.ndarray
        int ``[N, H, W]`` (label 0 = background).
    num_labels : int
        Number of labels including background.
    """
    generated_maps = np.asarray(generated_maps)
    reference_maps = np.asarray(reference_maps).astype(np.int64)
    if generated_maps.ndim == 3:
        generated_maps = generated_maps[:, None]
    if (
        reference_maps.ndim != 3
        or generated_maps.ndim != 4
        or generated_maps.shape[0] != reference_maps.shape[0]
        or generated_maps.shape[2:] != reference_maps.shape[1:]
    ):
        raise ValueError(
            f"region_alignment: expected generated_maps [N, H, W] or [N, S, H, W] and reference_maps [N, H, W] of the same N, H, W; "
            f"got {generated_maps.shape} and {reference_maps.shape}."
        )
    foreground = reference_maps > 0
    mious, accs = [], []
    for s in range(generated_maps.shape[1]):
        pred = generated_maps[:, s].astype(np.int64)
        mious.append(mean_iou(pred, reference_maps, num_labels))
        accs.append(
            float((pred[foreground] == reference_maps[foreground]).mean()) if foreground.any() else float("nan")
        )
    return {"eval/region_alignment_miou": float(np.mean(mious)), "eval/region_alignment_acc": float(np.mean(accs))}
