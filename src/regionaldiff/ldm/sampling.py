"""The denoising loop: DDIM with classifier-free guidance over a :class:`~regionaldiff.ldm.model.RegionalLDM`.

The one sampling code path: :class:`regionaldiff.reconstruction.RegionalDiffPipeline` calls it, and the
pipeline's ``generate`` step calls that pipeline.
"""

from __future__ import annotations

import torch
from diffusers import DDIMScheduler

from regionaldiff.ldm.model import RegionalLDM


@torch.no_grad()
def denoise(
    ldm: RegionalLDM,
    context: torch.Tensor,
    region_probs: torch.Tensor | None,
    latents: torch.Tensor,
    num_steps: int = 25,
    guidance_scale: float = 1.0,
    generator: torch.Generator | None = None,
    eta: float = 0.0,
    clip_sample: bool = False,
    clip_sample_range: float = 1.0,
) -> torch.Tensor:
    """DDIM sampling from initial noise ``latents`` (already scaled by the sampler's ``init_noise_sigma``: see
    :func:`init_noise_sigma`); returns the clean latents, same shape.

    Parameters
    ----------
    ldm : RegionalLDM
        The trained denoiser (its ``scheduler`` config sets the noise schedule and prediction type).
    context : torch.Tensor
        Cross-attention context ``[B, n_tokens, cross_attention_dim]``.
    region_probs : torch.Tensor or None
        Region-label probabilities ``[B, K + 1, g, g]`` for a regional model, else None.
    guidance_scale : float
        Classifier-free guidance weight (1.0: no guidance, one UNet pass per step); the null condition is the
        zero context and an all-zero map, as dropped during training.
    clip_sample, clip_sample_range : bool, float
        Clip the predicted clean latents to ``[-range, range]`` at every step (latents that are images in [-1, 1]).
    """
    sampler = ddim_sampler(ldm, num_steps, context.device, clip_sample, clip_sample_range)
    guided = guidance_scale != 1.0
    if guided:
        context_in = torch.cat([torch.zeros_like(context), context])
        probs_in = None if region_probs is None else torch.cat([torch.zeros_like(region_probs), region_probs])
    else:
        context_in, probs_in = context, region_probs
    for t in sampler.timesteps:
        model_in = torch.cat([latents, latents]) if guided else latents
        steps = t.expand(model_in.shape[0]).to(context.device)
        pred = ldm.model_output(sampler.scale_model_input(model_in, t), steps, context_in, probs_in)
        if guided:
            uncond, cond = pred.chunk(2)
            pred = uncond + guidance_scale * (cond - uncond)
        latents = sampler.step(pred, t, latents, eta=eta, generator=generator).prev_sample
    return latents


def ddim_sampler(
    ldm: RegionalLDM, num_steps: int, device: torch.device, clip_sample: bool = False, clip_sample_range: float = 1.0
) -> DDIMScheduler:
    """A DDIM scheduler on the LDM's training schedule, set to ``num_steps`` steps."""
    sampler = DDIMScheduler.from_config(
        ldm.scheduler.config, clip_sample=clip_sample, clip_sample_range=clip_sample_range
    )
    sampler.set_timesteps(num_steps, device=device)
    return sampler
