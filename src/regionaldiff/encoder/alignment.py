"""EEG embeddings aligned to image embeddings: what zero-shot retrieval ranks images by.

As NICE (Song et al. 2024) and ATM (Li et al. 2024) do on THINGS-EEG2, the encoder's alignment head projects the
pooled EEG codes into the space of a frozen image model, trained with a symmetric contrastive (InfoNCE) loss and a
learned temperature: within a batch, each EEG trial must pick its own image's embedding among the others', and each
image its EEG. An image the model never saw in training (THINGS-EEG2's 200 test concepts) is then found by its
embedding alone.

The image side (``encoder/align=<option>``, node ``encoder.align.image_embedder``) is a component:

- ``clip``: CLIP ViT-L/14's image embedding (:class:`regionaldiff.ldm.clip_alignment.ClipImageEmbedder`) read from a
  local transformers folder, as the anchors use (NICE and ATM: CLIP ViT-H-14 / ViT-L/14);
- ``pixels``: :class:`PixelImageEmbedder`, a weight-free embedding of the image's low-resolution appearance (for the
  synthetic benchmark, where no pretrained weights are needed).

The embeddings of every stimulus are computed once and kept as an artifact (:class:`ImageEmbeddings`), as the
latents are; training reads them by stimulus id.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from regionaldiff.errors import ConfigError

EMBEDDINGS_FILE = "image_embeddings.npz"


class ImageEmbedder(Protocol):
    """What the alignment needs of an image model: images in [-1, 1] ``[B, 3, H, W]`` -> ``[B, embedding_dim]``."""

    embedding_dim: int

    def __call__(self, images: torch.Tensor) -> torch.Tensor: ...


class PixelImageEmbedder(nn.Module):
    """Weight-free image embedding: the image area-averaged to ``size`` x ``size`` pixels, each image's mean removed.

    It says what a stimulus looks like at low resolution (where its objects are, their colours), nothing more: the
    embedding of the synthetic benchmark, whose scenes differ exactly there. Real images need a pretrained model
    (``encoder/align=clip``).

    Parameters
    ----------
    size : int
        Side of the low-resolution image (the embedding has ``3 * size * size`` values).
    """

    def __init__(self, size: int = 8) -> None:
        super().__init__()
        self.check_config("encoder.align.image_embedder", size=size)
        self.size = int(size)
        self.embedding_dim = 3 * self.size * self.size

    @classmethod
    def check_config(cls, key: str, size: int = 8) -> None:
        if int(size) < 1:
            raise ConfigError(f"{key}.size must be >= 1; got {size}.")

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        small = F.adaptive_avg_pool2d(images.float(), self.size).flatten(1)
        return small - small.mean(dim=1, keepdim=True)


def contrastive_loss(
    eeg_embeddings: torch.Tensor,
    image_embeddings: torch.Tensor,
    logit_scale: torch.Tensor,
    image_ids: Sequence[str] | None = None,
) -> torch.Tensor:
    """Symmetric InfoNCE between the EEG and image embeddings of a batch (CLIP's loss, as NICE and ATM train).

    Parameters
    ----------
    eeg_embeddings, image_embeddings : torch.Tensor
        ``[B, D]`` each (normalised here).
    logit_scale : torch.Tensor
        Log of the inverse temperature (learned); clamped at ``log(100)`` as CLIP does.
    image_ids : sequence of str, optional
        The stimulus of each row: rows that show the same image (two subjects, or repetitions kept apart) are all
        positives of each other, never negatives.
    """
    eeg = F.normalize(eeg_embeddings.float(), dim=-1)
    img = F.normalize(image_embeddings.float(), dim=-1)
    logits = logit_scale.clamp(max=math.log(100.0)).exp() * eeg @ img.T
    if image_ids is None:
        same = torch.eye(len(eeg), device=eeg.device)
    else:
        codes = {i: k for k, i in enumerate(dict.fromkeys(image_ids))}
        index = torch.tensor([codes[i] for i in image_ids], device=eeg.device)
        same = (index[:, None] == index[None, :]).float()
    targets = same / same.sum(dim=1, keepdim=True)
    return 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets))


@dataclass
class ImageEmbeddings:
    """The image embedding ``[N, D]`` of every stimulus, looked up by stimulus id."""

    ids: list[str]
    array: np.ndarray

    def __post_init__(self) -> None:
        self._rows = {i: k for k, i in enumerate(self.ids)}

    @property
    def dim(self) -> int:
        return int(self.array.shape[1])

    def rows(self, image_ids: Sequence[str]) -> list[int]:
        missing = [i for i in image_ids if i not in self._rows]
        if missing:
            raise KeyError(
                f"{len(missing)} stimuli have no cached image embedding (first: {missing[:3]}); the cache was built "
                "for other data. Delete its artifact folder (outputs/artifacts/image_embeddings/<hash>) and rerun."
            )
        return [self._rows[i] for i in image_ids]

    def lookup(self, image_ids: Sequence[str], device: torch.device | str = "cpu") -> torch.Tensor:
        return torch.from_numpy(self.array[self.rows(image_ids)].astype(np.float32)).to(device)

    def save(self, folder: Path) -> Path:
        path = Path(folder) / EMBEDDINGS_FILE
        np.savez(path, ids=np.asarray(self.ids), array=self.array.astype(np.float32))
        return path

    @classmethod
    def load(cls, folder: Path) -> ImageEmbeddings:
        with np.load(Path(folder) / EMBEDDINGS_FILE) as data:
            return cls([str(i) for i in data["ids"]], data["array"])


@torch.no_grad()
def compute_image_embeddings(
    embedder: ImageEmbedder,
    ids: Sequence[str],
    images: Sequence[np.ndarray],
    batch_size: int = 64,
    device: torch.device | str = "cpu",
) -> ImageEmbeddings:
    """Embeddings of uint8 ``[H, W, 3]`` images, in batches with a progress bar (bf16 autocast on CUDA)."""
    from regionaldiff.data.base import image_to_tensor

    device = torch.device(device)
    if isinstance(embedder, nn.Module):
        embedder.to(device)
    out = []
    for start in tqdm(range(0, len(ids), batch_size), desc="image embeddings", unit="batch"):
        batch = torch.stack([image_to_tensor(im) for im in images[start : start + batch_size]]).to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            out.append(embedder(batch).float().cpu().numpy())
    if isinstance(embedder, nn.Module):
        embedder.cpu()
    return ImageEmbeddings(list(ids), np.concatenate(out) if out else np.zeros((0, embedder.embedding_dim)))
