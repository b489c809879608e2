"""The region-aware latent diffusion model: a diffusers UNet conditioned on EEG codes by cross-attention and,
in the regional variant, on a semantic region map through a diffusers ControlNet.

The UNet, ControlNet and schedulers are the Stable Diffusion 1.5 classes: the tiny CPU variant builds them
from a small config, ``ldm=sd15_*`` loads SD-1.5 from a local folder, with no code change.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import ControlNetModel, DDIMScheduler, DDPMScheduler, UNet2DConditionModel
from torch import nn

from regionaldiff.errors import BadInputError, MissingFileError
from regionaldiff.ldm.conditioning import EEGConditioner, map_condition


def build_unet(cfg: Mapping[str, Any], in_channels: int, cross_attention_dim: int) -> UNet2DConditionModel:
    """UNet from ``ldm.unet``: ``pretrained`` (a local folder) or ``config`` (kwargs of ``UNet2DConditionModel``)."""
    pretrained = cfg.get("pretrained")
    if pretrained:
        root = Path(str(pretrained))
        subfolder = cfg.get("subfolder", "unet")
        if not ((root / subfolder) if subfolder else root).joinpath("config.json").is_file():
            raise MissingFileError(
                f"No UNet at {root}/{subfolder or ''} (expected config.json and weights). Put Stable Diffusion 1.5 "
                f"under paths.weights_dir or set ldm.unet.pretrained to its local folder."
            )
        try:
            unet = UNet2DConditionModel.from_pretrained(str(root), subfolder=subfolder)
        except (OSError, ValueError, RuntimeError) as err:  # missing/corrupt weights file, config of another model
            raise BadInputError(
                f"The UNet at {root}/{subfolder or ''} (ldm.unet.pretrained) could not be loaded: "
                f"{type(err).__name__}: {str(err)[:300]}. Download Stable Diffusion 1.5 again (docs/setup.md)."
            ) from err
        if unet.config.in_channels != in_channels:
            raise BadInputError(
                f"UNet at {root} takes {unet.config.in_channels} latent channels; the latent space gives {in_channels}."
            )
        return unet
    config = dict(cfg["config"])
    config.update(in_channels=in_channels, out_channels=in_channels, cross_attention_dim=cross_attention_dim)
    for key in ("down_block_types", "up_block_types", "block_out_channels"):
        config[key] = tuple(config[key])
    return UNet2DConditionModel(**config)


class RegionalLDM(nn.Module):
    """EEG-conditioned LDM with an optional ControlNet branch for region maps.

    Parameters
    ----------
    unet : UNet2DConditionModel
        The denoiser.
    conditioner : EEGConditioner
        EEG codes -> cross-attention context.
    controlnet : ControlNetModel or None
        Region-map branch (None for the global-only variant).
    scheduler : DDPMScheduler
        Training noise schedule; sampling uses DDIM built from its config.
    image_size : int
        Side of the images (and of the region condition image).
    cond_drop_prob : float
        Probability of dropping the conditions during training (classifier-free guidance).
    """

    def __init__(
        self,
        unet: UNet2DConditionModel,
        conditioner: EEGConditioner,
        controlnet: ControlNetModel | None,
        scheduler: DDPMScheduler,
        image_size: int,
        cond_drop_prob: float = 0.1,
    ) -> None:
        super().__init__()
        self.unet, self.conditioner, self.controlnet = unet, conditioner, controlnet
        self.scheduler = scheduler
        self.image_size = image_size
        self.cond_drop_prob = cond_drop_prob

    @property
    def uses_regions(self) -> bool:
        return self.controlnet is not None

    def predict_noise(
        self, latents: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor, region_probs: torch.Tensor | None
    ) -> torch.Tensor:
        """The UNet's prediction (epsilon, v or the clean latents, as configured) for noisy ``latents``."""
        down, mid = None, None
        if self.controlnet is not None:
            if region_probs is None:
                raise ValueError("The regional LDM needs a region map (region_probs) to condition on.")
            down, mid = self.controlnet(
                latents,
                timesteps,
                encoder_hidden_states=context,
                controlnet_cond=map_condition(region_probs, self.image_size).to(latents.dtype),
                return_dict=False,
            )
        return self.unet(
            latents,
            timesteps,
            encoder_hidden_states=context,
            down_block_additional_residuals=down,
            mid_block_additional_residual=mid,
        ).sample

    def _drop(self, context: torch.Tensor, region_probs: torch.Tensor | None, generator: torch.Generator | None):
        """Replace the conditions of a random ``cond_drop_prob`` of the batch by the null condition."""
        if self.cond_drop_prob <= 0:
            return context, region_probs
        keep = (
            torch.rand(context.shape[0], device=context.device, generator=generator) >= self.cond_drop_prob
        ).float()
        context = context * keep[:, None, None]
        if region_probs is not None:
            region_probs = region_probs * keep[:, None, None, None]
        return context, region_probs

    def training_loss(
        self,
        latents: torch.Tensor,
        context: torch.Tensor,
        region_probs: torch.Tensor | None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """The denoising loss (MSE against the scheduler's prediction target) of one batch."""
        noise = torch.randn(latents.shape, device=latents.device, generator=generator, dtype=latents.dtype)
        steps = torch.randint(
            0,
            self.scheduler.config.num_train_timesteps,
            (latents.shape[0],),
            device=latents.device,
            generator=generator,
        )
        noisy = self.scheduler.add_noise(latents, noise, steps)
        context, region_probs = self._drop(context, region_probs, generator)
        prediction = self.predict_noise(noisy, steps, context, region_probs)
        kind = self.scheduler.config.prediction_type
        if kind == "v_prediction":
            target = self.scheduler.get_velocity(latents, noise, steps)
        elif kind == "sample":
            target = latents
        else:
            target = noise
        return F.mse_loss(prediction.float(), target.float())

    @torch.no_grad()
    def sample(
        self,
        context: torch.Tensor,
        region_probs: torch.Tensor | None,
        latent_shape: tuple[int, int, int],
        num_steps: int = 25,
        guidance_scale: float = 1.0,
        generator: torch.Generator | None = None,
        eta: float = 0.0,
        clip_sample: bool = False,
        clip_sample_range: float = 1.0,
    ) -> torch.Tensor:
        """DDIM sampling with classifier-free guidance; returns latents ``[B, *latent_shape]``.

        ``clip_sample`` clips the predicted clean latents to ``[-clip_sample_range, clip_sample_range]`` at every
        step (for latents that are images in [-1, 1]).
        """
        sampler = DDIMScheduler.from_config(
            self.scheduler.config, clip_sample=clip_sample, clip_sample_range=clip_sample_range
        )
        sampler.set_timesteps(num_steps, device=context.device)
        b = context.shape[0]
        latents = torch.randn((b, *latent_shape), generator=generator, device=context.device, dtype=context.dtype)
        latents = latents * sampler.init_noise_sigma
        guided = guidance_scale != 1.0
        if guided:
            context_in = torch.cat([torch.zeros_like(context), context])
            probs_in = None if region_probs is None else torch.cat([torch.zeros_like(region_probs), region_probs])
        else:
            context_in, probs_in = context, region_probs
        for t in sampler.timesteps:
            model_in = torch.cat([latents, latents]) if guided else latents
            steps = t.expand(model_in.shape[0]).to(context.device)
            pred = self.predict_noise(sampler.scale_model_input(model_in, t), steps, context_in, probs_in)
            if guided:
                uncond, cond = pred.chunk(2)
                pred = uncond + guidance_scale * (cond - uncond)
            latents = sampler.step(pred, t, latents, eta=eta, generator=generator).prev_sample
        return latents


def build_ldm(
    cfg: Mapping[str, Any],
    *,
    latent_channels: int,
    code_len: int,
    code_dim: int,
    num_classes: int,
    image_size: int,
    latent_size: int,
) -> RegionalLDM:
    """Build the LDM from the ``ldm`` config node and the sizes of the data, latent space and encoder."""
    cross_dim = int(cfg["cross_attention_dim"])
    unet = build_unet(cfg["unet"], latent_channels, cross_dim)
    if int(unet.config.sample_size) != latent_size and not cfg["unet"].get("pretrained"):
        unet.register_to_config(sample_size=latent_size)
    cond_cfg = cfg["conditioner"]
    conditioner = EEGConditioner(
        code_len=code_len,
        code_dim=code_dim,
        num_classes=num_classes,
        cross_attention_dim=int(unet.config.cross_attention_dim),
        n_tokens=int(cond_cfg["n_tokens"]),
        use_class_token=bool(cond_cfg["use_class_token"]),
    )
    controlnet = None
    if cfg["regions"]:
        ctrl = cfg["controlnet"]
        emb = tuple(int(c) for c in ctrl["conditioning_embedding_out_channels"])
        if image_size != latent_size * 2 ** (len(emb) - 1):
            raise ValueError(
                f"ldm.controlnet.conditioning_embedding_out_channels has {len(emb)} entries, which downsamples the "
                f"{image_size}px region map by {2 ** (len(emb) - 1)}; the latents are {latent_size}px. Use "
                f"{1 + (image_size // latent_size).bit_length() - 1} entries."
            )
        controlnet = ControlNetModel.from_unet(
            unet,
            conditioning_embedding_out_channels=emb,
            load_weights_from_unet=bool(ctrl["init_from_unet"]),
            conditioning_channels=num_classes + 1,
        )
    sched = cfg["scheduler"]
    scheduler = DDPMScheduler(
        num_train_timesteps=int(sched["num_train_timesteps"]),
        beta_schedule=str(sched["beta_schedule"]),
        prediction_type=str(sched["prediction_type"]),
        clip_sample=False,
    )
    return RegionalLDM(unet, conditioner, controlnet, scheduler, image_size, float(cfg["cond_drop_prob"]))
