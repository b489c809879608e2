"""EEG codes -> cross-attention context, and region maps -> the spatial condition image.

The region-map grid itself (coarse targets, upsampling, class fusion, sharpening) is :mod:`regionaldiff.regions`.
"""

from __future__ import annotations

import torch
from torch import nn

from regionaldiff.errors import ConfigError
from regionaldiff.regions import upsample_probs


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
    return upsample_probs(region_probs, size) * 2.0 - 1.0
