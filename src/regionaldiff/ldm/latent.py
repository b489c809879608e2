"""Latent spaces for the diffusion model: an invertible pixel-unshuffle (tiny, CPU) or a diffusers VAE.

Both are :class:`LatentCodec` components (``ldm.latent`` with a ``_target_``): ``encode(images in [-1, 1]) ->
latents``, ``decode(latents) -> images``, ``latent_channels`` and ``downsample`` (image side / latent side), so the
LDM code does not care which one is used. A new latent space is a subclass plus a YAML node.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from regionaldiff.errors import BadInputError, ConfigError, MissingFileError
from regionaldiff.requirements import RequiredPath, diffusers_part


class LatentCodec(nn.Module):
    """Base of the latent spaces: images ``[B, 3, H, W]`` in [-1, 1] <-> latents ``[B, latent_channels, H / d,
    W / d]`` with ``d = downsample``."""

    latent_channels: int
    downsample: int

    #: whether the codec has a posterior (a VAE): training samples from it, and the latent cache keeps it
    stochastic = False

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def posterior(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log-variance of the (scaled) latents of ``images``; a deterministic codec returns its latents
        and zeros (and :meth:`sample` ignores the variance)."""
        latents = self.encode(images)
        return latents, torch.zeros_like(latents)

    def sample(
        self, mean: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Training latents from a posterior (the mean itself for a deterministic codec)."""
        return mean

    def training_latents(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The latents a training step uses for ``images``: a posterior sample (a VAE) or the latents."""
        if not self.stochastic:
            return self.encode(images)
        return self.sample(*self.posterior(images), generator=generator)


class PixelUnshuffleCodec(LatentCodec):
    """Invertible, parameter-free latent space: ``[B, 3, H, W] -> [B, 3 f^2, H/f, W/f]``.

    Exact reconstruction, no training, so the CPU default spends its minutes on the diffusion model.
    """

    @classmethod
    def check_config(cls, key: str, factor: int = 4, scale: float = 1.0) -> None:
        """Raise a ValueError naming ``key`` for a factor below 1 or a non-positive scale."""
        if factor < 1:
            raise ConfigError(f"{key}.factor must be >= 1; got {factor}.")
        if scale <= 0:
            raise ConfigError(f"{key}.scale must be > 0; got {scale}.")

    def __init__(self, factor: int = 4, scale: float = 1.0) -> None:
        super().__init__()
        self.check_config("ldm.latent", factor=factor, scale=scale)
        self.factor, self.scale = factor, scale
        self.latent_channels = 3 * factor * factor
        self.downsample = factor

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return F.pixel_unshuffle(images, self.factor) * self.scale

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return F.pixel_shuffle(latents / self.scale, self.factor).clamp(-1, 1)


class VAECodec(LatentCodec):
    """A diffusers ``AutoencoderKL`` (e.g. Stable Diffusion 1.5's) read from a local folder, frozen.

    Parameters
    ----------
    pretrained : str
        Local folder of the model (the SD-1.5 repository root with ``subfolder="vae"``, or the VAE folder itself).
    subfolder : str or None
        Subfolder holding the VAE, ``"vae"`` for a full Stable Diffusion checkpoint.
    """

    @classmethod
    def required_files(cls, node: Mapping[str, Any], key: str) -> list[RequiredPath]:
        """What it reads: the VAE folder (config and weights), for ``regionaldiff check``."""
        return [diffusers_part("SD-1.5 VAE", "VAE", node, key, default_subfolder="vae")]

    def __init__(self, pretrained: str, subfolder: str | None = "vae") -> None:
        super().__init__()
        from diffusers import AutoencoderKL

        root = Path(pretrained)
        folder = root / subfolder if subfolder else root
        if not (folder / "config.json").is_file():
            raise MissingFileError(
                f"No VAE at {folder} (expected config.json and weights there). Download Stable Diffusion 1.5 to "
                f"paths.weights_dir (e.g. `huggingface-cli download stable-diffusion-v1-5/stable-diffusion-v1-5 "
                f"--local-dir <weights_dir>/stable-diffusion-v1-5`) or set ldm.latent.pretrained."
            )
        try:
            self.vae = AutoencoderKL.from_pretrained(str(root), subfolder=subfolder, low_cpu_mem_usage=True)
        except (OSError, ValueError, RuntimeError) as err:  # missing/corrupt weights file, config of another model
            raise BadInputError(
                f"The VAE at {folder} (ldm.latent.pretrained) could not be loaded: {type(err).__name__}: "
                f"{str(err)[:300]}. Download Stable Diffusion 1.5 again (docs/setup.md)."
            ) from err
        self.vae.requires_grad_(False)
        self.scaling_factor = float(self.vae.config.scaling_factor)
        self.latent_channels = int(self.vae.config.latent_channels)
        self.downsample = 2 ** (len(self.vae.config.block_out_channels) - 1)

    stochastic = True

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.vae.encode(images.to(self.vae.dtype)).latent_dist.mode() * self.scaling_factor

    @torch.no_grad()
    def posterior(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log-variance of the VAE posterior, in the scaled latent space (``mean * scaling_factor``,
        ``logvar + 2 log scaling_factor``)."""
        dist = self.vae.encode(images.to(self.vae.dtype)).latent_dist
        scale = self.scaling_factor
        return dist.mean * scale, dist.logvar + 2.0 * torch.log(torch.tensor(scale))

    def sample(
        self, mean: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        return mean + torch.exp(0.5 * logvar.to(mean.dtype)) * noise

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(latents.to(self.vae.dtype) / self.scaling_factor).sample.clamp(-1, 1)
