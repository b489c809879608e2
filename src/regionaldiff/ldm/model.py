"""The region-aware latent diffusion model: a diffusers UNet conditioned on EEG codes by cross-attention and,
in the regional variant, on a semantic region map through a diffusers ControlNet.

The UNet, ControlNet and schedulers are the Stable Diffusion 1.5 classes: the tiny CPU variant builds them
from a small config, ``ldm=sd15_*`` loads SD-1.5 from a local folder, with no code change. The parts are
``_target_`` components (:func:`regionaldiff.components.build_ldm`); sampling lives in
:func:`regionaldiff.ldm.sampling.denoise`, used by :class:`regionaldiff.reconstruction.RegionalDiffPipeline`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import ControlNetModel, DDPMScheduler, UNet2DConditionModel
from torch import nn

from regionaldiff.ldm.adapter import EmbeddingAdapter
from regionaldiff.ldm.conditioning import map_condition


class RegionalLDM(nn.Module):
    """EEG-conditioned LDM with an optional ControlNet branch for region maps.

    Parameters
    ----------
    unet : UNet2DConditionModel
        The denoiser.
    conditioner : nn.Module
        EEG codes (and class logits) -> cross-attention context ``[B, n_tokens, cross_attention_dim]``.
    controlnet : ControlNetModel or None
        Region-map branch (None for the global-only variant).
    noise_scheduler : DDPMScheduler
        Training noise schedule (``ldm.noise_schedule``); sampling (:func:`regionaldiff.ldm.sampling.denoise`) uses DDIM built from its
        config.
    image_size : int
        Side of the images (and of the region condition image).
    cond_drop_prob : float
        Probability of dropping the conditions during training (classifier-free guidance).
    null_context : nn.Parameter or None
        A learned null context ``[n_tokens, cross_attention_dim]`` for dropped conditions and guidance; None: zeros.
        A dropped region map is always the empty map (all zeros).
    adapter : EmbeddingAdapter or None
        The frozen recipe's image-embedding adapter (:mod:`regionaldiff.ldm.adapter`; ``conditioner`` is then None):
        the context is the prepared image embedding ``[B, 1, E]``, which the adapter turns into what the UNet and the
        ControlNet read. None: the context is the conditioner's cross-attention context itself.
    """

    def __init__(
        self,
        unet: UNet2DConditionModel,
        conditioner: nn.Module | None,
        controlnet: ControlNetModel | None,
        noise_scheduler: DDPMScheduler,
        image_size: int,
        cond_drop_prob: float = 0.1,
        null_context: nn.Parameter | None = None,
        adapter: EmbeddingAdapter | None = None,
    ) -> None:
        super().__init__()
        self.unet, self.conditioner, self.controlnet = unet, conditioner, controlnet
        self.noise_scheduler = noise_scheduler
        self.image_size = image_size
        self.cond_drop_prob = cond_drop_prob
        self.null_context = null_context
        self.adapter = adapter

    def unconditional_context(self, context: torch.Tensor) -> torch.Tensor:
        """The null condition's context for a batch shaped like ``context``: the learned null context
        (``ldm.null_condition=learned``) or zeros."""
        if self.null_context is None:
            return torch.zeros_like(context)
        return self.null_context.to(context.dtype).expand_as(context)

    @property
    def uses_regions(self) -> bool:
        return self.controlnet is not None

    def model_output(
        self,
        latents: torch.Tensor,
        timesteps: torch.Tensor,
        context: torch.Tensor,
        region_probs: torch.Tensor | None,
        controlnet_scale: float = 1.0,
    ) -> torch.Tensor:
        """The UNet's output for noisy ``latents``: the noise (epsilon), v or the clean latents, as
        ``noise_scheduler.prediction_type`` says (the target of :meth:`training_loss`). ``controlnet_scale`` weights the
        ControlNet's residuals (diffusers' ``conditioning_scale``; 1 in training)."""
        down, mid = None, None
        unet_context, added = context, None
        control_context = context
        if self.adapter is not None:
            unet_context, added = self.adapter.unet_inputs(context)
            control_context = self.adapter.controlnet_context(context)
        if self.controlnet is not None:
            if region_probs is None:
                raise ValueError("The regional LDM needs a region map (region_probs) to condition on.")
            down, mid = self.controlnet(
                latents,
                timesteps,
                encoder_hidden_states=control_context,
                controlnet_cond=map_condition(region_probs, self.image_size).to(latents.dtype),
                conditioning_scale=controlnet_scale,
                return_dict=False,
            )
        return self.unet(
            latents,
            timesteps,
            encoder_hidden_states=unet_context,
            added_cond_kwargs=added,
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
        if self.null_context is None:
            context = context * keep[:, None, None]
        else:
            context = torch.where(keep[:, None, None] > 0, context, self.unconditional_context(context))
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
        """The denoising loss (MSE against the noise schedule's prediction target) of one batch."""
        noise = torch.randn(latents.shape, device=latents.device, generator=generator, dtype=latents.dtype)
        steps = torch.randint(
            0,
            self.noise_scheduler.config.num_train_timesteps,
            (latents.shape[0],),
            device=latents.device,
            generator=generator,
        )
        noisy = self.noise_scheduler.add_noise(latents, noise, steps)
        context, region_probs = self._drop(context, region_probs, generator)
        prediction = self.model_output(noisy, steps, context, region_probs)
        kind = self.noise_scheduler.config.prediction_type
        if kind == "v_prediction":
            target = self.noise_scheduler.get_velocity(latents, noise, steps)
        elif kind == "sample":
            target = latents
        else:
            target = noise
        return F.mse_loss(prediction.float(), target.float())
