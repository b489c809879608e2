"""The latent cache: the VAE posterior (mean, log-variance) of every training image computed once, and the CLIP
image embedding when the CLIP loss is on, kept as an artifact keyed by the VAE, the image size and the data.

A training step then samples its latents from the cached posterior (``mean + exp(logvar / 2) * noise``: the
same distribution as encoding the image at every step, at none of the cost) and reads the CLIP embedding
instead of running CLIP.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from regionaldiff.data.base import image_to_tensor
from regionaldiff.ldm.latent import LatentCodec

log = logging.getLogger(__name__)

CACHE_FILE = "latents.npz"


@dataclass
class LatentCache:
    """Per-image posterior moments (and CLIP embeddings), looked up by stimulus id."""

    ids: list[str]
    mean: np.ndarray  # [N, C, h, w] float16/32
    logvar: np.ndarray  # [N, C, h, w]
    clip: np.ndarray | None = None  # [N, projection_dim]

    def __post_init__(self) -> None:
        self.index = {image_id: i for i, image_id in enumerate(self.ids)}

    def rows(self, image_ids: Sequence[str]) -> np.ndarray:
        missing = [i for i in image_ids if str(i) not in self.index]
        if missing:
            raise KeyError(
                f"latent cache has no entry for stimulus {missing[0]!r}: delete the cache artifact to rebuild it"
            )
        return np.asarray([self.index[str(i)] for i in image_ids])

    def posterior(self, image_ids: Sequence[str], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        rows = self.rows(image_ids)
        mean = torch.from_numpy(self.mean[rows].astype(np.float32)).to(device)
        logvar = torch.from_numpy(self.logvar[rows].astype(np.float32)).to(device)
        return mean, logvar

    def clip_embeds(self, image_ids: Sequence[str], device: torch.device) -> torch.Tensor:
        if self.clip is None:
            raise RuntimeError("this latent cache holds no CLIP embeddings (ldm.clip_loss.weight was 0)")
        return torch.from_numpy(self.clip[self.rows(image_ids)].astype(np.float32)).to(device)

    def save(self, folder: Path) -> Path:
        path = folder / CACHE_FILE
        arrays = {"ids": np.asarray(self.ids), "mean": self.mean, "logvar": self.logvar}
        if self.clip is not None:
            arrays["clip"] = self.clip
        tmp = folder / (CACHE_FILE + ".tmp.npz")
        np.savez(tmp, **arrays)  # type: ignore[arg-type]
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, folder: Path) -> LatentCache:
        with np.load(folder / CACHE_FILE) as data:
            clip = data["clip"] if "clip" in data.files else None
            return cls([str(i) for i in data["ids"]], data["mean"], data["logvar"], clip)


def resize_images(images: torch.Tensor, size: int) -> torch.Tensor:
    """Images ``[B, 3, H, W]`` in [-1, 1] at ``size`` px (antialiased bilinear; unchanged at their own size)."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


@torch.no_grad()
def compute_latent_cache(
    ids: Sequence[str],
    images: Sequence[np.ndarray],
    codec: LatentCodec,
    image_size: int,
    clip: torch.nn.Module | None = None,
    batch_size: int = 16,
    device: torch.device | str = "cpu",
) -> LatentCache:
    """Posterior moments (and CLIP embeddings) of uint8 ``[H, W, 3]`` images, in batches with a progress bar (the
    VAE and CLIP under bf16 autocast on CUDA; the moments are kept in float32)."""
    device = torch.device(device)
    means, logvars, embeds = [], [], []
    for start in tqdm(range(0, len(ids), batch_size), desc="latent cache"):
        batch = torch.stack([image_to_tensor(im) for im in images[start : start + batch_size]]).to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            mean, logvar = codec.posterior(resize_images(batch, image_size))
            means.append(mean.float().cpu().numpy())
            logvars.append(logvar.float().cpu().numpy())
            if clip is not None:
                embeds.append(clip(batch).float().cpu().numpy())
    return LatentCache(
        [str(i) for i in ids],
        np.concatenate(means),
        np.concatenate(logvars),
        np.concatenate(embeds) if embeds else None,
    )
