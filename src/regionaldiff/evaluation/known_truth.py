"""Known-truth metrics: region maps predicted from EEG, and class + regions of the reconstructions.

- ``eval/region_miou``: mIoU of the EEG-predicted coarse maps (upsampled to the image) against the reference
  maps of the configured region-map generator (any dataset that has maps).
- On datasets with known-truth maps (the synthetic benchmark), a small fully-convolutional *judge* is trained
  on the training **stimuli** and their true maps (never on reconstructions). It segments each reconstruction:
  ``eval/recon_class_acc`` is the fraction whose dominant segmented class is the trial's label, and
  ``eval/recon_region_miou`` the mIoU of that segmentation against the true map. The judge's own scores on
  the real test stimuli (``eval/judge_stimulus_*``) are the ceiling these can reach. Where the region labels are
  layouts (``dataset.region_labels=layout``, e.g. the zero-shot preset, whose test concepts no judge trained on the
  training concepts could name), the judge segments object / background: ``eval/recon_region_miou`` scores the
  layout and the class scores are skipped with the reason.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from regionaldiff.data.base import image_to_tensor
from regionaldiff.evaluation.region import mean_iou
from regionaldiff.regions import upsample_prediction

if TYPE_CHECKING:
    from regionaldiff.artifacts import ArtifactStore
    from regionaldiff.data.base import EEGDataModule

log = logging.getLogger(__name__)


class SegmentationJudge(nn.Module):
    """Small dilated FCN: image ``[B, 3, H, W]`` in [-1, 1] -> label logits ``[B, num_labels, H, W]``."""

    def __init__(self, num_labels: int, width: int = 32) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for dilation in (1, 1, 2, 4, 1):
            layers += [
                nn.Conv2d(channels, width, 3, padding=dilation, dilation=dilation),
                nn.BatchNorm2d(width),
                nn.ReLU(),
            ]
            channels = width
        layers.append(nn.Conv2d(width, num_labels, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)

    @torch.no_grad()
    def segment(self, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """uint8 ``[N, H, W, 3]`` -> int64 label maps ``[N, H, W]``."""
        self.eval()
        out = []
        for start in range(0, len(images), batch_size):
            x = torch.stack([image_to_tensor(im) for im in images[start : start + batch_size]])
            out.append(self(x).argmax(1).numpy())
        return np.concatenate(out)


def train_judge(
    images: np.ndarray, maps: np.ndarray, num_labels: int, epochs: int = 15, seed: int = 0
) -> SegmentationJudge:
    """Fit the judge on stimuli and their true maps (per-pixel cross-entropy, Adam)."""
    torch.manual_seed(seed)
    judge = SegmentationJudge(num_labels)
    x = torch.stack([image_to_tensor(im) for im in images])
    y = torch.from_numpy(maps.astype(np.int64))
    opt = torch.optim.Adam(judge.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(seed)
    judge.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=gen).split(64):
            loss = F.cross_entropy(judge(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return judge.eval()


def dominant_class(maps: np.ndarray, num_classes: int) -> np.ndarray:
    """Class index covering most pixels of each map (ignoring background); -1 where there is none."""
    counts = np.stack([(maps == c + 1).reshape(len(maps), -1).sum(1) for c in range(num_classes)], axis=1)
    return np.where(counts.max(1) > 0, counts.argmax(1), -1)


#: the judge's architecture and budget, part of its artifact key (a change retrains it)
JUDGE_KEY = "fcn5-w32-e15"


def judge_labels(datamodule: EEGDataModule) -> int:
    """Labels the judge segments: every class and the background, or object / background where the dataset's region
    labels are layouts (``dataset.region_labels=layout``: zero-shot concepts, which no judge trained on the training
    concepts could name)."""
    return datamodule.region_labels.count(datamodule.num_classes)


def load_or_train_judge(
    datamodule: EEGDataModule, store: ArtifactStore, dataset_key: Mapping[str, Any]
) -> tuple[SegmentationJudge, dict[str, Any]]:
    """The judge for this dataset, trained once on its training stimuli and true maps and kept as an artifact.

    Parameters
    ----------
    datamodule : EEGDataModule
        A dataset with known-truth region maps (:meth:`~regionaldiff.data.base.EEGDataModule.ground_truth_region_maps`
        is not None).
    store : ArtifactStore
        Where the judge is kept: the slot ``judge`` keyed by ``dataset_key`` and :data:`JUDGE_KEY`.
    dataset_key : Mapping
        The dataset part of the artifact key (the ``dataset`` config without its loader settings).

    Returns
    -------
    tuple
        The judge (eval mode) and ``{"path": artifact folder}``.
    """
    region_labels = datamodule.region_labels
    key: dict[str, Any] = {"dataset": dict(dataset_key), "judge": JUDGE_KEY}
    if not region_labels.are_classes:  # object / background: what a layout map names (class labels keep the old key)
        key["labels"] = region_labels.value
    slot = store.slot("judge", key)
    num_labels = judge_labels(datamodule)
    with slot.lock():
        if not slot.done:
            truth = datamodule.ground_truth_region_maps()
            if truth is None:
                raise ValueError(f"dataset {datamodule.name!r} has no known-truth region maps to train the judge on.")
            ids, images, _ = datamodule.stimuli("train")
            true_maps = np.stack([region_labels.relabel(truth[i]) for i in ids])
            judge = train_judge(np.stack(images), true_maps, num_labels, seed=0)
            torch.save(judge.state_dict(), slot.path / "judge.pt")
            slot.mark_done()
        judge = SegmentationJudge(num_labels)
        judge.load_state_dict(torch.load(slot.path / "judge.pt", weights_only=True))
    return judge.eval(), {"path": str(slot.path)}


def uncalibrated(region_probs: np.ndarray, background_bias: float) -> np.ndarray:
    """Undo a background-logit bias on probabilities ``[N, L, g, g]`` (label 0 = background): the maps the region
    head gave before :mod:`regionaldiff.encoder.calibration` (the same for class-fused maps, which keep the
    background probability)."""
    probs = region_probs.astype(np.float64)
    probs[:, 0] *= np.exp(-background_bias)
    return probs / probs.sum(axis=1, keepdims=True)


def region_and_class_metrics(
    arrays: Mapping[str, np.ndarray],
    datamodule: EEGDataModule,
    store: ArtifactStore,
    dataset_key: Mapping[str, Any],
    background_bias: float = 0.0,
) -> tuple[dict[str, float], dict[str, str]]:
    """Metrics and skipped-with-reason for the EEG-predicted maps and the reconstructions' classes and regions.

    Parameters
    ----------
    arrays : Mapping
        The generate step's test-split arrays: ``generated`` uint8 ``[N, S, H, W, 3]``, ``reference`` uint8
        ``[N, H, W, 3]``, ``labels`` ``[N]``, ``image_ids`` ``[N]`` and, where there are some, ``region_probs``
        (EEG-predicted ``[N, L, g, g]``) and ``region_maps`` (the reference maps ``[N, H, W]``).
    datamodule : EEGDataModule
        The dataset: ``num_classes``, ``region_labels``, ``image_size``, ``name`` and its known-truth maps, if any.
    store, dataset_key
        Where the judge is kept (see :func:`load_or_train_judge`); used only on datasets with known-truth maps.
    background_bias : float
        The region head's fitted background bias; when not 0, ``eval/region_miou_uncalibrated`` is the map mIoU
        without it.

    Returns
    -------
    tuple of dict
        ``eval/<name>`` -> value, and ``eval/<name>`` -> the reason it was skipped.
    """
    metrics: dict[str, float] = {}
    skipped: dict[str, str] = {}
    reference_maps = arrays.get("region_maps")
    if "region_probs" in arrays and reference_maps is not None:
        map_labels = datamodule.num_region_labels
        predicted = upsample_prediction(arrays["region_probs"], datamodule.image_size)
        metrics["eval/region_miou"] = mean_iou(predicted, reference_maps.astype(np.int64), map_labels)
        if background_bias != 0.0:
            before = upsample_prediction(uncalibrated(arrays["region_probs"], background_bias), datamodule.image_size)
            metrics["eval/region_miou_uncalibrated"] = mean_iou(before, reference_maps.astype(np.int64), map_labels)
    else:
        skipped["eval/region_miou"] = (
            "no EEG-predicted region maps (regionmap=none, or no trained region head: encoder.w_region=0)"
        )

    truth = datamodule.ground_truth_region_maps()
    names = ("eval/recon_class_acc", "eval/recon_region_miou", "eval/judge_stimulus_acc", "eval/judge_stimulus_miou")
    if truth is None:
        for name in names:
            skipped[name] = (
                f"needs known-truth region maps, which dataset {datamodule.name!r} does not have (synthetic benchmark only)"
            )
        return metrics, skipped
    judge, _ = load_or_train_judge(datamodule, store, dataset_key)
    region_labels = datamodule.region_labels
    if not region_labels.are_classes:
        for name in ("eval/recon_class_acc", "eval/judge_stimulus_acc"):
            skipped[name] = (
                "the region labels are layouts (dataset.region_labels=layout): the judge segments object / background "
                "and names no class; eval/recon_region_miou scores the layout"
            )
    num_labels = judge_labels(datamodule)
    true_maps = np.stack([region_labels.relabel(truth[str(i)]) for i in arrays["image_ids"]]).astype(np.int64)
    labels = arrays["labels"]
    stimulus_seg = judge.segment(arrays["reference"])
    if region_labels.are_classes:
        metrics["eval/judge_stimulus_acc"] = float(
            (dominant_class(stimulus_seg, datamodule.num_classes) == labels).mean()
        )
    metrics["eval/judge_stimulus_miou"] = mean_iou(stimulus_seg, true_maps, num_labels)
    generated = arrays["generated"]
    accs, mious = [], []
    for s in range(generated.shape[1]):
        seg = judge.segment(generated[:, s])
        accs.append(float((dominant_class(seg, datamodule.num_classes) == labels).mean()))
        mious.append(mean_iou(seg, true_maps, num_labels))
    if region_labels.are_classes:
        metrics["eval/recon_class_acc"] = float(np.mean(accs))
    metrics["eval/recon_region_miou"] = float(np.mean(mious))
    return metrics, skipped
