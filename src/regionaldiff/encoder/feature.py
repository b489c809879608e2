"""The field's encoders share one shape: a backbone maps the EEG to a feature vector, a residual projector maps that to
the codes, and linear heads read the codes. :class:`FeatureEncoder` is that shape, under the
:class:`~regionaldiff.encoder.base.EEGEncoder` contract; its subclasses (:mod:`regionaldiff.encoder.shallow`) only
build the backbone.

- **Projector** (:class:`ResidualProjector`): ``Linear -> x + Dropout(Linear(GELU(x))) -> LayerNorm``, as NICE's,
  ATM's and UBP's projectors are (``../shared/REFERENCE.md``, "EEG encoders of the field"). ``projector: linear``
  keeps the whole decoder linear (the ``linear`` option, the reference decoder).
- **Codes**: the projector's output, ``num_tokens * embed_dim`` wide, cut into ``num_tokens`` tokens of width
  ``embed_dim`` (what the LDM's conditioner cross-attends to).
- **Region path** (``region_path``), where the region objective meets the semantic one:

  - ``shared``: the region head reads the same codes as the class and alignment heads (the MAE's way);
  - ``detached``: the region head reads the codes with their gradient stopped, so the region loss trains only the
    head and never moves what the semantic objectives learned;
  - ``separate``: a second backbone and projector, of the same architecture with their own weights, make
    ``num_tokens`` region tokens of their own (ATM trains its low-level path as a separate model). The codes are the
    semantic tokens followed by the region tokens; the class and alignment heads read the first, the region head the
    second.
- **Input transform** (``input_transform``): ``null`` (the signal) or ``bandpower`` (:class:`BandPower`, the
  log band power per channel that EEG-ImageNet's best decoders read), for backbones that do not read a time course
  (``mlp``, ``linear``).
- **Masked recovery**: a generic masked-input objective (random time patches zeroed, the whole signal recovered
  linearly from the codes), so ``encoder.w_mae > 0`` means the same thing for every encoder; the field's encoders
  train without it (their options set ``w_mae: 0``).
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from regionaldiff.encoder.base import EEGEncoder
from regionaldiff.errors import ConfigError

__all__ = ["BandPower", "FeatureEncoder", "ResidualProjector", "REGION_PATHS", "base_args", "own_args"]

REGION_PATHS = ("shared", "detached", "separate")
PROJECTORS = ("residual", "linear")
INPUT_TRANSFORMS = (None, "bandpower")
#: the classical EEG bands (Hz) of the band-power features, cut at the Nyquist frequency
BANDS = ((1.0, 4.0), (4.0, 8.0), (8.0, 13.0), (13.0, 30.0), (30.0, 50.0))


class ResidualProjector(nn.Module):
    """``Linear(in, out) -> x + Dropout(Linear(GELU(x))) -> LayerNorm(out)``: the field's projector."""

    def __init__(self, in_features: int, out_features: int, dropout: float) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, out_features)
        self.residual = nn.Sequential(nn.GELU(), nn.Linear(out_features, out_features), nn.Dropout(dropout))
        self.norm = nn.LayerNorm(out_features)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = self.linear(features)
        return self.norm(x + self.residual(x))


class BandPower(nn.Module):
    """Log power of each channel in each EEG band: ``[B, C, T]`` -> ``[B, C, n_bands]``.

    The band-power ("differential entropy") features of EEG-ImageNet's strongest decoders: for a band-limited signal
    the differential entropy is ``0.5 * log(2 pi e var)``, the log band power up to constants. Computed with one real
    FFT of the whole trial (a Hann window), so it is differentiable and runs on the batch's device.
    """

    def __init__(self, sfreq: float, n_times: int) -> None:
        super().__init__()
        freqs = torch.fft.rfftfreq(n_times, d=1.0 / sfreq)
        bands = [(lo, min(hi, sfreq / 2)) for lo, hi in BANDS if lo < sfreq / 2]
        masks = torch.stack([(freqs >= lo) & (freqs < hi) for lo, hi in bands]).float()
        if (masks.sum(1) == 0).any():
            raise ConfigError(
                f"encoder.net.input_transform=bandpower: a trial of {n_times} samples at {sfreq:g} Hz leaves a band "
                f"({bands}) without a frequency bin; use longer trials or no band-power transform."
            )
        self.register_buffer("band_masks", masks / masks.sum(1, keepdim=True), persistent=False)
        self.register_buffer("window", torch.hann_window(n_times, periodic=False), persistent=False)
        self.n_bands = len(bands)

    band_masks: torch.Tensor
    window: torch.Tensor

    def forward(self, eeg: torch.Tensor) -> torch.Tensor:
        power = torch.fft.rfft(eeg * self.window, dim=-1).abs().pow(2)
        return torch.log(power @ self.band_masks.T + 1e-6)


