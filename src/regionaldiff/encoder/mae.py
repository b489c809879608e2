"""Masked autoencoder over EEG time patches with classification and region heads.

The encoder follows DreamDiffusion / Mind-vis (He et al. 2022 MAE applied to 1-D EEG patches): the
``[C, T]`` signal is cut into ``T / patch_size`` time patches, each embedded from all channels by a
strided ``Conv1d``; a random ``mask_ratio`` of patches is dropped, a Transformer encodes the rest and
a light decoder reconstructs the dropped ones. Heads make the codes semantic- and location-aware:

- a classification head on the mean-pooled codes (the visual class of the stimulus);
- a region head: ``grid * grid`` learned queries cross-attend to the codes and predict, per cell of
  a coarse grid over the image, the region label (0 = background; ``c + 1`` = class ``c``, or 1 = object when the
  dataset's maps are layouts, ``num_region_labels`` labels in all);
- an alignment head (``align_dim > 0``): the mean-pooled codes projected onto a frozen image embedding (CLIP), trained
  contrastively as NICE and ATM do (:mod:`regionaldiff.encoder.alignment`); zero-shot retrieval reads it.

Written by hand rather than imported because no maintained library ships an EEG MAE with these
heads; the building blocks are PyTorch's own Transformer layers.
"""

from __future__ import annotations

import inspect
import math
from typing import Any

import torch
from torch import nn

from regionaldiff.encoder.base import EEGEncoder
from regionaldiff.errors import ConfigError


def sincos_position_embedding(length: int, dim: int) -> torch.Tensor:
    """Fixed 1-D sine-cosine position embedding ``[length, dim]`` (Vaswani et al. 2017)."""
    if dim % 2:
        raise ValueError(f"embed_dim must be even for sine-cosine positions; got {dim}.")
    position = torch.arange(length, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim)
    table[:, 0::2] = torch.sin(position * freq)
    table[:, 1::2] = torch.cos(position * freq)
    return table


def _transformer(dim: int, depth: int, heads: int, mlp_ratio: float, dropout: float) -> nn.TransformerEncoder:
    layer = nn.TransformerEncoderLayer(
        d_model=dim,
        nhead=heads,
        dim_feedforward=int(dim * mlp_ratio),
        dropout=dropout,
        activation="gelu",
        batch_first=True,
        norm_first=True,
    )
    return nn.TransformerEncoder(layer, num_layers=depth, enable_nested_tensor=False)


