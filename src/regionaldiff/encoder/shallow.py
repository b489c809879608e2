"""The field's shallow EEG encoders as :class:`~regionaldiff.encoder.feature.FeatureEncoder` backbones.

Read in the authors' code (``../shared/REFERENCE.md``, "EEG encoders of the field"); written here, not copied:

- :class:`LinearEncoder` (``encoder=linear``): the EEG averaged in time bins, flattened, one Linear layer to the
  codes, linear heads: the reference decoder the pipeline itself runs, trained by the pipeline's losses.
- :class:`MLPEncoder` (``encoder=mlp``): UBP's and NeuroBridge's encoder, the flattened trial (optionally a channel
  subset) through the residual projector: a two-layer MLP.
- :class:`ShallowEncoder` (``encoder=shallow``): NICE's temporal-spatial convolution ("TSConv", close to
  braindecode's ``ShallowFBCSPNet``): a temporal convolution, average pooling, a spatial convolution over all
  channels, then the residual projector. Kernel and pooling are given in seconds, so one config serves 100 Hz and
  250 Hz data.
- :class:`ATMEncoder` (``encoder=atm``): ATM's channel-token attention (each channel's time course a token, one
  Transformer layer) in front of the same TSConv. ATM's learned subject token is ``encoder.subject_layer=token``,
  which the contract's base (:class:`~regionaldiff.encoder.base.EEGEncoder`) gives every encoder.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from regionaldiff.encoder.feature import BandPower, FeatureEncoder, base_args, own_args
from regionaldiff.errors import ConfigError

__all__ = ["ATMEncoder", "LinearEncoder", "MLPEncoder", "ShallowEncoder", "TSConv"]


class LinearEncoder(FeatureEncoder):
    """A linear decoder: the EEG averaged in bins of ``bin_s`` seconds, flattened, one Linear layer to the codes.

    Parameters
    ----------
    bin_s : float
        Width of one time bin in seconds (the probes of ``docs/realistic.md`` read 40 ms bins).
    (the others: :class:`~regionaldiff.encoder.feature.FeatureEncoder`; ``projector`` is ``linear`` here)
    """

    @classmethod
    def check_config(cls, key: str, **arch: Any) -> None:
        super().check_config(key, **arch)
        if cls.arch_args(arch)["bin_s"] <= 0:
            raise ConfigError(f"{key}.bin_s must be > 0; got {arch['bin_s']}.")

    def __init__(
        self,
        n_chans: int,
        n_times: int,
        sfreq: float,
        num_classes: int,
        num_region_labels: int = 0,
        align_dim: int = 0,
        bin_s: float = 0.04,
        num_tokens: int = 4,
        embed_dim: int = 64,
        projector: str = "linear",
        dropout: float = 0.0,
        region_grid: int = 8,
        region_path: str = "shared",
        input_transform: str | None = None,
        mask_ratio: float = 0.5,
        mask_patch_s: float = 0.1,
    ) -> None:
        arch = own_args(locals(), self.DATA_ARGS)
        self.check_config("encoder.net", **arch)
        self.bin = max(1, round(bin_s * sfreq))
        super().__init__(n_chans, n_times, sfreq, num_classes, num_region_labels, align_dim, **base_args(arch))

    def make_backbone(self, n_chans: int, n_times: int) -> tuple[nn.Module, int]:
        # band powers (the transform's output) are not a time course: each band is its own feature
        bin_size = 1 if isinstance(self.transform, BandPower) else min(self.bin, n_times)
        pool = nn.AvgPool1d(bin_size, bin_size, ceil_mode=True)
        return nn.Sequential(pool, nn.Flatten(1)), n_chans * -(-n_times // bin_size)


class _ChannelSubset(nn.Module):
    def __init__(self, channels: Sequence[int] | None) -> None:
        super().__init__()
        self.channels = None if channels is None else list(channels)

    def forward(self, eeg: torch.Tensor) -> torch.Tensor:
        return eeg if self.channels is None else eeg[:, self.channels]


class MLPEncoder(FeatureEncoder):
    """UBP's / NeuroBridge's encoder: the flattened trial through the residual projector.

    Parameters
    ----------
    channels : list of int or None
        Indices of the channels to read (UBP reads THINGS-EEG2's 17 posterior channels of 63); null = all.
    (the others: :class:`~regionaldiff.encoder.feature.FeatureEncoder`)
    """

    @classmethod
    def check_config(cls, key: str, **arch: Any) -> None:
        super().check_config(key, **arch)
        channels = cls.arch_args(arch)["channels"]
        if channels is not None and (len(channels) == 0 or min(channels) < 0):
            raise ConfigError(
                f"{key}.channels must be null (all) or a non-empty list of channel indices; got {channels}."
            )

    def __init__(
        self,
        n_chans: int,
        n_times: int,
        sfreq: float,
        num_classes: int,
        num_region_labels: int = 0,
        align_dim: int = 0,
        channels: list[int] | None = None,
        num_tokens: int = 4,
        embed_dim: int = 64,
        projector: str = "residual",
        dropout: float = 0.5,
        region_grid: int = 8,
        region_path: str = "shared",
        input_transform: str | None = None,
        mask_ratio: float = 0.5,
        mask_patch_s: float = 0.1,
    ) -> None:
        arch = own_args(locals(), self.DATA_ARGS)
        self.check_config("encoder.net", **arch)
        if channels is not None and max(channels) >= n_chans:
            raise ConfigError(
                f"encoder.net.channels={list(channels)} names channel {max(channels)}, but the data has {n_chans} "
                "channels (0-based indices)."
            )
        self.channels = None if channels is None else [int(c) for c in channels]
        super().__init__(n_chans, n_times, sfreq, num_classes, num_region_labels, align_dim, **base_args(arch))

    def make_backbone(self, n_chans: int, n_times: int) -> tuple[nn.Module, int]:
        read = n_chans if self.channels is None else len(self.channels)
        return nn.Sequential(_ChannelSubset(self.channels), nn.Flatten(1)), read * n_times


class TSConv(nn.Module):
    """NICE's temporal-spatial convolution: ``[B, C, T] -> [B, n_filters * T']``.

    ``Conv(1 -> F, (1, k)) -> AvgPool((1, p), stride s) -> BN -> ELU -> Conv(F -> F, (C, 1)) -> BN -> ELU -> Dropout
    -> Conv 1x1 -> flatten``.
    """

    def __init__(
        self, n_chans: int, n_times: int, n_filters: int, kernel: int, pool: int, stride: int, dropout: float
    ):
        super().__init__()
        kernel, pool = min(kernel, n_times), min(pool, n_times - min(kernel, n_times) + 1)
        self.net = nn.Sequential(
            nn.Conv2d(1, n_filters, (1, kernel)),
            nn.AvgPool2d((1, pool), (1, stride)),
            nn.BatchNorm2d(n_filters),
            nn.ELU(),
            nn.Conv2d(n_filters, n_filters, (n_chans, 1)),
            nn.BatchNorm2d(n_filters),
            nn.ELU(),
            nn.Dropout(dropout),
            nn.Conv2d(n_filters, n_filters, 1),
            nn.Flatten(1),
        )
        self.out_features = n_filters * ((n_times - kernel + 1 - pool) // stride + 1)

    def forward(self, eeg: torch.Tensor) -> torch.Tensor:
        return self.net(eeg[:, None])


class ShallowEncoder(FeatureEncoder):
    """NICE's TSConv backbone and the residual projector.

    Parameters
    ----------
    n_filters : int
        Temporal (and spatial) filters (NICE: 40).
    kernel_s, pool_s, pool_stride_s : float
        The temporal kernel, the pooling window and its stride, in seconds (NICE at 250 Hz: 25, 51 and 5 samples).
    (the others: :class:`~regionaldiff.encoder.feature.FeatureEncoder`)
    """

    READS_TIME_COURSE = True

    @classmethod
    def check_config(cls, key: str, **arch: Any) -> None:
        super().check_config(key, **arch)
        a = cls.arch_args(arch)
        for name in ("n_filters", "kernel_s", "pool_s", "pool_stride_s"):
            if a[name] <= 0:
                raise ConfigError(f"{key}.{name} must be > 0; got {a[name]}.")

    def __init__(
        self,
        n_chans: int,
        n_times: int,
        sfreq: float,
        num_classes: int,
        num_region_labels: int = 0,
        align_dim: int = 0,
        n_filters: int = 40,
        kernel_s: float = 0.1,
        pool_s: float = 0.2,
        pool_stride_s: float = 0.02,
        num_tokens: int = 4,
        embed_dim: int = 64,
        projector: str = "residual",
        dropout: float = 0.5,
        region_grid: int = 8,
        region_path: str = "shared",
        input_transform: str | None = None,
        mask_ratio: float = 0.5,
        mask_patch_s: float = 0.1,
    ) -> None:
        arch = own_args(locals(), self.DATA_ARGS)
        self.check_config("encoder.net", **arch)
        self.n_filters = int(n_filters)
        self.tsconv_samples = [max(1, round(s * sfreq)) for s in (kernel_s, pool_s, pool_stride_s)]
        super().__init__(n_chans, n_times, sfreq, num_classes, num_region_labels, align_dim, **base_args(arch))

    def make_backbone(self, n_chans: int, n_times: int) -> tuple[nn.Module, int]:
        kernel, pool, stride = self.tsconv_samples
        conv = TSConv(n_chans, n_times, self.n_filters, kernel, pool, stride, self.dropout)
        return conv, conv.out_features


class _ChannelAttention(nn.Module):
    """One Transformer layer over channel tokens (each channel's time course is a token of width ``n_times``)."""

    def __init__(self, n_chans: int, n_times: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.position = nn.Parameter(torch.zeros(1, n_chans, n_times))
        self.layer = nn.TransformerEncoderLayer(
            n_times, heads, dim_feedforward=2 * n_times, dropout=dropout, batch_first=True, norm_first=True
        )

    def forward(self, eeg: torch.Tensor) -> torch.Tensor:
        return self.layer(eeg + self.position)


class ATMEncoder(ShallowEncoder):
    """ATM's encoder: channel-token attention, then NICE's TSConv and the residual projector.

    Parameters
    ----------
    attention_heads : int
        Heads of the channel-token attention; must divide the number of time samples the backbone reads.
    (the others: :class:`ShallowEncoder`)
    """

    @classmethod
    def check_config(cls, key: str, **arch: Any) -> None:
        super().check_config(key, **arch)
        heads = cls.arch_args(arch)["attention_heads"]
        if heads < 1:
            raise ConfigError(f"{key}.attention_heads must be >= 1; got {heads}.")

    def __init__(
        self,
        n_chans: int,
        n_times: int,
        sfreq: float,
        num_classes: int,
        num_region_labels: int = 0,
        align_dim: int = 0,
        attention_heads: int = 1,
        n_filters: int = 40,
        kernel_s: float = 0.1,
        pool_s: float = 0.2,
        pool_stride_s: float = 0.02,
        num_tokens: int = 4,
        embed_dim: int = 64,
        projector: str = "residual",
        dropout: float = 0.5,
        region_grid: int = 8,
        region_path: str = "shared",
        input_transform: str | None = None,
        mask_ratio: float = 0.5,
        mask_patch_s: float = 0.1,
    ) -> None:
        arch = own_args(locals(), self.DATA_ARGS)
        self.check_config("encoder.net", **arch)  # with attention_heads, which ShallowEncoder's check cannot see
        self.attention_heads = int(arch.pop("attention_heads"))
        super().__init__(n_chans, n_times, sfreq, num_classes, num_region_labels, align_dim, **arch)

    def make_backbone(self, n_chans: int, n_times: int) -> tuple[nn.Module, int]:
        if n_times % self.attention_heads:
            raise ConfigError(
                f"encoder.net.attention_heads={self.attention_heads} must divide the {n_times} time samples the "
                "channel-token attention reads (each channel's time course is one token)."
            )
        attention = _ChannelAttention(n_chans, n_times, self.attention_heads, self.dropout)
        conv, features = super().make_backbone(n_chans, n_times)
        return nn.Sequential(attention, conv), features
