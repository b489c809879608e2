"""Lightning module that fine-tunes the LDM on EEG codes from the frozen, pretrained encoder."""

from __future__ import annotations

import lightning as L
import torch

from regionaldiff.config import TrainMaps
from regionaldiff.encoder.base import EEGEncoder
from regionaldiff.ldm.clip_alignment import ClipImageEmbedder, ContextToClip, clip_alignment_loss
from regionaldiff.ldm.latent import LatentCodec
from regionaldiff.ldm.latent_cache import LatentCache, resize_images
from regionaldiff.ldm.model import RegionalLDM
from regionaldiff.regions import coarse_region_target


class LDMFinetuneModule(L.LightningModule):
    """Denoising loss of :class:`RegionalLDM`; the EEG encoder is frozen (its codes are the condition).

    During training the regional variant is conditioned on the reference region maps, coarsened to the
    encoder's region grid so that they have the same form as the maps the encoder predicts at test time
    (``train_maps: reference``), on the encoder's own predictions (``train_maps: predicted``), or on either, drawn
    per sample with equal odds (``train_maps: mixed``: the ControlNet sees both the EEG-predicted maps it gets at test
    time and sharp true maps). Validation uses the test-time condition (predicted maps) unless ``reference``.

    Latents come from the latent cache when there is one (a sample of the cached VAE posterior), else from the codec
    (images resized to ``image_size``, the LDM's side). With ``clip`` and ``clip_weight > 0`` the loss adds
    DreamDiffusion's CLIP alignment, ``clip_weight * (1 - cos(head(context), CLIP image embedding))``.
    """

    def __init__(
        self,
        encoder: EEGEncoder,
        ldm: RegionalLDM,
        codec: LatentCodec,
        lr: float,
        weight_decay: float,
        train_maps: str,
        latent_cache: LatentCache | None = None,
        clip: ClipImageEmbedder | None = None,
        clip_weight: float = 0.0,
        fused_adamw: bool = False,
    ) -> None:
        super().__init__()
        allowed = [m.value for m in TrainMaps]
        if train_maps not in allowed:
            names = ", ".join(repr(a) for a in allowed[:-1]) + f" or {allowed[-1]!r}"
            raise ValueError(f"ldm.train_maps must be {names}; got {train_maps!r}.")
        self.encoder = encoder.requires_grad_(False).eval()
        self.ldm, self.codec = ldm, codec
        self.lr, self.weight_decay, self.train_maps = lr, weight_decay, train_maps
        self.latent_cache = latent_cache
        self.clip_weight = float(clip_weight)
        self.clip = clip if self.clip_weight > 0 else None
        self.clip_head: ContextToClip | None = None
        if self.clip_weight > 0:
            if clip is None and (latent_cache is None or latent_cache.clip is None):
                raise ValueError("ldm.clip_loss.weight > 0 needs the CLIP model or cached CLIP embeddings.")
            dim = clip.projection_dim if clip is not None else int(latent_cache.clip.shape[1])  # type: ignore[union-attr]
            cross_dim = int(ldm.unet.config["cross_attention_dim"])
            self.clip_head = ContextToClip(cross_dim, dim)
        self.fused_adamw = fused_adamw

    def train(self, mode: bool = True):
        super().train(mode)
        self.encoder.eval()
        if self.clip is not None:
            self.clip.eval()
        return self

    def conditions(self, batch: dict, maps: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Cross-attention context and region probabilities ``[B, L, g, g]`` (``L`` region labels; None for the global
        variant)."""
        with torch.no_grad():
            out = self.encoder(batch["eeg"], batch.get("subject"))
        assert self.ldm.conditioner is not None  # the seed's recipe (the frozen recipe trains nothing on EEG)
        context = self.ldm.conditioner(out["codes"], out["class_logits"])
        if not self.ldm.uses_regions:
            return context, None
        if maps == "predicted":
            return context, out["region_logits"].softmax(dim=1)
        if "region_map" not in batch:
            raise ValueError(
                f"The regional LDM trains on reference region maps (ldm.train_maps={maps}), but the batch has none: set a regionmap."
            )
        reference = coarse_region_target(batch["region_map"], self.encoder.num_region_labels, self.encoder.region_grid)
        if maps == "reference":
            return context, reference
        use_reference = torch.rand(len(reference), device=reference.device) < 0.5
        return context, torch.where(use_reference[:, None, None, None], reference, out["region_logits"].softmax(dim=1))

    def latents(self, batch: dict, generator: torch.Generator | None = None) -> torch.Tensor:
        """The training latents of the batch's images: a sample of the cached posterior, or from the codec."""
        if self.latent_cache is not None:
            mean, logvar = self.latent_cache.posterior(batch["image_id"], batch["image"].device)
            return self.codec.sample(mean, logvar, generator=generator)
        images = resize_images(batch["image"], self.ldm.image_size)
        return self.codec.training_latents(images, generator=generator)

    def clip_loss(self, batch: dict, context: torch.Tensor) -> torch.Tensor | None:
        """The CLIP alignment term (None when off): cached embeddings, else CLIP on the batch's images."""
        if self.clip_head is None:
            return None
        if self.latent_cache is not None and self.latent_cache.clip is not None:
            target = self.latent_cache.clip_embeds(batch["image_id"], context.device)
        else:
            assert self.clip is not None
            target = self.clip(batch["image"])
        return clip_alignment_loss(self.clip_head(context), target)

    def _loss(self, batch: dict, maps: str, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        context, probs = self.conditions(batch, maps)
        latents = self.latents(batch, generator)
        losses = {"denoise": self.ldm.training_loss(latents, context, probs, generator=generator)}
        clip = self.clip_loss(batch, context)
        if clip is not None:
            losses["clip"] = clip
        losses["loss"] = losses["denoise"] + self.clip_weight * clip if clip is not None else losses["denoise"]
        return losses

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        losses = self._loss(batch, self.train_maps)
        n = len(batch["eeg"])
        self.log("finetune/train_loss", losses["loss"], on_step=False, on_epoch=True, prog_bar=True, batch_size=n)
        if "clip" in losses:
            self.log("finetune/train_clip_loss", losses["clip"], on_step=False, on_epoch=True, batch_size=n)
        return losses["loss"]

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        gen = torch.Generator(device=batch["eeg"].device).manual_seed(batch_idx)
        losses = self._loss(batch, "reference" if self.train_maps == "reference" else "predicted", gen)
        self.log("finetune/val_loss", losses["loss"], on_step=False, on_epoch=True, batch_size=len(batch["eeg"]))

    def configure_optimizers(self):
        params = [p for p in self.ldm.parameters() if p.requires_grad]
        if self.clip_head is not None:
            params += list(self.clip_head.parameters())
        fused = self.fused_adamw and torch.cuda.is_available()
        return torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay, fused=fused or None)