class EEGMaskedAutoencoder(EEGEncoder):
    """EEG MAE with classification and region heads (an :class:`~regionaldiff.encoder.base.EEGEncoder`).

    Parameters
    ----------
    n_chans : int
        Number of EEG channels C.
    n_times : int
        Number of time samples T; must be a multiple of ``patch_size``.
    sfreq : float
        Sampling frequency in Hz (recorded so a checkpoint can be checked against new data).
    num_classes : int
        Number of visual classes K.
    num_region_labels : int
        Labels of the region map (0 = ``num_classes + 1``: background and one per class; 2 for object / background
        layouts). Set from the data at build time.
    align_dim : int
        Width of the image embedding the alignment head projects onto (0 = no alignment head). Set from the image
        embedder at build time.
    patch_size : int
        Time samples per patch.
    embed_dim, depth, num_heads : int
        Encoder width, number of Transformer layers, attention heads.
    decoder_embed_dim, decoder_depth, decoder_num_heads : int
        Same for the reconstruction decoder.
    mlp_ratio : float
        Feed-forward width as a multiple of the model width.
    mask_ratio : float
        Fraction of patches masked during masked signal modelling, in (0, 1).
    region_grid : int
        Side of the coarse grid the region head predicts (0 disables the head).
    dropout : float
        Dropout inside the Transformer layers.
    """

    pos_embed: torch.Tensor
    decoder_pos_embed: torch.Tensor

    @classmethod
    def check_config(cls, key: str, **arch: Any) -> None:
        """Check the architecture's own arguments (everything but the data's sizes; those not given take the
        constructor's defaults); a ConfigError names ``key.<argument>``. Runs before any work
        (:func:`regionaldiff.components.check_component`) and in the constructor."""
        params = inspect.signature(cls.__init__).parameters
        a = {n: arch.get(n, p.default) for n, p in params.items() if n != "self" and n not in cls.DATA_ARGS}
        for name in (
            "patch_size",
            "embed_dim",
            "depth",
            "num_heads",
            "decoder_embed_dim",
            "decoder_depth",
            "decoder_num_heads",
            "mlp_ratio",
        ):
            if a[name] <= 0:
                raise ConfigError(f"{key}.{name} must be > 0; got {a[name]}.")
        if not 0.0 < a["mask_ratio"] < 1.0:
            raise ConfigError(f"{key}.mask_ratio must be in (0, 1); got {a['mask_ratio']}.")
        if not 0.0 <= a["dropout"] < 1.0:
            raise ConfigError(f"{key}.dropout must be in [0, 1); got {a['dropout']}.")
        if a["embed_dim"] % a["num_heads"]:
            raise ConfigError(
                f"{key}.embed_dim={a['embed_dim']} must be divisible by {key}.num_heads={a['num_heads']}."
            )
        if a["decoder_embed_dim"] % a["decoder_num_heads"]:
            raise ConfigError(
                f"{key}.decoder_embed_dim={a['decoder_embed_dim']} must be divisible by "
                f"{key}.decoder_num_heads={a['decoder_num_heads']}."
            )
        if a["embed_dim"] % 2 or a["decoder_embed_dim"] % 2:
            raise ConfigError(f"{key}.embed_dim and decoder_embed_dim must be even (sine-cosine positions).")
        if a["region_grid"] < 0:
            raise ConfigError(f"{key}.region_grid must be >= 0 (0 = no region head); got {a['region_grid']}.")

    def __init__(
        self,
        n_chans: int,
        n_times: int,
        sfreq: float,
        num_classes: int,
        num_region_labels: int = 0,
        align_dim: int = 0,
        patch_size: int = 4,
        embed_dim: int = 64,
        depth: int = 2,
        num_heads: int = 4,
        decoder_embed_dim: int = 32,
        decoder_depth: int = 1,
        decoder_num_heads: int = 4,
        mlp_ratio: float = 4.0,
        mask_ratio: float = 0.75,
        region_grid: int = 8,
        dropout: float = 0.1,
    ) -> None:
        arch = {k: v for k, v in locals().items() if k not in ("self", "__class__", *self.DATA_ARGS)}
        self.check_config("encoder.net", **arch)
        super().__init__(n_chans, n_times, sfreq, num_classes, num_region_labels, align_dim)
        num_region_labels = self.num_region_labels
        if n_times % patch_size:
            raise ValueError(
                f"n_times={n_times} is not a multiple of encoder.net.patch_size={patch_size}: pick a patch size that "
                f"divides the number of time samples, or resample/crop the data."
            )
        self.patch_size, self.mask_ratio = patch_size, mask_ratio
        self.num_patches = n_times // patch_size
        self.embed_dim = embed_dim
        self.region_grid = region_grid

        self.patch_embed = nn.Conv1d(n_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.register_buffer("pos_embed", sincos_position_embedding(self.num_patches, embed_dim), persistent=False)
        self.encoder = _transformer(embed_dim, depth, num_heads, mlp_ratio, dropout)
        self.encoder_norm = nn.LayerNorm(embed_dim)

        self.decoder_embed = nn.Linear(embed_dim, decoder_embed_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_embed_dim))
        self.register_buffer(
            "decoder_pos_embed", sincos_position_embedding(self.num_patches, decoder_embed_dim), persistent=False
        )
        self.decoder = _transformer(decoder_embed_dim, decoder_depth, decoder_num_heads, mlp_ratio, dropout)
        self.decoder_norm = nn.LayerNorm(decoder_embed_dim)
        self.decoder_pred = nn.Linear(decoder_embed_dim, patch_size * n_chans)

        self.class_head = nn.Sequential(nn.LayerNorm(embed_dim), nn.Linear(embed_dim, num_classes))
        if region_grid > 0:
            self.region_queries = nn.Parameter(torch.randn(1, region_grid * region_grid, embed_dim) * 0.02)
            self.region_query_pos = nn.Parameter(torch.randn(1, region_grid * region_grid, embed_dim) * 0.02)
            self.region_attn = nn.MultiheadAttention(embed_dim, num_heads, batch_first=True)
            self.region_mlp = nn.Sequential(
                nn.LayerNorm(embed_dim),
                nn.Linear(embed_dim, embed_dim),
                nn.GELU(),
                nn.Linear(embed_dim, num_region_labels),
            )
        if align_dim > 0:
            self.align_head = nn.Sequential(
                nn.LayerNorm(embed_dim), nn.Linear(embed_dim, embed_dim), nn.GELU(), nn.Linear(embed_dim, align_dim)
            )
        nn.init.normal_(self.mask_token, std=0.02)

    # -- encoding ---------------------------------------------------------------------------
    def patchify(self, eeg: torch.Tensor) -> torch.Tensor:
        """``[B, C, T]`` -> ``[B, L, patch_size * C]`` (time-major inside a patch)."""
        b, c, _ = eeg.shape
        return (
            eeg.reshape(b, c, self.num_patches, self.patch_size).permute(0, 2, 3, 1).reshape(b, self.num_patches, -1)
        )

    def _embed(self, eeg: torch.Tensor) -> torch.Tensor:
        self.check_input(eeg)
        return self.patch_embed(eeg).transpose(1, 2) + self.pos_embed

    def forward_features(self, eeg: torch.Tensor) -> torch.Tensor:
        """Latent EEG codes of the whole (unmasked) signal, ``[B, L, embed_dim]``."""
        return self.encoder_norm(self.encoder(self._embed(eeg)))

    def classify(self, codes: torch.Tensor) -> torch.Tensor:
        """Class logits ``[B, K]`` from codes."""
        return self.class_head(codes.mean(dim=1))

    def embed(self, codes: torch.Tensor) -> torch.Tensor:
        """The EEG embedding ``[B, align_dim]`` aligned to the image embedding (not normalised)."""
        if self.align_dim <= 0:
            raise RuntimeError("This encoder was built with align_dim=0 (no alignment head).")
        return self.align_head(codes.mean(dim=1))

    def predict_regions(self, codes: torch.Tensor) -> torch.Tensor:
        """Region logits ``[B, num_region_labels, grid, grid]`` from codes (label 0 = background)."""
        if self.region_grid <= 0:
            raise RuntimeError("This encoder was built with region_grid=0 (no region head).")
        queries = (self.region_queries + self.region_query_pos).expand(codes.shape[0], -1, -1)
        attended, _ = self.region_attn(queries, codes, codes, need_weights=False)
        logits = self.region_mlp(attended + queries)
        g = self.region_grid
        logits = logits.transpose(1, 2).reshape(codes.shape[0], self.num_region_labels, g, g)
        return self.add_background_bias(logits)

    # -- masked signal modelling ------------------------------------------------------------
    def masked_reconstruction_loss(self, eeg: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """MSE of the reconstructed masked patches (MAE objective)."""
        tokens = self._embed(eeg)
        b, length, dim = tokens.shape
        n_keep = max(1, int(round(length * (1.0 - self.mask_ratio))))
        noise = torch.rand(b, length, device=eeg.device, generator=generator)
        order = noise.argsort(dim=1)
        restore = order.argsort(dim=1)
        keep = order[:, :n_keep]
        visible = torch.gather(tokens, 1, keep[..., None].expand(-1, -1, dim))
        encoded = self.encoder_norm(self.encoder(visible))

        x = self.decoder_embed(encoded)
        masks = self.mask_token.expand(b, length - n_keep, -1)
        x = torch.cat([x, masks], dim=1)
        x = torch.gather(x, 1, restore[..., None].expand(-1, -1, x.shape[-1])) + self.decoder_pos_embed
        pred = self.decoder_pred(self.decoder_norm(self.decoder(x)))

        target = self.patchify(eeg)
        masked = torch.ones(b, length, device=eeg.device)
        masked[:, :n_keep] = 0
        masked = torch.gather(masked, 1, restore)
        per_patch = ((pred - target) ** 2).mean(dim=-1)
        return (per_patch * masked).sum() / masked.sum()