class FeatureEncoder(EEGEncoder):
    """Base of the field's encoders: backbone -> feature vector -> projector -> codes ``[B, num_tokens, embed_dim]``.

    A subclass implements :meth:`make_backbone` (a module ``[B, C, T'] -> [B, F]`` and its ``F``, for the input as the
    transform leaves it) and may extend :meth:`check_config`. Parameters shared by every such encoder:

    Parameters
    ----------
    num_tokens : int
        Code length L (the tokens the LDM's conditioner attends to). With ``region_path: separate`` the codes have
        ``2 * num_tokens`` tokens: the semantic ones, then the region ones.
    embed_dim : int
        Code width D.
    projector : str
        ``residual`` (the field's projector) or ``linear`` (one Linear layer: the whole decoder stays linear).
    dropout : float
        Dropout of the projector (and of backbones that have their own).
    region_grid : int
        Side of the coarse grid the region head predicts (0 = no region head).
    region_path : str
        ``shared``, ``detached`` or ``separate``: what the region head reads (module docstring).
    input_transform : str or None
        ``null`` (the signal) or ``bandpower`` (log band power per channel and band).
    mask_ratio : float
        Fraction of time patches zeroed by the generic masked-input objective.
    mask_patch_s : float
        Length of one masked time patch, in seconds.
    """

    #: whether the backbone reads a time course (convolutions or pooling over time), so band powers cannot feed it
    READS_TIME_COURSE = False

    @classmethod
    def check_config(cls, key: str, **arch: Any) -> None:
        """Check the architecture's own arguments (those not given take the constructor's defaults); a ConfigError
        names ``key.<argument>``. Runs before any work and in the constructor."""
        a = cls.arch_args(arch)
        for name in ("num_tokens", "embed_dim"):
            if int(a[name]) < 1:
                raise ConfigError(f"{key}.{name} must be >= 1; got {a[name]}.")
        if a["region_path"] not in REGION_PATHS:
            raise ConfigError(f"{key}.region_path must be one of {', '.join(REGION_PATHS)}; got {a['region_path']!r}.")
        if a["projector"] not in PROJECTORS:
            raise ConfigError(f"{key}.projector must be one of {', '.join(PROJECTORS)}; got {a['projector']!r}.")
        if a["input_transform"] not in INPUT_TRANSFORMS:
            raise ConfigError(f"{key}.input_transform must be null or bandpower; got {a['input_transform']!r}.")
        if a["input_transform"] == "bandpower" and cls.READS_TIME_COURSE:
            raise ConfigError(
                f"{key}.input_transform=bandpower leaves 5 band values per channel, not a time course, and "
                f"{cls.__name__} convolves or pools over time: use it with encoder=mlp or encoder=linear."
            )
        if not 0.0 <= a["dropout"] < 1.0:
            raise ConfigError(f"{key}.dropout must be in [0, 1); got {a['dropout']}.")
        if not 0.0 < a["mask_ratio"] < 1.0:
            raise ConfigError(f"{key}.mask_ratio must be in (0, 1); got {a['mask_ratio']}.")
        if a["mask_patch_s"] <= 0:
            raise ConfigError(f"{key}.mask_patch_s must be > 0; got {a['mask_patch_s']}.")
        if a["region_grid"] < 0:
            raise ConfigError(f"{key}.region_grid must be >= 0 (0 = no region head); got {a['region_grid']}.")

    @classmethod
    def arch_args(cls, given: dict[str, Any]) -> dict[str, Any]:
        """The architecture's arguments: ``given`` over the constructor's defaults (the data's sizes left out)."""
        params = inspect.signature(cls.__init__).parameters
        return {
            n: given.get(n, p.default)
            for n, p in params.items()
            if n not in ("self", "kwargs", *cls.DATA_ARGS) and p.kind is not p.VAR_KEYWORD
        }

    def __init__(
        self,
        n_chans: int,
        n_times: int,
        sfreq: float,
        num_classes: int,
        num_region_labels: int = 0,
        align_dim: int = 0,
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
        super().__init__(n_chans, n_times, sfreq, num_classes, num_region_labels, align_dim)
        # subclasses call check_config with their own arguments first (the base's are checked there too)
        self.num_tokens, self.embed_dim, self.region_grid = int(num_tokens), int(embed_dim), int(region_grid)
        self.projector_kind, self.dropout, self.region_path = projector, float(dropout), region_path
        self.mask_ratio = float(mask_ratio)
        self.mask_patch = max(1, min(n_times, round(mask_patch_s * sfreq)))
        self.transform: nn.Module = BandPower(sfreq, n_times) if input_transform == "bandpower" else nn.Identity()
        self.feature_times = self.transform(torch.zeros(1, n_chans, n_times)).shape[-1]
        self.num_patches = self.num_tokens * (2 if self.has_region_path else 1)

        self.backbone, features = self.make_backbone(n_chans, self.feature_times)
        self.projector = self._projector(features)
        if self.has_region_path:
            self.region_backbone, region_features = self.make_backbone(n_chans, self.feature_times)
            self.region_projector = self._projector(region_features)
        width = self.num_tokens * self.embed_dim
        self.class_head = nn.Linear(width, num_classes)
        if self.region_grid > 0:
            self.region_head = nn.Linear(width, self.num_region_labels * self.region_grid**2)
        if align_dim > 0:
            self.align_head = nn.Linear(width, align_dim)
        self.recovery = nn.Linear(self.num_patches * self.embed_dim, n_chans * n_times)

    @property
    def has_region_path(self) -> bool:
        """Whether the region map has a backbone of its own (``region_path: separate``)."""
        return self.region_path == "separate" and self.region_grid > 0

    def make_backbone(self, n_chans: int, n_times: int) -> tuple[nn.Module, int]:
        """A module ``[B, n_chans, n_times] -> [B, F]`` (the input after the transform) and its feature width F."""
        raise NotImplementedError

    def _projector(self, features: int) -> nn.Module:
        width = self.num_tokens * self.embed_dim
        if self.projector_kind == "linear":
            return nn.Linear(features, width)
        return ResidualProjector(features, width, self.dropout)

    # -- encoding -----------------------------------------------------------------------------------------------------
    def _codes(self, eeg: torch.Tensor) -> torch.Tensor:
        x = self.transform(eeg)
        b = eeg.shape[0]
        codes = self.projector(self.backbone(x)).reshape(b, self.num_tokens, self.embed_dim)
        if self.has_region_path:
            region = self.region_projector(self.region_backbone(x)).reshape(b, self.num_tokens, self.embed_dim)
            codes = torch.cat([codes, region], dim=1)
        return codes

    def forward_features(self, eeg: torch.Tensor) -> torch.Tensor:
        """Codes ``[B, num_patches, embed_dim]`` (the semantic tokens, then the region tokens if separate)."""
        self.check_input(eeg)
        return self._codes(eeg)

    def semantic_tokens(self, codes: torch.Tensor) -> torch.Tensor:
        """The tokens the class and alignment heads read, flattened ``[B, num_tokens * embed_dim]``."""
        return codes[:, : self.num_tokens].flatten(1)

    def classify(self, codes: torch.Tensor) -> torch.Tensor:
        return self.class_head(self.semantic_tokens(codes))

    def embed(self, codes: torch.Tensor) -> torch.Tensor:
        if self.align_dim <= 0:
            raise RuntimeError("This encoder was built with align_dim=0 (no alignment head).")
        return self.align_head(self.semantic_tokens(codes))

    def predict_regions(self, codes: torch.Tensor) -> torch.Tensor:
        if self.region_grid <= 0:
            raise RuntimeError("This encoder was built with region_grid=0 (no region head).")
        if self.has_region_path:
            tokens = codes[:, self.num_tokens :]
        elif self.region_path == "detached":
            tokens = codes[:, : self.num_tokens].detach()
        else:
            tokens = codes[:, : self.num_tokens]
        g = self.region_grid
        logits = self.region_head(tokens.flatten(1)).reshape(codes.shape[0], self.num_region_labels, g, g)
        return self.add_background_bias(logits)

    # -- masked input recovery -------------------------------------------------------------------------------------------
    def masked_reconstruction_loss(self, eeg: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """MSE of the zeroed time patches, recovered linearly from the codes of the masked signal."""
        self.check_input(eeg)
        b, _, t = eeg.shape
        n_patches = -(-t // self.mask_patch)
        masked_patches = torch.rand(b, n_patches, device=eeg.device, generator=generator) < self.mask_ratio
        masked_patches[:, 0] |= ~masked_patches.any(dim=1)  # at least one patch is masked
        mask = masked_patches.repeat_interleave(self.mask_patch, dim=1)[:, None, :t].float()
        codes = self._codes(eeg * (1.0 - mask))
        recovered = self.recovery(codes.flatten(1)).reshape_as(eeg)
        mask = mask.expand_as(eeg)
        return (F.mse_loss(recovered, eeg, reduction="none") * mask).sum() / mask.sum()


def own_args(values: dict[str, Any], data_args: tuple[str, ...]) -> dict[str, Any]:
    """A constructor's own arguments from its ``locals()`` (the data's sizes and ``self`` left out)."""
    return {k: v for k, v in values.items() if k not in ("self", "__class__", *data_args)}


def base_args(arch: dict[str, Any]) -> dict[str, Any]:
    """The arguments :class:`FeatureEncoder` takes, out of a subclass's."""
    return {k: arch[k] for k in FeatureEncoder.arch_args({})}
