"""Distribution metrics of the generated set: FID (clean-fid) and Inception Score (torchmetrics).

- **FID** (Heusel et al. 2017) as computed by clean-fid (Parmar et al. 2022, ``mode="clean"``): each uint8 image is
  resized to 299 x 299 with PIL bicubic in float (no re-quantisation), fed to the TorchScript port of the TF
  Inception (``inception-2015-12-05.pt``), pool3 features (2048-d); ``FID = |mu_g - mu_r|^2 + Tr(S_g + S_r -
  2 (S_g S_r)^(1/2))`` (``cleanfid.fid.frechet_distance``). All ``N x S`` generated images against the ``N``
  ground-truth test images. Lower is better; few images bias it upwards, so compare only equal-size sets.
- **IS** (Salimans et al. 2016) as computed by ``torchmetrics.image.InceptionScore``: torch-fidelity's
  ``inception-v3-compat`` network, unbiased logits, ``splits`` random splits of the ``N x S`` generated images,
  ``exp(E_x KL(p(y|x) || p(y)))`` per split; mean and std over splits. The split permutation is seeded.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from regionaldiff.evaluation.backbones import check_images


@torch.no_grad()
def clean_fid_features(model: nn.Module, images: np.ndarray, device: torch.device, batch_size: int = 32) -> np.ndarray:
    """clean-fid Inception pool features ``[N, 2048]`` of uint8 ``[N, H, W, 3]`` images (``mode="clean"`` resize)."""
    from cleanfid.fid import get_batch_features
    from cleanfid.resize import build_resizer

    images = check_images(images, "images")
    resize = build_resizer("clean")
    out = []
    for start in range(0, len(images), batch_size):
        batch = np.stack([resize(im) for im in images[start : start + batch_size]]).astype(np.float32)
        out.append(get_batch_features(torch.from_numpy(batch).permute(0, 3, 1, 2), model, device))
    return np.concatenate(out)


def frechet_distance_from_features(generated_features: np.ndarray, reference_features: np.ndarray) -> float:
    """FID of two feature sets ``[N, D]``, ``[M, D]`` (``cleanfid.fid.fid_from_feats``: means, ``np.cov``, sqrtm)."""
    from cleanfid.fid import fid_from_feats

    if (
        generated_features.ndim != 2
        or reference_features.ndim != 2
        or generated_features.shape[1] != reference_features.shape[1]
    ):
        raise ValueError(
            f"FID: expected features [N, D] and [M, D], got {generated_features.shape} and {reference_features.shape}."
        )
    if len(generated_features) < 2 or len(reference_features) < 2:
        raise ValueError("FID: needs at least 2 images in each set to estimate a covariance.")
    return float(fid_from_feats(generated_features.astype(np.float64), reference_features.astype(np.float64)))


def fid(
    model: nn.Module, generated: np.ndarray, reference: np.ndarray, device: torch.device, batch_size: int = 32
) -> float:
    """clean-fid FID of uint8 ``[N, S, H, W, 3]`` generated images (all samples pooled) against ``[N, H, W, 3]``."""
    generated = check_images(generated, "generated", sampled=True)
    gen = clean_fid_features(model, generated.reshape(-1, *generated.shape[2:]), device, batch_size)
    ref = clean_fid_features(model, reference, device, batch_size)
    return frechet_distance_from_features(gen, ref)


class _Identity(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def inception_score_from_logits(
    logits: np.ndarray | torch.Tensor, splits: int = 10, seed: int = 0
) -> tuple[float, float]:
    """torchmetrics' Inception Score arithmetic on given logits ``[N, C]``: (mean, std) over ``splits``."""
    return _score(_inception_score(_Identity(), splits), [torch.as_tensor(logits, dtype=torch.float64)], seed)


def _inception_score(feature: nn.Module, splits: int):
    """torchmetrics ``InceptionScore`` without its "features kept in memory" warning (we know)."""
    import warnings

    from torchmetrics.image.inception import InceptionScore

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*will save all extracted features.*")
        return InceptionScore(feature=feature, splits=splits)


def _score(metric, batches, seed: int) -> tuple[float, float]:
    for batch in batches:
        metric.update(batch)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        mean, std = metric.compute()
    return float(mean), float(std)


@torch.no_grad()
def inception_score(
    model: nn.Module,
    generated: np.ndarray,
    device: torch.device,
    splits: int = 10,
    seed: int = 0,
    batch_size: int = 32,
) -> tuple[float, float]:
    """torchmetrics ``InceptionScore`` (mean, std) of uint8 ``[N, S, H, W, 3]`` generated images, all samples pooled.

    ``model`` is the IS Inception (:func:`~regionaldiff.evaluation.backbones.load_is_inception`) taking uint8
    ``[B, 3, H, W]``.
    """
    generated = check_images(generated, "generated", sampled=True)
    flat = generated.reshape(-1, *generated.shape[2:])
    metric = _inception_score(model.to(device), splits).to(device)
    batches = (
        torch.from_numpy(np.ascontiguousarray(flat[s : s + batch_size])).permute(0, 3, 1, 2).to(device)
        for s in range(0, len(flat), batch_size)
    )
    return _score(metric, batches, seed)
