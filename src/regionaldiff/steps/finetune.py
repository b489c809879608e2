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
import torch

from regionaldiff.config import plain
from regionaldiff.ldm.module import LDMFinetuneModule
from regionaldiff.reconstruction import DataSpec, build_ldm_and_codec, write_model_card, write_run_pointer
from regionaldiff.steps.context import PipelineContext
from regionaldiff.steps.pretrain import ENCODER_FILE, load_encoder
from regionaldiff.steps.training import final_metrics, make_trainer, resume_path

log = logging.getLogger(__name__)

LDM_FILE = "ldm.pt"


def data_spec(ctx: PipelineContext) -> DataSpec:
    """What the model is trained on (saved with it and checked against new EEG)."""
    dm = ctx.datamodule
    return DataSpec(
        n_chans=int(dm.n_chans),
        n_times=int(dm.n_times),
        sfreq=float(dm.sfreq),
        num_classes=int(dm.num_classes),
        image_size=int(dm.image_size),
        class_names=[str(c) for c in dm.class_names],
    )


def finetune(ctx: PipelineContext, train: bool = True) -> None:
    """Fine-tune the LDM, or reuse the artifact of the same encoder, LDM config (sampling aside) and seed."""
    l_cfg = ctx.typed.ldm
    ldm_key = {k: v for k, v in plain(ctx.cfg.ldm).items() if k != "sampling"}
    ctx.keys["finetune"] = {"pretrain": ctx.keys["pretrain"], "ldm": ldm_key, "seed": ctx.seed}
    slot = ctx.slots["finetune"] = ctx.store.slot("finetune", ctx.keys["finetune"])
    ctx.tracker.set_tags({"artifact.ldm": str(slot.path)})
    encoder = load_encoder(ctx)
    with slot.lock():
        if not slot.done:
            if not train:
                raise RuntimeError(
                    f"No fine-tuned LDM for this config at {slot.path}: add 'finetune' to pipeline.steps."
                )
            L.seed_everything(ctx.seed, workers=True)
            ldm, codec = build_ldm_and_codec(l_cfg, encoder, ctx.datamodule.image_size)
            # global-only variants have no maps: the module never reads train_maps for them
            train_maps = l_cfg.train_maps.value if l_cfg.train_maps is not None else "predicted"
            module = LDMFinetuneModule(encoder, ldm, codec, l_cfg.lr, l_cfg.weight_decay, train_maps)
            trainer = make_trainer(ctx, slot, l_cfg.max_epochs)
            dm = ctx.datamodule
            trainer.fit(
                module,
                train_dataloaders=dm.loader("train", True, l_cfg.batch_size),
                val_dataloaders=dm.loader("val", False, l_cfg.batch_size),
                ckpt_path=resume_path(slot),
            )
            torch.save({"state_dict": ldm.state_dict()}, slot.path / LDM_FILE)
            save_model_folder(ctx, slot.path, encoder.region_grid)
            slot.mark_done(final_metrics(trainer))
            log.info("finetune: LDM saved to %s", slot.path / LDM_FILE)
        else:
            if not (slot.path / "pipeline.json").is_file():
                save_model_folder(ctx, slot.path, encoder.region_grid)
            log.info("finetune: reusing LDM %s", slot.path)
    write_run_pointer(ctx.output_dir, slot.path, plain(ctx.cfg.ldm.sampling))
    ctx.tracker.set_tags({"checkpoint.ldm": str(slot.path / LDM_FILE)})


def save_model_folder(ctx: PipelineContext, folder: Path, region_grid: int) -> None:
    """Make ``folder`` a complete trained model: the encoder's weights beside the LDM's, and ``pipeline.json``."""
    source = ctx.slots["pretrain"].path / ENCODER_FILE
    target = folder / ENCODER_FILE
    if not target.exists():
        try:
            os.link(source, target)  # no second copy of a large encoder where the file system allows
        except OSError:
            shutil.copy2(source, target)
    e = ctx.typed.encoder
    write_model_card(
        folder,
        data=data_spec(ctx),
        encoder_net=plain(ctx.cfg.encoder.net),
        region_grid=region_grid,
        w_cls=float(e.w_cls),
        w_region=float(e.w_region),
        ldm=plain(ctx.cfg.ldm),
    )
