"""Stable Diffusion 1.5's architecture as configs, and random-weight folders in its layout.

``SD15_UNET`` and ``SD15_VAE`` are the ``config.json`` values of SD-1.5's UNet and VAE (the shapes that matter:
blocks, widths, layers, heads, context width). :func:`save_sd15_layout` writes a folder with SD-1.5's layout
(``model_index.json``, ``unet/``, ``vae/``, ``scheduler/``) through diffusers' ``save_pretrained``, at full size or
narrowed, with random weights: tests and CPU benchmarks load it through the same code path as the real weights
(``ldm=sd15_* paths.weights_dir=<folder>``), and a dry run needs no download.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SD15_UNET: dict[str, Any] = {
    "act_fn": "silu",
    "attention_head_dim": 8,
    "block_out_channels": [320, 640, 1280, 1280],
    "center_input_sample": False,
    "cross_attention_dim": 768,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "out_channels": 4,
    "sample_size": 64,
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
}

SD15_VAE: dict[str, Any] = {
    "act_fn": "silu",
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "in_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "out_channels": 3,
    "sample_size": 512,
    "scaling_factor": 0.18215,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
}

SD15_SCHEDULER: dict[str, Any] = {
    "_class_name": "PNDMScheduler",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
    "clip_sample": False,
}

#: parameters of SD-1.5's UNet (a check that SD15_UNET is the real architecture)
SD15_UNET_PARAMETERS = 859_520_964


def unet_config(width: float = 1.0, cross_attention_dim: int | None = None) -> dict[str, Any]:
    """SD-1.5's UNet config with every channel count scaled by ``width`` (1.0: the real one)."""
    config = dict(SD15_UNET)
    if width != 1.0:  # multiples of 8: divisible by the 8 attention heads and 8 norm groups
        config["block_out_channels"] = [max(8, int(round(c * width / 8)) * 8) for c in SD15_UNET["block_out_channels"]]
        config["norm_num_groups"] = 8
    if cross_attention_dim is not None:
        config["cross_attention_dim"] = cross_attention_dim
    return config


def vae_config(width: float = 1.0) -> dict[str, Any]:
    """SD-1.5's VAE config with every channel count scaled by ``width`` (1.0: the real one)."""
    config = dict(SD15_VAE)
    if width != 1.0:  # multiples of 8: divisible by the 8 attention heads and 8 norm groups
        config["block_out_channels"] = [max(8, int(round(c * width / 8)) * 8) for c in SD15_VAE["block_out_channels"]]
        config["norm_num_groups"] = 8
    return config


def save_sd15_layout(
    folder: str | Path,
    width: float = 1.0,
    cross_attention_dim: int | None = None,
    layers_per_block: int | None = None,
    seed: int = 0,
) -> Path:
    """Write a random-weight model in SD-1.5's folder layout (``unet/``, ``vae/``, ``scheduler/``,
    ``model_index.json``) with ``save_pretrained``; ``width`` < 1 narrows every block (a CPU-sized stand-in)."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel

    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    unet_kwargs = unet_config(width, cross_attention_dim)
    vae_kwargs = vae_config(width)
    if layers_per_block is not None:
        unet_kwargs["layers_per_block"] = vae_kwargs["layers_per_block"] = layers_per_block
    UNet2DConditionModel(**unet_kwargs).save_pretrained(root / "unet")
    AutoencoderKL(**vae_kwargs).save_pretrained(root / "vae")
    (root / "scheduler").mkdir(exist_ok=True)
    (root / "scheduler" / "scheduler_config.json").write_text(json.dumps(SD15_SCHEDULER, indent=2))
    index = {
        "_class_name": "StableDiffusionPipeline",
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
        "scheduler": ["diffusers", "PNDMScheduler"],
    }
    (root / "model_index.json").write_text(json.dumps(index, indent=2))
    return root


def save_text_encoder_layout(folder: str | Path, hidden_size: int = 768, seed: int = 0) -> Path:
    """Write a random CLIP text encoder and a tokenizer of letters in SD-1.5's layout (``text_encoder/``,
    ``tokenizer/``, 77 tokens): what encodes the empty prompt for IP-Adapter (``ldm/adapter=sd15``), at test size."""
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    root = Path(folder)
    tokenizer_dir = root / "tokenizer"
    tokenizer_dir.mkdir(parents=True, exist_ok=True)
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for code in range(ord("a"), ord("z") + 1):
        for token in (chr(code), chr(code) + "</w>"):
            vocab[token] = len(vocab)
    (tokenizer_dir / "vocab.json").write_text(json.dumps(vocab))
    (tokenizer_dir / "merges.txt").write_text("#version: 0.2\n")
    CLIPTokenizer(
        str(tokenizer_dir / "vocab.json"), str(tokenizer_dir / "merges.txt"), model_max_length=77
    ).save_pretrained(tokenizer_dir)
    torch.manual_seed(seed)
    config = CLIPTextConfig(
        vocab_size=len(vocab),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=1,
        num_attention_heads=4,
        max_position_embeddings=77,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
    )
    CLIPTextModel(config).save_pretrained(root / "text_encoder")
    return root
