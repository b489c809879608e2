"""Lightning module that pretrains the EEG encoder: masked recovery + classification + regions, jointly."""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F

from regionaldiff.encoder.mae import EEGMaskedAutoencoder, coarse_region_target


class EncoderPretrainModule(L.LightningModule):
    """Joint objective ``w_mae * MAE + w_cls * CE(class) + w_region * CE(coarse region map)``.

    A weight of 0 turns its term off; the region term also needs region maps in the batch.
    """

    def __init__(
        self,
        model: EEGMaskedAutoencoder,
        lr: float,
        weight_decay: float,
        w_mae: float,
        w_cls: float,
        w_region: float,
        max_epochs: int,
    ) -> None:
        super().__init__()
        self.model = model
        self.lr, self.weight_decay, self.max_epochs = lr, weight_decay, max_epochs
        self.w_mae, self.w_cls, self.w_region = w_mae, w_cls, w_region

    def _losses(self, batch: dict) -> dict[str, torch.Tensor]:
        eeg = batch["eeg"]
        losses: dict[str, torch.Tensor] = {}
        if self.w_mae > 0:
            losses["mae"] = self.model.masked_reconstruction_loss(eeg)
        out = self.model(eeg)
        losses["cls"] = F.cross_entropy(out["class_logits"], batch["label"])
        losses["cls_acc"] = (out["class_logits"].argmax(-1) == batch["label"]).float().mean()
        if "region_logits" in out and "region_map" in batch:
            target = coarse_region_target(batch["region_map"], self.model.num_classes + 1, self.model.region_grid)
            losses["region"] = F.cross_entropy(out["region_logits"], target)
            pred = out["region_logits"].argmax(1)
            losses["region_acc"] = (pred == target.argmax(1)).float().mean()
        total: torch.Tensor = sum(  # type: ignore[assignment]
            w * losses[k]
            for k, w in (("mae", self.w_mae), ("cls", self.w_cls), ("region", self.w_region))
            if w > 0 and k in losses
        )
        losses["loss"] = total
        return losses

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        losses = self._losses(batch)
        self.log_dict(
            {f"pretrain/train_{k}": v for k, v in losses.items()},
            on_step=False,
            on_epoch=True,
            batch_size=len(batch["label"]),
        )
        return losses["loss"]

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        losses = self._losses(batch)
        self.log_dict(
            {f"pretrain/val_{k}": v for k, v in losses.items()},
            on_step=False,
            on_epoch=True,
            batch_size=len(batch["label"]),
        )

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.model.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, self.max_epochs))
        return {"optimizer": opt, "lr_scheduler": sched}
