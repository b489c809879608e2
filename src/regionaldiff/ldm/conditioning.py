"""EEG codes -> cross-attention context, and region maps -> the spatial condition image."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from regionaldiff.errors import ConfigError


class EEGConditioner(nn.Module):
    """Maps EEG codes ``[B, L, D]`` (and class logits) to a context ``[B, n_tokens, cross_attention_dim]``.

    As in DreamDiffusion, a per-token linear map to the UNet's context width and a 1x1 ``Conv1d`` over
    the token axis (``L -> n_tokens``; 77 for Stable Diffusion). With ``use_class_token`` an extra token,
    the class-probability-weighted sum of learned class embeddings, carries the decoded class.
    """

    @classmethod
    def check_config(cls, key: str, n_tokens: int, use_class_token: bool) -> None:
        """Raise a ValueError naming ``key`` when too few tokens are asked for."""
        if n_tokens < (2 if use_class_token else 1):
            raise ConfigError(
                f"{key}.n_tokens must be >= {2 if use_class_token else 1}"
                f"{' with a class token' if use_class_token else ''}; got {n_tokens}."
            )

    def __init__(
        self,
        code_len: int,
        code_dim: int,
        num_classes: int,
        cross_attention_dim: int,
        n_tokens: int,
        use_class_token: bool,
    ) -> None:
        super().__init__()
        self.check_config("ldm.conditioner", n_tokens=n_tokens, use_class_token=use_class_token)
        self.use_class_token = use_class_token
        self.n_tokens = n_tokens
        self.proj = nn.Sequential(
            nn.Linear(code_dim, cross_attention_dim), nn.GELU(), nn.Linear(cross_attention_dim, cross_attention_dim)
        )
        n_seq = n_tokens - 1 if use_class_token else n_tokens
        self.token_mixer = nn.Conv1d(code_len, n_seq, kernel_size=1)
        if use_class_token:
            self.class_embed = nn.Linear(num_classes, cross_attention_dim, bias=False)
        self.norm = nn.LayerNorm(cross_attention_dim)

    def forward(self, codes: torch.Tensor, class_logits: torch.Tensor | None = None) -> torch.Tensor:
        context = self.token_mixer(self.proj(codes))
        if self.use_class_token:
            if class_logits is None:
                raise ValueError("This conditioner uses a class token: pass the encoder's class logits.")
            context = torch.cat([context, self.class_embed(class_logits.softmax(dim=-1))[:, None]], dim=1)
        return self.norm(context)


def map_condition(region_probs: torch.Tensor, size: int) -> torch.Tensor:
    """Coarse label probabilities ``[B, K + 1, g, g]`` -> condition image ``[B, K + 1, size, size]`` in [-1, 1]."""
    up = F.interpolate(region_probs, size=(size, size), mode="bilinear", align_corners=False)
    return up * 2.0 - 1.0


def fuse_class_into_map(region_probs: torch.Tensor, class_probs: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Make a predicted region map agree with the decoded class (a product of experts per cell).

    The region head says *where* (background vs object, and which class per cell); the classification head is
    the better judge of *what*. Per cell, the object classes' probabilities are multiplied by the class head's
    and renormalised, keeping the cell's object mass ``1 - p(background)``:
    ``p'(c) = (1 - p(bg)) * p_region(c) p_class(c) / sum_k p_region(k) p_class(k)``.

    Parameters
    ----------
    region_probs : torch.Tensor
        ``[B, K + 1, g, g]`` label probabilities (label 0 = background).
    class_probs : torch.Tensor
        ``[B, K]`` class probabilities.
    """
    if region_probs.shape[1] != class_probs.shape[1] + 1:
        raise ValueError(
            f"region map has {region_probs.shape[1]} labels; expected K + 1 = {class_probs.shape[1] + 1}."
        )
    background = region_probs[:, :1]
    objects = region_probs[:, 1:] * class_probs[:, :, None, None]
    objects = objects / objects.sum(dim=1, keepdim=True).clamp_min(eps) * (1.0 - background)
    return torch.cat([background, objects], dim=1)


def sharpen_map(region_probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """Sharpen ``[B, L, g, g]`` label probabilities per cell: ``p ** (1 / T)`` renormalised over the labels.

    ``temperature`` 1 returns the map unchanged and 0 the one-hot map of its argmax; the argmax never changes.
    """
    if temperature < 0:
        raise ValueError(f"map temperature must be >= 0; got {temperature}.")
    if temperature == 1.0:
        return region_probs
    if temperature == 0.0:
        return (
            torch.nn.functional.one_hot(region_probs.argmax(dim=1), region_probs.shape[1])
            .permute(0, 3, 1, 2)
            .to(region_probs.dtype)
        )
    logp = region_probs.clamp_min(1e-12).log() / temperature
    return logp.softmax(dim=1)
