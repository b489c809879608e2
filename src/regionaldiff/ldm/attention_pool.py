"""A second EEG conditioner: learned queries that attend over the EEG codes (a Perceiver-style resampler).

Where :class:`~regionaldiff.ldm.conditioning.EEGConditioner` mixes the code sequence into ``n_tokens`` with a
fixed 1x1 convolution (the same weights for every trial), here each context token is a learned query that
cross-attends to the projected codes, so which time patches a token reads can depend on the trial (as
IP-Adapter's and Flamingo's resamplers turn image features into a few context tokens). Selected with
``ldm/conditioner=attention_pool``; ``docs/extending.md`` walks through it as the example of a new component.
"""

from __future__ import annotations

import torch
from torch import nn

from regionaldiff.errors import ConfigError


class AttentionPoolConditioner(nn.Module):
    """EEG codes ``[B, L, D]`` (and class logits) -> context ``[B, n_tokens, cross_attention_dim]``.

    Parameters
    ----------
    code_len, code_dim : int
        Length and width of the encoder's code sequence (set at build time).
    num_classes : int
        Number of classes K (set at build time).
    cross_attention_dim : int
        The UNet's context width (set at build time).
    n_tokens : int
        Context tokens (77 for Stable Diffusion), the class token included when ``use_class_token``.
    num_heads : int
        Attention heads; must divide ``cross_attention_dim``.
    depth : int
        Rounds of query -> codes attention (each with a feed-forward block).
    use_class_token : bool
        Append a token carrying the decoded class (the class-probability-weighted sum of class embeddings).
    """

    @classmethod
    def check_config(
        cls, key: str, n_tokens: int, num_heads: int = 4, depth: int = 1, use_class_token: bool = True
    ) -> None:
        """Raise a ValueError naming ``key`` for too few tokens, heads or rounds."""
        if n_tokens < (2 if use_class_token else 1):
            raise ConfigError(f"{key}.n_tokens must be >= {2 if use_class_token else 1}; got {n_tokens}.")
        if num_heads < 1 or depth < 1:
            raise ConfigError(f"{key}.num_heads and {key}.depth must be >= 1; got {num_heads} and {depth}.")

    def __init__(
        self,
        code_len: int,
        code_dim: int,
        num_classes: int,
        cross_attention_dim: int,
        n_tokens: int,
        num_heads: int = 4,
        depth: int = 1,
        use_class_token: bool = True,
    ) -> None:
        super().__init__()
        self.check_config(
            "ldm.conditioner", n_tokens=n_tokens, num_heads=num_heads, depth=depth, use_class_token=use_class_token
        )
        if cross_attention_dim % num_heads:
            raise ValueError(
                f"ldm.conditioner.num_heads={num_heads} must divide the UNet's cross_attention_dim={cross_attention_dim}."
            )
        self.use_class_token = use_class_token
        self.n_tokens = n_tokens
        self.code_len = code_len
        n_queries = n_tokens - 1 if use_class_token else n_tokens
        self.proj = nn.Linear(code_dim, cross_attention_dim)
        self.code_pos = nn.Parameter(torch.randn(1, code_len, cross_attention_dim) * 0.02)
        self.queries = nn.Parameter(torch.randn(1, n_queries, cross_attention_dim) * 0.02)
        self.attn = nn.ModuleList(
            nn.MultiheadAttention(cross_attention_dim, num_heads, batch_first=True) for _ in range(depth)
        )
        self.attn_norm = nn.ModuleList(nn.LayerNorm(cross_attention_dim) for _ in range(depth))
        self.ffn = nn.ModuleList(
            nn.Sequential(
                nn.LayerNorm(cross_attention_dim),
                nn.Linear(cross_attention_dim, 4 * cross_attention_dim),
                nn.GELU(),
                nn.Linear(4 * cross_attention_dim, cross_attention_dim),
            )
            for _ in range(depth)
        )
        if use_class_token:
            self.class_embed = nn.Linear(num_classes, cross_attention_dim, bias=False)
        self.norm = nn.LayerNorm(cross_attention_dim)

    def forward(self, codes: torch.Tensor, class_logits: torch.Tensor | None = None) -> torch.Tensor:
        if codes.shape[1] != self.code_len:
            raise ValueError(f"expected {self.code_len} EEG codes per trial; got {codes.shape[1]}.")
        keys = self.proj(codes) + self.code_pos
        tokens = self.queries.expand(codes.shape[0], -1, -1)
        for attn, norm, ffn in zip(self.attn, self.attn_norm, self.ffn, strict=True):
            attended, _ = attn(norm(tokens), keys, keys, need_weights=False)
            tokens = tokens + attended
            tokens = tokens + ffn(tokens)
        if self.use_class_token:
            if class_logits is None:
                raise ValueError("This conditioner uses a class token: pass the encoder's class logits.")
            tokens = torch.cat([tokens, self.class_embed(class_logits.softmax(dim=-1))[:, None]], dim=1)
        return self.norm(tokens)
