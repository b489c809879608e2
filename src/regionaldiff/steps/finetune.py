"""Step ``finetune``: the LDM on the frozen encoder's codes (and region maps), or its artifact.

The artifact folder is a complete trained model (``pipeline.json``, ``encoder.pt``, ``ldm.pt``) that
:meth:`regionaldiff.reconstruction.RegionalDiffPipeline.from_pretrained` loads; the job folder's ``model.json``
points to it.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import lightning as L

from regionaldiff.config import plain
from regionaldiff.encoder.base import EEGEncoder
from regionaldiff.ldm.clip_alignment import ClipImageEmbedder
from regionaldiff.ldm.latent import LatentCodec
from regionaldiff.ldm.latent_cache import LatentCache
from regionaldiff.ldm.module import LDMFinetuneModule
from regionaldiff.ldm.trainable import apply_speed_options, count_parameters
from regionaldiff.reconstruction import (
    ENCODER_WEIGHTS,
    LDM_WEIGHTS,
    PIPELINE_FILE,
    DataSpec,
    build_ldm_and_codec,
    model_card,
    save_weights,
    write_model_card,
    write_run_pointer,
)
from regionaldiff.steps.context import PipelineContext
from regionaldiff.steps.frozen import frozen_model, part_metrics, parts_record
from regionaldiff.steps.pretrain import image_embeddings, load_encoder
from regionaldiff.steps.training import (
    final_metrics,
    make_trainer,
    resume_path,
    stored_latent_cache,
    training_limits,
)

log = logging.getLogger(__name__)


def model_image_size(ctx: PipelineContext) -> int:
    """The side of the images the LDM trains on and generates: ``ldm.image_size``, else the dataset's."""
    return int(ctx.typed.ldm.image_size or ctx.datamodule.image_size)


def data_spec(ctx: PipelineContext) -> DataSpec:
    """What the model is trained on (saved with it and checked against new EEG)."""
    dm = ctx.datamodule
    return DataSpec(
        n_chans=int(dm.n_chans),
        n_times=int(dm.n_times),
        sfreq=float(dm.sfreq),
        num_classes=int(dm.num_classes),
        image_size=model_image_size(ctx),
        class_names=[str(c) for c in dm.class_names],
        num_region_labels=int(dm.num_region_labels),
    )


