"""The denoising UNet (diffusers' ``UNet2DConditionModel``, the Stable Diffusion 1.5 class) as a component.

Two ``_target_`` factories for ``ldm.unet``: :func:`unet_from_config` builds a new UNet from its keyword arguments
(the tiny CPU model), :func:`unet_from_pretrained` reads one from a local diffusers folder (SD-1.5). Both get the
latent channels and the latent side from the latent codec at build time.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from diffusers import UNet2DConditionModel

from regionaldiff.errors import BadInputError, MissingFileError
from regionaldiff.requirements import RequiredPath, diffusers_part

TUPLE_KEYS = ("down_block_types", "up_block_types", "block_out_channels")


def unet_from_config(
    in_channels: int, latent_size: int, cross_attention_dim: int, **config: Any
) -> UNet2DConditionModel:
    """A new UNet from ``UNet2DConditionModel`` keyword arguments (``config``), with ``in_channels`` and
    ``out_channels`` set to the latent space's channels and ``sample_size`` to its side."""
    kwargs = dict(config)
    for key in TUPLE_KEYS:
        if key in kwargs:
            kwargs[key] = tuple(kwargs[key])
    kwargs.update(
        in_channels=in_channels,
        out_channels=in_channels,
        cross_attention_dim=cross_attention_dim,
        sample_size=latent_size,
    )
    return UNet2DConditionModel(**kwargs)


def unet_from_pretrained(
    pretrained: str,
    in_channels: int,
    latent_size: int,
    subfolder: str | None = "unet",
    cross_attention_dim: int | None = None,
) -> UNet2DConditionModel:
    """A UNet read from a local diffusers folder (``pretrained``, with the UNet in ``subfolder``); with
    ``cross_attention_dim`` given, the folder's UNet must have that context width (768 for SD-1.5).

    Raises
    ------
    FileNotFoundError
        When the folder has no ``config.json``.
    ValueError
        When the UNet takes another number of latent channels than the latent space gives, or has another
        context width than ``cross_attention_dim``.
    """
    root = Path(str(pretrained))
    folder = root / subfolder if subfolder else root
    if not (folder / "config.json").is_file():
        raise MissingFileError(
            f"No UNet at {folder} (expected config.json and weights). Put Stable Diffusion 1.5 under "
            "paths.weights_dir or set ldm.unet.pretrained to its local folder (docs/setup.md)."
        )
    config = json.loads((folder / "config.json").read_text())
    if int(config.get("in_channels", -1)) != in_channels:
        raise BadInputError(
            f"UNet at {folder} takes {config.get('in_channels')} latent channels, but the VAE (ldm.latent) gives "
            f"{in_channels}: the UNet and the VAE must come from the same Stable Diffusion folder."
        )
    if cross_attention_dim is not None and int(config.get("cross_attention_dim", -1)) != cross_attention_dim:
        raise BadInputError(
            f"UNet at {folder} has cross_attention_dim={config.get('cross_attention_dim')}; ldm.unet expects "
            f"{cross_attention_dim} (Stable Diffusion 1.5). Point ldm.unet.pretrained at an SD-1.5 folder or set "
            f"ldm.unet.cross_attention_dim={config.get('cross_attention_dim')}."
        )
    # low_cpu_mem_usage (with accelerate): no second full fp32 copy in CPU memory while loading
    try:
        return UNet2DConditionModel.from_pretrained(str(root), subfolder=subfolder, low_cpu_mem_usage=True)
    except (OSError, ValueError, RuntimeError) as err:  # missing/corrupt weights file, config of another model
        raise BadInputError(
            f"The UNet at {folder} (ldm.unet.pretrained) could not be loaded: {type(err).__name__}: "
            f"{str(err)[:300]}. Download Stable Diffusion 1.5 again (docs/setup.md)."
        ) from err


def _unet_required_files(node: Mapping[str, Any], key: str) -> list[RequiredPath]:
    """What :func:`unet_from_pretrained` reads: the UNet folder (config and weights)."""
    return [diffusers_part("SD-1.5 UNet", "UNet", node, key, default_subfolder="unet")]


unet_from_pretrained.required_files = _unet_required_files  # type: ignore[attr-defined]
