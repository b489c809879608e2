"""Step ``pretrain``: the EEG encoder (masked recovery + classification + region map, and with ``encoder/align`` an
embedding aligned to an image embedding), or its artifact."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import lightning as L
import torch

from regionaldiff.components import build_augmentations, build_encoder, build_image_embedder
from regionaldiff.config import plain
from regionaldiff.data.base import SPLITS
from regionaldiff.encoder.alignment import ImageEmbeddings, compute_image_embeddings
from regionaldiff.encoder.base import EEGEncoder
from regionaldiff.encoder.module import EncoderPretrainModule
from regionaldiff.reconstruction import ENCODER_WEIGHTS, save_weights
from regionaldiff.steps.context import PipelineContext, artifact_key
from regionaldiff.steps.training import final_metrics, make_trainer, resume_path, training_limits

log = logging.getLogger(__name__)


def new_encoder(ctx: PipelineContext, align_dim: int = 0) -> EEGEncoder:
    """The encoder from ``encoder.net`` for this dataset (no region head when the dataset has no maps; an alignment
    head onto an image embedding of width ``align_dim`` when it is > 0; the subject conditioning
    ``encoder.subject_layer`` for the dataset's subject numbers)."""
    dm = ctx.datamodule
    return build_encoder(
        ctx.typed.encoder.net,
        n_chans=dm.n_chans,
        n_times=dm.n_times,
        sfreq=dm.sfreq,
        num_classes=dm.num_classes,
        with_regions=dm.has_region_maps,
        num_region_labels=dm.num_region_labels,
        align_dim=align_dim,
        subject_layer=ctx.typed.encoder.subject_layer.value,
        subject_ids=dm.subject_ids if ctx.typed.encoder.subject_layer.value != "none" else (),
    )


def image_embeddings(ctx: PipelineContext) -> ImageEmbeddings | None:
    """The image embedding of every stimulus (all splits), computed once per image set and embedder and kept as the
    artifact ``image_embeddings/<hash>``; None without ``encoder/align``."""
    align = ctx.typed.encoder.align
    if align is None:
        return None
    key = {"prepare": ctx.keys["prepare"]["dataset"], "image_embedder": plain(ctx.cfg.encoder.align.image_embedder)}
    slot = ctx.slots["image_embeddings"] = ctx.store.slot("image_embeddings", key)
    with slot.lock():
        if not slot.done:
            ids: list[str] = []
            images = []
            for split in SPLITS:
                split_ids, split_images, _ = ctx.datamodule.stimuli(split)
                ids += split_ids
                images += split_images
            embedder = build_image_embedder(align.image_embedder)
            table = compute_image_embeddings(embedder, ids, images, align.batch_size, ctx.device)
            table.save(slot.path)
            slot.mark_done({"n": len(ids), "dim": table.dim})
            log.info("pretrain: image embeddings of %d stimuli (%d-d) in %s", len(ids), table.dim, slot.path)
    return ImageEmbeddings.load(slot.path)


def pretrain(ctx: PipelineContext, train: bool = True) -> None:
    """Pretrain the EEG encoder, or reuse the artifact of the same data, encoder config and seed."""
    e = ctx.typed.encoder
    ctx.keys["pretrain"] = {
        "prepare": ctx.keys["prepare"],
        "encoder": artifact_key("encoder", plain(ctx.cfg.encoder)),
        "seed": ctx.seed,
    }
    ctx.keys["pretrain"].update(training_limits(ctx))
    slot = ctx.slots["pretrain"] = ctx.store.slot("pretrain", ctx.keys["pretrain"])
    ctx.tracker.set_tags({"artifact.encoder": str(slot.path)})
    embeddings = image_embeddings(ctx)
    with slot.lock():
        if not slot.done:
            if not train:
                raise RuntimeError(
                    f"No pretrained encoder for this config at {slot.path}: add 'pretrain' to pipeline.steps."
                )
            L.seed_everything(ctx.seed, workers=True)
            model = new_encoder(ctx, align_dim=embeddings.dim if embeddings is not None else 0)
            module = EncoderPretrainModule(
                model,
                e.lr,
                e.weight_decay,
                e.w_mae,
                e.w_cls,
                e.w_region,
                e.max_epochs,
                w_align=e.align.weight if e.align is not None else 0.0,
                align_temperature=e.align.temperature if e.align is not None else 0.07,
                image_embeddings=embeddings,
                learn_temperature=e.learn_temperature,
                augmentations=build_augmentations(e.augment),
            )
            trainer = make_trainer(ctx, slot, e.max_epochs, callbacks=early_stopping(e.early_stopping_patience))
            dm = ctx.datamodule
            start = time.perf_counter()
            trainer.fit(
                module,
                train_dataloaders=dm.loader("train", True, batch_size=e.batch_size),
                val_dataloaders=dm.val_dataloader(),
                ckpt_path=resume_path(slot),
            )
            metrics = final_metrics(trainer)
            # what an encoder comparison reports beside the scores (the seconds of this run's training; a resumed
            # run counts only what it trained)
            metrics["pretrain/parameters"] = float(sum(p.numel() for p in model.parameters()))
            metrics["pretrain/train_seconds"] = round(time.perf_counter() - start, 1)
            metrics["pretrain/epochs_trained"] = float(trainer.current_epoch)
            ctx.tracker.log_metrics(
                {k: metrics[k] for k in ("pretrain/parameters", "pretrain/train_seconds", "pretrain/epochs_trained")}
            )
            if e.calibrate_background and model.region_grid > 0 and dm.has_region_maps and e.w_region > 0:
                metrics.update(calibrate(ctx, model))
            if embeddings is not None:
                metrics.update(validation_retrieval(ctx, model, embeddings))
            save_weights(model, slot.path / ENCODER_WEIGHTS, region_grid=model.region_grid, align_dim=model.align_dim)
            slot.mark_done(metrics)
            log.info("pretrain: encoder saved to %s", slot.path / ENCODER_WEIGHTS)
        else:
            log.info("pretrain: reusing encoder %s", slot.path)
            # the reused encoder's validation scores, size and training time go into this run too (a sweep's
            # report reads them from every job, also from those that reuse the encoder)
            ctx.tracker.log_metrics(saved_metrics(slot.path / "DONE"))
    ctx.tracker.set_tags({"checkpoint.encoder": str(slot.path / ENCODER_WEIGHTS)})


def saved_metrics(done: Path) -> dict[str, float]:
    """The encoder's validation scores, size and training time that its artifact's completion marker kept (none if
    the marker is unreadable); the training curves' last values belong to the run that trained it and are left."""
    try:
        info = json.loads(done.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(info, dict):
        return {}
    return {k: float(v) for k, v in info.items() if k.startswith(REUSED_METRICS) and isinstance(v, (int, float))}


#: what a run that reuses an encoder logs of it (prefixes of the completion marker's keys)
REUSED_METRICS = (
    "pretrain/val_",
    "pretrain/parameters",
    "pretrain/train_seconds",
    "pretrain/epochs_trained",
    "pretrain/region_background_bias",
)


def early_stopping(patience: int) -> list[L.Callback]:
    """Lightning's early stopping on the validation loss (``pretrain/val_loss``), or nothing when ``patience`` is 0."""
    if patience <= 0:
        return []
    from lightning.pytorch.callbacks import EarlyStopping

    return [EarlyStopping(monitor="pretrain/val_loss", patience=patience, mode="min")]


def calibrate(ctx: PipelineContext, model: EEGEncoder) -> dict[str, float]:
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


def validation_retrieval(ctx: PipelineContext, model: EEGEncoder, embeddings: ImageEmbeddings) -> dict[str, float]:
    """Zero-shot retrieval on the validation split (its images as the candidates), logged as ``pretrain/val_*``: the
    alignment's score where the test split is never looked at."""
    from regionaldiff.evaluation.retrieval import split_retrieval

    model.to(ctx.device)
    metrics = split_retrieval(model, ctx.datamodule.loader("val", False), embeddings, ks=(1, 5), device=ctx.device)
    model.cpu()
    metrics = {f"pretrain/val_{k.removeprefix('eval/')}": v for k, v in metrics.items()}
    ctx.tracker.log_metrics(metrics)
    log.info("pretrain: validation retrieval %s", ", ".join(f"{k}={v:.3f}" for k, v in metrics.items()))
    return metrics


def load_encoder(ctx: PipelineContext) -> EEGEncoder:
    """The pretrained encoder of this run, in eval mode."""
    saved = torch.load(ctx.slots["pretrain"].path / ENCODER_WEIGHTS, map_location="cpu", weights_only=True)
    model = new_encoder(ctx, align_dim=int(saved.get("align_dim", 0)))
    model.load_state_dict(saved["state_dict"])
    return model.eval()
