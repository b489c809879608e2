"""Latent spaces for the diffusion model: an invertible pixel-unshuffle (tiny, CPU) or a diffusers VAE.

Both expose ``encode(images in [-1, 1]) -> latents``, ``decode(latents) -> images``, ``latent_channels``
and ``downsample`` (image side / latent side), so the LDM code does not care which one is used.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from regionaldiff.errors import BadInputError, MissingFileError


class PixelUnshuffleCodec(nn.Module):
    """Invertible, parameter-free latent space: ``[B, 3, H, W] -> [B, 3 f^2, H/f, W/f]``.

    Exact reconstruction, no training, so the CPU default spends its minutes on the diffusion model.
    """

    def __init__(self, factor: int = 2, scale: float = 1.0) -> None:
        super().__init__()
        if factor < 1:
            raise ValueError(f"ldm.latent.factor must be >= 1; got {factor}.")
        self.factor, self.scale = factor, scale
        self.latent_channels = 3 * factor * factor
        self.downsample = factor

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return F.pixel_unshuffle(images, self.factor) * self.scale

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return F.pixel_shuffle(latents / self.scale, self.factor).clamp(-1, 1)


class VAECodec(nn.Module):
    """A diffusers ``AutoencoderKL`` (e.g. Stable Diffusion 1.5's) read from a local folder, frozen.

    Parameters
    ----------
    pretrained : str
        Local folder of the model (the SD-1.5 repository root with ``subfolder="vae"``, or the VAE folder itself).
    subfolder : str or None
        Subfolder holding the VAE, ``"vae"`` for a full Stable Diffusion checkpoint.
    """

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
            self.vae = AutoencoderKL.from_pretrained(str(root), subfolder=subfolder)
        except (OSError, ValueError, RuntimeError) as err:  # missing/corrupt weights file, config of another model
            raise BadInputError(
                f"The VAE at {folder} (ldm.latent.pretrained) could not be loaded: {type(err).__name__}: "
                f"{str(err)[:300]}. Download Stable Diffusion 1.5 again (docs/setup.md)."
            ) from err
        self.vae.requires_grad_(False)
        self.scaling_factor = float(self.vae.config.scaling_factor)
        self.latent_channels = int(self.vae.config.latent_channels)
        self.downsample = 2 ** (len(self.vae.config.block_out_channels) - 1)

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.vae.encode(images.to(self.vae.dtype)).latent_dist.mode() * self.scaling_factor

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(latents.to(self.vae.dtype) / self.scaling_factor).sample.clamp(-1, 1)


def build_codec(cfg) -> nn.Module:
    """Codec from the ``ldm.latent`` config node (``kind: pixel_unshuffle | vae``)."""
    kind = cfg["kind"]
    if kind == "pixel_unshuffle":
        return PixelUnshuffleCodec(factor=int(cfg["factor"]), scale=float(cfg.get("scale", 1.0)))
    if kind == "vae":
        return VAECodec(pretrained=str(cfg["pretrained"]), subfolder=cfg.get("subfolder", "vae"))
    raise ValueError(f"ldm.latent.kind must be 'pixel_unshuffle' or 'vae'; got {kind!r}.")
