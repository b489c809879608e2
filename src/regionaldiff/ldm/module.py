"""Lightning module that fine-tunes the LDM on EEG codes from the frozen, pretrained encoder."""

from __future__ import annotations

import lightning as L
import torch

from regionaldiff.config import TrainMaps
from regionaldiff.encoder.mae import EEGMaskedAutoencoder, coarse_region_target
from regionaldiff.ldm.latent import LatentCodec
from regionaldiff.ldm.model import RegionalLDM


class LDMFinetuneModule(L.LightningModule):
    """Denoising loss of :class:`RegionalLDM`; the EEG encoder is frozen (its codes are the condition).

    During training the regional variant is conditioned on the reference region maps, coarsened to the
    encoder's region grid so that they have the same form as the maps the encoder predicts at test time
    (``train_maps: reference``), on the encoder's own predictions (``train_maps: predicted``), or on either, drawn
    per sample with equal odds (``train_maps: mixed``: the ControlNet sees both the EEG-predicted maps it gets at test
    time and sharp true maps). Validation uses the test-time condition (predicted maps) unless ``reference``.
    """

    def __init__(
        self,
        encoder: EEGMaskedAutoencoder,
        ldm: RegionalLDM,
        codec: LatentCodec,
        lr: float,
        weight_decay: float,
        train_maps: str,
    ) -> None:
        super().__init__()
        allowed = [m.value for m in TrainMaps]
        if train_maps not in allowed:
            names = ", ".join(repr(a) for a in allowed[:-1]) + f" or {allowed[-1]!r}"
            raise ValueError(f"ldm.train_maps must be {names}; got {train_maps!r}.")
        self.encoder = encoder.requires_grad_(False).eval()
        self.ldm, self.codec = ldm, codec
        self.lr, self.weight_decay, self.train_maps = lr, weight_decay, train_maps

    def train(self, mode: bool = True):
        super().train(mode)
        self.encoder.eval()
        return self

    def conditions(self, batch: dict, maps: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Cross-attention context and region probabilities ``[B, K+1, g, g]`` (None for the global variant)."""
        with torch.no_grad():
            out = self.encoder(batch["eeg"])
        context = self.ldm.conditioner(out["codes"], out["class_logits"])
        if not self.ldm.uses_regions:
            return context, None
        if maps == "predicted":
            return context, out["region_logits"].softmax(dim=1)
        if "region_map" not in batch:
            raise ValueError(
                f"The regional LDM trains on reference region maps (ldm.train_maps={maps}), but the batch has none: set a maskmap."
            )
        reference = coarse_region_target(batch["region_map"], self.encoder.num_classes + 1, self.encoder.region_grid)
        if maps == "reference":
            return context, reference
        use_reference = torch.rand(len(reference), device=reference.device) < 0.5
        return context, torch.where(use_reference[:, None, None, None], reference, out["region_logits"].softmax(dim=1))

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        context, probs = self.conditions(batch, self.train_maps)
        latents = self.codec.encode(batch["image"])
        loss = self.ldm.training_loss(latents, context, probs)
        self.log("finetune/train_loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(latents))
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        context, probs = self.conditions(batch, "reference" if self.train_maps == "reference" else "predicted")
        latents = self.codec.encode(batch["image"])
        gen = torch.Generator(device=latents.device).manual_seed(batch_idx)
        loss = self.ldm.training_loss(latents, context, probs, generator=gen)
        self.log("finetune/val_loss", loss, on_step=False, on_epoch=True, batch_size=len(latents))

    def configure_optimizers(self):
        params = [p for p in self.ldm.parameters() if p.requires_grad]
        return torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)
