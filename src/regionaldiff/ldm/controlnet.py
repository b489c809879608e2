"""The region-map branch: a diffusers ``ControlNetModel`` made from the UNet, as a component (``ldm.controlnet``)."""

from __future__ import annotations

from collections.abc import Sequence

from diffusers import ControlNetModel, UNet2DConditionModel

from regionaldiff.errors import ConfigError


def controlnet_from_unet(
    unet: UNet2DConditionModel,
    conditioning_channels: int,
    image_size: int,
    latent_size: int,
    conditioning_embedding_out_channels: Sequence[int],
    init_from_unet: bool = True,
) -> ControlNetModel:
    """A ControlNet copying the UNet's encoder (its weights too with ``init_from_unet``), whose condition
    embedding takes the ``conditioning_channels``-channel region map at ``image_size`` down to the latents.

    ``conditioning_embedding_out_channels`` has one entry per halving between the map and the latents, plus one.
    """
    emb = tuple(int(c) for c in conditioning_embedding_out_channels)
    if image_size != latent_size * 2 ** (len(emb) - 1):
        raise ConfigError(
            f"ldm.controlnet.conditioning_embedding_out_channels has {len(emb)} entries, which downsamples the "
            f"{image_size}px region map by {2 ** (len(emb) - 1)}; the latents are {latent_size}px. Use "
            f"{(image_size // latent_size).bit_length()} entries."
        )
    return ControlNetModel.from_unet(
        unet,
        conditioning_embedding_out_channels=emb,
        load_weights_from_unet=bool(init_from_unet),
        conditioning_channels=conditioning_channels,
    )
