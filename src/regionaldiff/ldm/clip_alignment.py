"""DreamDiffusion's CLIP alignment: the EEG context, pooled and projected, should point where the CLIP image
embedding of the seen image points (loss ``1 - cos``).

The CLIP ViT-L/14 vision tower with its projection is read from a local transformers folder
(:func:`regionaldiff.evaluation.backbones.load_clip_vision`, the loader the metrics use) and stays frozen; only
the projection from the context to the CLIP embedding is trained (it is a training-time head, not part of the
saved LDM).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from regionaldiff.errors import MissingFileError
from regionaldiff.evaluation.backbones import WeightsUnavailable, load_clip_vision, normalize
from regionaldiff.requirements import TRANSFORMERS_WEIGHT_FILES, RequiredPath, model_folder_check

CLIP_HINT = (
    "Put a transformers save of openai/clip-vit-large-patch14 there (`huggingface-cli download "
    "openai/clip-vit-large-patch14 --local-dir <folder>`; docs/setup.md), or turn off what reads it "
    "(ldm.clip_loss.weight=0; ~encoder/align)."
)


class ClipImageEmbedder(nn.Module):
    """Frozen CLIP image embeddings ``[B, projection_dim]`` of images in [-1, 1] (``embedding_dim`` wide).

    The image side of DreamDiffusion's CLIP loss (``ldm.clip_loss``) and of the encoder's contrastive alignment
    (``encoder/align=clip``, the embedding zero-shot retrieval ranks images by).
    """

    @classmethod
    def required_files(cls, node: Mapping[str, Any], key: str) -> list[RequiredPath]:
        """What it reads: a transformers CLIP folder (config and weights), for ``regionaldiff check``."""
        return [
            RequiredPath(
                "image embedding model (CLIP)",
                Path(str(node["path"])),
                f"{key}.path",
                kind="folder",
                check=model_folder_check("CLIP", TRANSFORMERS_WEIGHT_FILES),
            )
        ]

    def __init__(self, path: str) -> None:
        super().__init__()
        try:
            model, mean, std = load_clip_vision({"path": path})
        except WeightsUnavailable as err:
            raise MissingFileError(f"no CLIP model at {path}. {CLIP_HINT}") from err
        self.model = model.requires_grad_(False).eval()
        self.mean, self.std = mean, std
        config: Any = model.config
        self.image_size = int(config.image_size)
        self.projection_dim = int(config.projection_dim)
        self.embedding_dim = self.projection_dim

    def train(self, mode: bool = True) -> ClipImageEmbedder:
        super().train(mode)
        self.model.eval()  # frozen: never in training mode
        return self

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = (images.float() + 1.0) / 2.0
        x = F.interpolate(
            x, size=(self.image_size, self.image_size), mode="bicubic", align_corners=False, antialias=True
        )
        x = normalize(x.clamp(0, 1), self.mean, self.std)
        return self.model(pixel_values=x.to(next(self.model.parameters()).dtype)).image_embeds.float()


class ContextToClip(nn.Module):
    """The trained head: the context ``[B, n_tokens, D]``, mean-pooled and projected to the CLIP embedding."""

    def __init__(self, cross_attention_dim: int, projection_dim: int) -> None:
        super().__init__()
        self.proj = nn.Sequential(nn.LayerNorm(cross_attention_dim), nn.Linear(cross_attention_dim, projection_dim))

    def forward(self, context: torch.Tensor) -> torch.Tensor:
        return self.proj(context.mean(dim=1))


def clip_alignment_loss(predicted: torch.Tensor, image_embeds: torch.Tensor) -> torch.Tensor:
    """``1 - cos(predicted, image_embeds)``, averaged over the batch."""
    return (1.0 - F.cosine_similarity(predicted.float(), image_embeds.float(), dim=-1)).mean()
