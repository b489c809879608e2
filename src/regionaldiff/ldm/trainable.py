"""Which weights of the LDM the finetune step trains (``ldm.train``), and the speed/memory options of training.

Only trained parameters keep ``requires_grad``: autograd computes no gradient for a frozen weight, and the
optimiser sees only what it steps (DreamDiffusion's code steps ~45M UNet weights but back-propagates through all
~860M; we do not).

=================  ===========================================================================================
``unet``           trained UNet parameters
=================  ===========================================================================================
``frozen``         none
``cross_attention`` DreamDiffusion's set: ``attn2`` (the cross-attention to the EEG context) and ``norm2`` of
                   every transformer block
``lora``           LoRA adapters (peft) on ``ldm.train.lora.target_modules``; the base weights stay frozen
``full``           all
=================  ===========================================================================================

The EEG conditioner (and the learned null context and CLIP projection, when configured) is always trained; the
ControlNet when ``ldm.train.controlnet``.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from regionaldiff.config import LoraConfig, TrainConfig, UNetTraining

CROSS_ATTENTION_KEYS = ("attn2", "norm2")


def add_lora(unet: nn.Module, lora: LoraConfig) -> None:
    """Add LoRA adapters (peft, through diffusers' adapter API) to ``unet``; only they are left trainable.

    Raises
    ------
    ImportError
        When peft is not installed.
    """
    from peft import LoraConfig as PeftLoraConfig

    config = PeftLoraConfig(
        r=int(lora.rank),
        lora_alpha=int(lora.alpha),
        lora_dropout=float(lora.dropout),
        target_modules=list(lora.target_modules),
        init_lora_weights="gaussian",
    )
    unet.add_adapter(config)  # type: ignore[operator]


def set_trainable(unet: nn.Module, controlnet: nn.Module | None, train: TrainConfig) -> None:
    """Set ``requires_grad`` of the UNet and ControlNet by ``ldm.train`` (LoRA adapters must be added first)."""
    mode = train.unet
    if mode == UNetTraining.full:
        unet.requires_grad_(True)
    elif mode == UNetTraining.frozen:
        unet.requires_grad_(False)
    elif mode == UNetTraining.cross_attention:
        for name, param in unet.named_parameters():
            param.requires_grad_(any(f".{key}." in f".{name}" for key in CROSS_ATTENTION_KEYS))
    elif mode == UNetTraining.lora:
        for name, param in unet.named_parameters():
            param.requires_grad_("lora_" in name)
    if controlnet is not None:
        controlnet.requires_grad_(bool(train.controlnet))


def count_parameters(modules: dict[str, nn.Module | None]) -> dict[str, int]:
    """``params/<module>_trained`` and ``params/<module>_total`` for each module (absent ones left out)."""
    counts: dict[str, int] = {}
    for name, module in modules.items():
        if module is None:
            continue
        params = list(module.parameters())
        counts[f"params/{name}_total"] = sum(p.numel() for p in params)
        counts[f"params/{name}_trained"] = sum(p.numel() for p in params if p.requires_grad)
    return counts


def apply_speed_options(modules: Iterable[nn.Module], train: TrainConfig) -> None:
    """Gradient checkpointing, channels-last memory and ``torch.compile`` of the forward passes, as configured.

    Attention runs through PyTorch's scaled-dot-product attention (diffusers' default processor) in any case.
    """
    for module in modules:
        enable_checkpointing = getattr(module, "enable_gradient_checkpointing", None)
        if train.gradient_checkpointing and callable(enable_checkpointing):
            enable_checkpointing()
        if train.channels_last:
            module.to(memory_format=torch.channels_last)
        if train.compile:
            module.compile()  # in place: the state dict keeps its keys
