"""Step ``pretrain``: the EEG encoder (masked recovery + classification + region map), or its artifact."""

from __future__ import annotations

import logging

import lightning as L
import torch

from regionaldiff.components import build_encoder
from regionaldiff.config import plain
from regionaldiff.encoder.mae import EEGMaskedAutoencoder
from regionaldiff.encoder.module import EncoderPretrainModule
from regionaldiff.steps.context import PipelineContext
from regionaldiff.steps.training import final_metrics, make_trainer, resume_path

log = logging.getLogger(__name__)

ENCODER_FILE = "encoder.pt"


def new_encoder(ctx: PipelineContext) -> EEGMaskedAutoencoder:
    """The encoder from ``encoder.net`` for this dataset (no region head when the dataset has no maps)."""
    dm = ctx.datamodule
    return build_encoder(
        ctx.typed.encoder.net,
        n_chans=dm.n_chans,
        n_times=dm.n_times,
        sfreq=dm.sfreq,
        num_classes=dm.num_classes,
        with_regions=dm.has_region_maps,
    )


def pretrain(ctx: PipelineContext, train: bool = True) -> None:
    """Pretrain the EEG encoder, or reuse the artifact of the same data, encoder config and seed."""
    e = ctx.typed.encoder
    ctx.keys["pretrain"] = {"prepare": ctx.keys["prepare"], "encoder": plain(ctx.cfg.encoder), "seed": ctx.seed}
    slot = ctx.slots["pretrain"] = ctx.store.slot("pretrain", ctx.keys["pretrain"])
    ctx.tracker.set_tags({"artifact.encoder": str(slot.path)})
    with slot.lock():
        if not slot.done:
            if not train:
                raise RuntimeError(
                    f"No pretrained encoder for this config at {slot.path}: add 'pretrain' to pipeline.steps."
                )
            L.seed_everything(ctx.seed, workers=True)
            model = new_encoder(ctx)
            module = EncoderPretrainModule(model, e.lr, e.weight_decay, e.w_mae, e.w_cls, e.w_region, e.max_epochs)
            trainer = make_trainer(ctx, slot, e.max_epochs)
            dm = ctx.datamodule
            trainer.fit(
                module,
                train_dataloaders=dm.train_dataloader(),
                val_dataloaders=dm.val_dataloader(),
                ckpt_path=resume_path(slot),
            )
            metrics = final_metrics(trainer)
            if e.calibrate_background and model.region_grid > 0 and dm.has_region_maps and e.w_region > 0:
                metrics.update(calibrate(ctx, model))
            torch.save({"state_dict": model.state_dict(), "region_grid": model.region_grid}, slot.path / ENCODER_FILE)
            slot.mark_done(metrics)
            log.info("pretrain: encoder saved to %s", slot.path / ENCODER_FILE)
        else:
            log.info("pretrain: reusing encoder %s", slot.path)
    ctx.tracker.set_tags({"checkpoint.encoder": str(slot.path / ENCODER_FILE)})


def calibrate(ctx: PipelineContext, model: EEGMaskedAutoencoder) -> dict[str, float]:
    """Fit the region head's background bias on the validation split; return (and log) what it changed."""
    from regionaldiff.encoder.calibration import fit_background_bias

    model.to(ctx.device)
    fit = fit_background_bias(model, ctx.datamodule.val_dataloader(), class_fused=ctx.typed.encoder.w_cls > 0)
    model.cpu()
    log.info(
        "pretrain: region background bias %+.2f fitted on %d validation trials: map mIoU %.3f -> %.3f",
        fit.bias,
        fit.n_trials,
        fit.miou_before,
        fit.miou_after,
    )
    metrics = {
        "pretrain/region_background_bias": fit.bias,
        "pretrain/val_region_miou_uncalibrated": fit.miou_before,
        "pretrain/val_region_miou": fit.miou_after,
    }
    ctx.tracker.log_metrics(metrics)
    return metrics


def load_encoder(ctx: PipelineContext) -> EEGMaskedAutoencoder:
    """The pretrained encoder of this run, in eval mode."""
    saved = torch.load(ctx.slots["pretrain"].path / ENCODER_FILE, map_location="cpu", weights_only=True)
    model = new_encoder(ctx)
    model.load_state_dict(saved["state_dict"])
    return model.eval()
