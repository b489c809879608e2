"""Lightning set-up shared by the training steps: the trainer, its rolling checkpoint and resuming from it."""

from __future__ import annotations

import logging
import warnings

import lightning as L
import torch

from regionaldiff.artifacts import Slot
from regionaldiff.steps.context import PipelineContext

log = logging.getLogger(__name__)


def quiet_known_warnings() -> None:
    """Silence Lightning warnings that are expected here and would only confuse users."""
    # the pretrained EEG encoder is frozen in eval mode on purpose while the LDM trains
    warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")
    # small datasets: fewer batches than the logging interval is fine
    warnings.filterwarnings(
        "ignore", message=r"The number of training batches .* is smaller than the logging interval"
    )
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")


def make_trainer(ctx: PipelineContext, slot: Slot, max_epochs: int) -> L.Trainer:
    """A Lightning trainer from the ``trainer`` group, checkpointing into ``slot`` every epoch."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    quiet_known_warnings()
    t = ctx.typed.trainer
    logger = ctx.tracker.lightning_logger()
    return L.Trainer(
        default_root_dir=str(slot.path),
        max_epochs=max_epochs,
        accelerator=t.accelerator.value,
        devices=t.devices,
        num_nodes=t.num_nodes,
        strategy=t.strategy,
        precision=t.precision,  # type: ignore[arg-type]
        deterministic=t.deterministic,
        enable_progress_bar=t.enable_progress_bar,
        log_every_n_steps=t.log_every_n_steps,
        logger=logger if logger is not None else False,
        # one rolling checkpoint, rewritten every epoch, so an interrupted run loses at most one epoch
        callbacks=[
            ModelCheckpoint(
                dirpath=str(slot.path / "checkpoints"),
                filename="last",
                monitor=None,
                save_top_k=1,
                every_n_epochs=1,
                enable_version_counter=False,
            )
        ],
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )


def resume_path(slot: Slot) -> str | None:
    """The step's last checkpoint, if it is readable; a checkpoint cut off mid-write is set aside, not resumed."""
    last = slot.path / "checkpoints" / "last.ckpt"
    if not last.is_file():
        return None
    try:
        torch.load(last, map_location="cpu", weights_only=False, mmap=True)  # mmap: no full read of large models
    except Exception as err:  # noqa: BLE001 - any unreadable file means: start this step over
        broken = last.with_suffix(".ckpt.broken")
        last.replace(broken)
        log.warning(
            "last checkpoint %s is unreadable (%s); moved to %s, training this step from the start", last, err, broken
        )
        return None
    log.info("resuming from %s", last)
    return str(last)


def final_metrics(trainer: L.Trainer) -> dict[str, float]:
    """The trainer's last logged values, as plain floats (kept with the artifact)."""
    return {k: float(v) for k, v in trainer.callback_metrics.items()}
