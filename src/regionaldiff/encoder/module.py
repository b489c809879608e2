"""Lightning module that pretrains the EEG encoder: masked recovery + classification + regions (+ alignment with an
image embedding), jointly."""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence

import lightning as L
import torch
import torch.nn.functional as F

from regionaldiff.encoder.alignment import ImageEmbeddings, contrastive_loss
from regionaldiff.encoder.base import EEGEncoder
from regionaldiff.regions import coarse_region_target

#: the heads' objectives whose gradients at the shared codes are compared (``pretrain/train_grad_cos_<a>_<b>``)
HEAD_TERMS = ("cls", "region", "align")


class EncoderPretrainModule(L.LightningModule):
    """Joint objective ``w_mae * MAE + w_cls * CE(class) + w_region * CE(coarse region map) + w_align * InfoNCE``.

    A weight of 0 turns its term off; the region term also needs region maps in the batch, the alignment term an
    encoder with an alignment head and the image embeddings of the stimuli (``image_embeddings``, by stimulus id).
    The contrastive temperature starts at ``align_temperature`` and is learned (``logit_scale``) unless
    ``learn_temperature`` is False. ``augmentations`` (modules ``[B, C, T] -> [B, C, T]``) are applied in turn to each
    training batch's EEG.

    Where two head objectives are on, each training step also logs the cosine between their gradients at the codes
    (``pretrain/train_grad_cos_cls_region``, ...): what each head asks of the layers they share. A negative cosine
    means one objective pulls the shared encoder against the other.
    """

    def __init__(
        self,
        model: EEGEncoder,
        lr: float,
        weight_decay: float,
        w_mae: float,
        w_cls: float,
        w_region: float,
        max_epochs: int,
        w_align: float = 0.0,
        align_temperature: float = 0.07,
        image_embeddings: ImageEmbeddings | None = None,
        learn_temperature: bool = True,
        augmentations: Sequence[torch.nn.Module] = (),
    ) -> None:
        super().__init__()
        self.model = model
        self.lr, self.weight_decay, self.max_epochs = lr, weight_decay, max_epochs
        self.w_mae, self.w_cls, self.w_region = w_mae, w_cls, w_region
        self.w_align = w_align if model.align_dim > 0 and image_embeddings is not None else 0.0
        if w_align > 0 and self.w_align == 0:
            raise ValueError(
                "encoder.align needs an encoder with an alignment head and the stimuli's image embeddings."
            )
        self.image_embeddings = image_embeddings
        self.logit_scale = torch.nn.Parameter(
            torch.tensor(math.log(1.0 / align_temperature)), requires_grad=learn_temperature
        )
        self.augmentations = torch.nn.ModuleList(augmentations)

    def _losses(self, batch: dict) -> dict[str, torch.Tensor]:
        eeg = batch["eeg"]
        if self.training:
            for augment in self.augmentations:
                eeg = augment(eeg)
        losses: dict[str, torch.Tensor] = {}
        if self.w_mae > 0:
            losses["mae"] = self.model.masked_reconstruction_loss(eeg)
        codes = self.model.encode(eeg, batch.get("subject"))  # the subject conditioning reads the subject
        out = self.model.heads(codes)
        losses["cls"] = F.cross_entropy(out["class_logits"], batch["label"])
        losses["cls_acc"] = (out["class_logits"].argmax(-1) == batch["label"]).float().mean()
        if "region_logits" in out and "region_map" in batch:
            target = coarse_region_target(batch["region_map"], self.model.num_region_labels, self.model.region_grid)
            losses["region"] = F.cross_entropy(out["region_logits"], target)
            pred = out["region_logits"].argmax(1)
            losses["region_acc"] = (pred == target.argmax(1)).float().mean()
        if self.w_align > 0 and self.image_embeddings is not None:
            images = self.image_embeddings.lookup(batch["image_id"], eeg.device)
            losses["align"] = contrastive_loss(out["embedding"], images, self.logit_scale, batch["image_id"])
        weights = {"mae": self.w_mae, "cls": self.w_cls, "region": self.w_region, "align": self.w_align}
        total: torch.Tensor = sum(w * losses[k] for k, w in weights.items() if w > 0 and k in losses)  # type: ignore[assignment]
        if self.training and torch.is_grad_enabled():
            losses.update(
                gradient_cosines(codes, {k: losses[k] for k in HEAD_TERMS if weights[k] > 0 and k in losses})
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
        groups = [{"params": list(self.model.parameters()), "weight_decay": self.weight_decay}]
        if self.w_align > 0 and self.logit_scale.requires_grad:  # the temperature is not decayed
            groups.append({"params": [self.logit_scale], "weight_decay": 0.0})
        opt = torch.optim.AdamW(groups, lr=self.lr)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, self.max_epochs))
        return {"optimizer": opt, "lr_scheduler": sched}


def gradient_cosines(codes: torch.Tensor, losses: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The cosine between the gradients of each pair of ``losses`` at ``codes`` (the representation their heads
    share), as ``grad_cos_<a>_<b>``; 0 where a loss sends no gradient into the codes (a detached or separate path).
    Only the heads are differentiated again, not the encoder."""
    if len(losses) < 2 or not codes.requires_grad:
        return {}
    grads = {
        name: torch.autograd.grad(loss, codes, retain_graph=True, allow_unused=True)[0]
        for name, loss in losses.items()
    }
    out = {}
    for a, b in itertools.combinations(losses, 2):
        ga, gb = grads[a], grads[b]
        if ga is None or gb is None:
            out[f"grad_cos_{a}_{b}"] = codes.new_zeros(())
        else:
            out[f"grad_cos_{a}_{b}"] = F.cosine_similarity(ga.flatten(), gb.flatten(), dim=0).detach()
    return out
