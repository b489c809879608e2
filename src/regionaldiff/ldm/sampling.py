"""The denoising loop over a :class:`~regionaldiff.ldm.model.RegionalLDM`, with classifier-free guidance, and the
samplers (diffusers schedulers) it can use: DDIM, DPM-Solver++ (multistep), UniPC, Euler and PLMS (PNDM).

The one sampling code path: :class:`regionaldiff.reconstruction.RegionalDiffPipeline` calls it, and the
pipeline's ``generate`` step calls that pipeline.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    PNDMScheduler,
    UniPCMultistepScheduler,
)

from regionaldiff.config import Sampler
from regionaldiff.ldm.model import RegionalLDM


def make_sampler(
    ldm: RegionalLDM,
    name: Sampler | str,
    num_steps: int,
    device: torch.device,
    clip_sample: bool = False,
    clip_sample_range: float = 1.0,
) -> Any:
    """A sampler on the LDM's training schedule (its betas and prediction type), set to ``num_steps`` steps.

    ``clip_sample`` (DDIM only) clips the predicted clean latents to ``[-range, range]`` at every step.
    """
    name = Sampler(name)
    config = ldm.noise_scheduler.config
    if name == Sampler.ddim:
        sampler = DDIMScheduler.from_config(config, clip_sample=clip_sample, clip_sample_range=clip_sample_range)
    elif clip_sample:
        raise ValueError(f"clip_sample is a DDIM option; the {name.value} sampler has no such step.")
    elif name == Sampler.dpmpp_2m:
        sampler = DPMSolverMultistepScheduler.from_config(config, algorithm_type="dpmsolver++", solver_order=2)
    elif name == Sampler.unipc:
        sampler = UniPCMultistepScheduler.from_config(config)
    elif name == Sampler.euler:
        sampler = EulerDiscreteScheduler.from_config(config)
    else:  # PLMS, as in DreamDiffusion (LDM's PLMS = diffusers' PNDM without the Runge-Kutta warm-up)
        sampler = PNDMScheduler.from_config(config, skip_prk_steps=True)
    sampler.set_timesteps(num_steps, device=device)
    return sampler


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
    sampler: Sampler | str = Sampler.ddim,
    controlnet_scale: float = 1.0,
) -> torch.Tensor:
    """Sample clean latents from initial noise ``latents`` (already scaled by the sampler's ``init_noise_sigma``).

    Parameters
    ----------
    ldm : RegionalLDM
        The trained denoiser (its ``noise_scheduler`` config sets the noise schedule and prediction type).
    context : torch.Tensor
        Cross-attention context ``[B, n_tokens, cross_attention_dim]``.
    region_probs : torch.Tensor or None
        Region-label probabilities ``[B, K + 1, g, g]`` for a regional model, else None.
    guidance_scale : float
        Classifier-free guidance weight (1.0: no guidance, one UNet pass per step); the null condition is the
        LDM's unconditional context (learned, or zeros) and the empty map, as dropped during training.
    eta : float
        DDIM's noise weight (0: deterministic); ignored by the other samplers.
    clip_sample, clip_sample_range : bool, float
        Clip the predicted clean latents to ``[-range, range]`` at every step (DDIM; latents that are images).
    sampler : Sampler or str
        ``ddim``, ``dpmpp_2m``, ``unipc``, ``euler`` or ``pndm``.
    controlnet_scale : float
        Weight of a regional model's ControlNet residuals (1: as trained).
    """
    solver = make_sampler(ldm, sampler, num_steps, context.device, clip_sample, clip_sample_range)
    step_kwargs: dict[str, Any] = {}
    accepted = inspect.signature(solver.step).parameters
    if "eta" in accepted:
        step_kwargs["eta"] = eta
    if "generator" in accepted:
        step_kwargs["generator"] = generator
    guided = guidance_scale != 1.0
    if guided:
        context_in = torch.cat([ldm.unconditional_context(context), context])
        probs_in = None if region_probs is None else torch.cat([torch.zeros_like(region_probs), region_probs])
    else:
        context_in, probs_in = context, region_probs
    for t in solver.timesteps:
        model_in = torch.cat([latents, latents]) if guided else latents
        model_in = solver.scale_model_input(model_in, t)
        steps = t.expand(model_in.shape[0]).to(context.device)
        pred = ldm.model_output(model_in, steps, context_in, probs_in, controlnet_scale)
        if guided:
            uncond, cond = pred.chunk(2)
            pred = uncond + guidance_scale * (cond - uncond)
        latents = solver.step(pred, t, latents, **step_kwargs).prev_sample
    return latents
