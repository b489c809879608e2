"""Low-level image metrics as defined by MindEye (Scotti et al. 2023) and used by ATM/UBP."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from skimage.color import rgb2gray
from skimage.metrics import structural_similarity


def _resize(images: np.ndarray, resolution: int) -> np.ndarray:
    """uint8 ``[N, H, W, 3]`` -> float ``[N, R, R, 3]`` in [0, 1] (bilinear, like MindEye's torchvision resize)."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0
    if x.shape[-1] != resolution or x.shape[-2] != resolution:
        x = F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False, antialias=True)
    return x.clamp(0, 1).permute(0, 2, 3, 1).numpy()


def _check(generated: np.ndarray, reference: np.ndarray) -> None:
    if generated.shape[0] != reference.shape[0] or generated.ndim != 4 or reference.ndim != 4:
        raise ValueError(
            f"generated and reference: expected two [N, H, W, 3] arrays of equal N; got {generated.shape} and {reference.shape}."
        )


def ssim(generated: np.ndarray, reference: np.ndarray, resolution: int = 425) -> float:
    """Mean SSIM as defined by MindEye (Scotti et al. 2023), also used by ATM / UBP.

    Both sets are resized (bilinear, antialiased) to ``resolution`` x ``resolution`` (MindEye: 425), converted to
    grayscale (``skimage.color.rgb2gray``) and compared with ``skimage.metrics.structural_similarity`` using Gaussian
    weights (sigma 1.5), no sample covariance and data range 1; mean over images.

    Parameters
    ----------
    generated, reference : np.ndarray
        uint8 ``[N, H, W, 3]`` (sizes may differ between the two).
    resolution : int
        Side of the square both are resized to (at least 11, the Gaussian window).
    """
    _check(generated, reference)
    g = rgb2gray(_resize(generated, resolution))
    r = rgb2gray(_resize(reference, resolution))
    scores = [
        structural_similarity(
            r[i], g[i], gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0
        )
        for i in range(len(g))
    ]
    return float(np.mean(scores))


def pixcorr(generated: np.ndarray, reference: np.ndarray, resolution: int = 425) -> float:
    """Mean PixCorr as defined by MindEye (Scotti et al. 2023): Pearson correlation of the flattened RGB pixels.

    Both sets are resized (bilinear, antialiased) to ``resolution`` x ``resolution`` first; mean over images.

    Parameters
    ----------
    generated, reference : np.ndarray
        uint8 ``[N, H, W, 3]``.
    resolution : int
        Side of the square both are resized to (MindEye: 425).
    """
    _check(generated, reference)
    g = _resize(generated, resolution).reshape(len(generated), -1)
    r = _resize(reference, resolution).reshape(len(reference), -1)
    g = g - g.mean(1, keepdims=True)
    r = r - r.mean(1, keepdims=True)
    denom = np.sqrt((g**2).sum(1) * (r**2).sum(1))
    corr = np.where(denom > 0, (g * r).sum(1) / np.maximum(denom, 1e-12), 0.0)
    return float(np.mean(corr))