def finetune(ctx: PipelineContext, train: bool = True) -> None:
    """Fine-tune the LDM, or reuse the artifact of the same encoder, LDM config (sampling aside) and seed.

    The frozen recipe (``ldm.adapter`` set) trains nothing on EEG: its model is this run's encoder beside the EEG-free
    parts that :mod:`regionaldiff.steps.frozen` trains once per image set (or reuses)."""
    l_cfg = ctx.typed.ldm
    ldm_key = {k: v for k, v in plain(ctx.cfg.ldm).items() if k != "sampling"}
    ctx.keys["finetune"] = {"pretrain": ctx.keys["pretrain"], "ldm": ldm_key, "seed": ctx.seed, **training_limits(ctx)}
    slot = ctx.slots["finetune"] = ctx.store.slot("finetune", ctx.keys["finetune"])
    ctx.tracker.set_tags({"artifact.ldm": str(slot.path)})
    encoder = load_encoder(ctx)
    with slot.lock():
        if not slot.done and l_cfg.frozen:
            if not train:
                raise RuntimeError(
                    f"No frozen-recipe model for this config at {slot.path}: add 'finetune' to pipeline.steps."
                )
            # the frozen recipe: nothing is trained on EEG; the EEG-free parts are trained once (or reused) and put
            # together with this run's encoder
            embeddings = image_embeddings(ctx)
            assert embeddings is not None  # validate: the frozen recipe needs encoder.align
            ldm, _ = frozen_model(ctx, encoder, embeddings, model_image_size(ctx))
            save_weights(ldm, slot.path / LDM_WEIGHTS)
            save_model_folder(ctx, slot.path, encoder)
            slot.mark_done(parts_record(ctx))
            log.info("finetune: frozen-recipe model (no EEG training) saved to %s", slot.path)
        elif not slot.done:
            if not train:
                raise RuntimeError(
                    f"No fine-tuned LDM for this config at {slot.path}: add 'finetune' to pipeline.steps."
                )
            L.seed_everything(ctx.seed, workers=True)
            ldm, codec = build_ldm_and_codec(l_cfg, encoder, model_image_size(ctx))
            apply_speed_options([m for m in (ldm.unet, ldm.controlnet) if m is not None], l_cfg.train)
            counts = count_parameters({"unet": ldm.unet, "controlnet": ldm.controlnet, "conditioner": ldm.conditioner})
            ctx.tracker.log_metrics({k: float(v) for k, v in counts.items()})
            log.info("finetune: trained parameters %s", ", ".join(f"{k}={v:,}" for k, v in counts.items()))
            clip = ClipImageEmbedder(str(l_cfg.clip_loss.pretrained)) if l_cfg.clip_loss.weight > 0 else None
            cache = latent_cache(ctx, codec, clip) if l_cfg.train.latent_cache else None
            # global-only variants have no maps: the module never reads train_maps for them
            train_maps = l_cfg.train_maps.value if l_cfg.train_maps is not None else "predicted"
            module = LDMFinetuneModule(
                encoder,
                ldm,
                codec,
                l_cfg.lr,
                l_cfg.weight_decay,
                train_maps,
                latent_cache=cache,
                clip=clip if cache is None else None,
                clip_weight=l_cfg.clip_loss.weight,
                fused_adamw=l_cfg.train.fused_adamw,
            )
            trainer = make_trainer(ctx, slot, l_cfg.max_epochs)
            dm = ctx.datamodule
            trainer.fit(
                module,
                train_dataloaders=dm.loader("train", True, l_cfg.batch_size),
                val_dataloaders=dm.loader("val", False, l_cfg.batch_size),
                ckpt_path=resume_path(slot),
            )
            save_weights(ldm, slot.path / LDM_WEIGHTS)
            save_model_folder(ctx, slot.path, encoder)
            slot.mark_done(final_metrics(trainer))
            log.info("finetune: LDM saved to %s", slot.path / LDM_WEIGHTS)
        else:
            if not (slot.path / PIPELINE_FILE).is_file():
                save_model_folder(ctx, slot.path, encoder)
            if l_cfg.frozen:  # the parts' one-time training cost, also for a job that reuses the whole model
                ctx.tracker.log_metrics(part_metrics(slot))
            log.info("finetune: reusing LDM %s", slot.path)
    write_run_pointer(ctx.output_dir, slot.path, plain(ctx.cfg.ldm.sampling))
    ctx.tracker.set_tags({"checkpoint.ldm": str(slot.path / LDM_WEIGHTS)})


def latent_cache(ctx: PipelineContext, codec: LatentCodec, clip: ClipImageEmbedder | None) -> LatentCache:
    """The latent cache of the training and validation images, computed once per VAE, image size and data."""
    l_cfg = ctx.typed.ldm
    key = {
        "prepare": ctx.keys["prepare"]["dataset"],
        "latent": plain(ctx.cfg.ldm.latent),
        "image_size": model_image_size(ctx),
        "clip": l_cfg.clip_loss.pretrained if clip is not None else None,
    }

    def train_and_val_stimuli() -> tuple[list[str], list]:
        ids, images = [], []
        for split in ("train", "val"):
            split_ids, split_images, _ = ctx.datamodule.stimuli(split)
            ids += split_ids
            images += split_images
        return ids, images

    cache, _ = stored_latent_cache(ctx, key, train_and_val_stimuli, codec, model_image_size(ctx), clip)
    return cache


def save_model_folder(ctx: PipelineContext, folder: Path, encoder: EEGEncoder) -> None:
    """Make ``folder`` a complete trained model: the encoder's weights beside the LDM's, and ``pipeline.json``."""
    source = ctx.slots["pretrain"].path / ENCODER_WEIGHTS
    target = folder / ENCODER_WEIGHTS
    if not target.exists():
        try:
            os.link(source, target)  # no second copy of a large encoder where the file system allows
        except OSError:
            shutil.copy2(source, target)
    e = ctx.typed.encoder
    card = model_card(
        data=data_spec(ctx),
        encoder_net=plain(ctx.cfg.encoder.net),
        region_grid=encoder.region_grid,
        w_cls=float(e.w_cls),
        w_region=float(e.w_region),
        ldm=plain(ctx.cfg.ldm),
        align_dim=encoder.align_dim,
        subject_layer=encoder.subject_layer,
        subject_ids=encoder.subject_ids,
    )
    write_model_card(folder, card)
