"""Lightning set-up shared by the training steps: the trainer, its rolling checkpoint, resuming from it, and the
guard that stops a job whose loss (or weights) became NaN or infinite before a bad checkpoint is written."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch

from regionaldiff.artifacts import Slot
from regionaldiff.errors import TrainingDivergedError
from regionaldiff.ldm.latent import LatentCodec
from regionaldiff.ldm.latent_cache import LatentCache, compute_latent_cache
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


class StopOnNonFiniteLoss(L.Callback):
    """Stop training with :class:`~regionaldiff.errors.TrainingDivergedError` as soon as the training loss (every
    batch) or a weight (every epoch, before the epoch's checkpoint is written) is NaN or infinite.

    The rolling checkpoint of the last finite epoch is left in place (``checkpoints/last.ckpt``), and nothing is
    saved as the step's artifact, so a job never goes on to generate from a diverged model.

    Parameters
    ----------
    step : str
        The pipeline step that trains (``pretrain``, ``finetune``), named in the error.
    checkpoint : Path, optional
        The rolling checkpoint, named in the error when it exists.
    """

    def __init__(self, step: str, checkpoint: Path | None = None) -> None:
        self.step = step
        self.checkpoint = checkpoint

    def _fail(self, trainer: L.Trainer, what: str, where: str = "") -> None:
        kept = (
            f"the last good checkpoint (end of epoch {trainer.current_epoch - 1}) is kept at {self.checkpoint}"
            if self.checkpoint is not None and self.checkpoint.is_file()
            else "no checkpoint had been written yet"
        )
        raise TrainingDivergedError(
            f"{self.step}: {what} at epoch {trainer.current_epoch}{where}; training "
            f"stopped and nothing was saved as the step's result; {kept}.",
            hint="lower the learning rate (encoder.lr / ldm.lr), use 32-bit precision (trainer.precision=32), or "
            "check the data for NaN values; the next run resumes from the last good checkpoint.",
        )

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if isinstance(loss, torch.Tensor) and not bool(torch.isfinite(loss.detach()).all()):
            value = float(loss.detach().float().mean())
            self._fail(trainer, f"the training loss became {value}", f" (batch {batch_idx})")

    def _check_weights(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for name, param in pl_module.named_parameters():
            if param.requires_grad and not bool(torch.isfinite(param.detach()).all()):
                self._fail(trainer, f"the weight {name} became non-finite")

    # before ModelCheckpoint (Lightning runs checkpoint callbacks last) writes the epoch's checkpoint
    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == "fit":
            self._check_weights(trainer, pl_module)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._check_weights(trainer, pl_module)


class RandomStateInCheckpoint(L.Callback):
    """Save the random number generators' states (Python, NumPy, torch, CUDA) with every checkpoint and restore them
    on resuming, so that a step interrupted between epochs (preempted, requeued, killed) and resumed from its last
    checkpoint draws the same shuffles, masks and noise as an uninterrupted run."""

    def state_dict(self) -> dict[str, Any]:
        import random

        import numpy as np

        name, keys, pos, has_gauss, gauss = np.random.get_state()
        # plain types and tensors only: Lightning loads checkpoints with weights_only=True
        state: dict[str, Any] = {
            "python": random.getstate(),
            "numpy": [
                str(name),
                torch.from_numpy(np.asarray(keys, dtype=np.int64)),
                int(pos),
                int(has_gauss),
                float(gauss),
            ],
            "torch": torch.get_rng_state(),
        }
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        import random

        import numpy as np

        random.setstate(state_dict["python"])
        name, keys, pos, has_gauss, gauss = state_dict["numpy"]
        np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
        torch.set_rng_state(state_dict["torch"])
        if "cuda" in state_dict and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state_dict["cuda"])


def training_limits(ctx: PipelineContext) -> dict[str, int]:
    """What of the trainer settings changes a trained artifact, for its key: the batch limit, when one is set (none
    by default, so full runs keep their keys)."""
    limit = ctx.typed.trainer.limit_train_batches
    return {} if limit is None else {"limit_train_batches": int(limit)}


def make_trainer(ctx: PipelineContext, slot: Slot, max_epochs: int, callbacks: Sequence[L.Callback] = ()) -> L.Trainer:
    """A Lightning trainer from the ``trainer`` group, checkpointing into ``slot`` every epoch (``callbacks`` added
    before the checkpoint's)."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    quiet_known_warnings()
    t = ctx.typed.trainer
    logger = ctx.tracker.lightning_logger()
    # passed only when set: Lightning prints a notice for any explicit value
    limits: dict[str, Any] = {} if t.limit_train_batches is None else {"limit_train_batches": t.limit_train_batches}
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
        # one rolling checkpoint, rewritten every epoch, so an interrupted run loses at most one epoch; a NaN or
        # infinite loss stops the step before a bad checkpoint replaces the last good one
        callbacks=[
            StopOnNonFiniteLoss(slot.path.parent.name, slot.path / "checkpoints" / "last.ckpt"),
            RandomStateInCheckpoint(),
            *callbacks,
            ModelCheckpoint(
                dirpath=str(slot.path / "checkpoints"),
                filename="last",
                monitor=None,
                save_top_k=1,
                every_n_epochs=1,
                enable_version_counter=False,
            ),
        ],
        enable_model_summary=False,
        num_sanity_val_steps=0,
        **limits,
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


def stored_latent_cache(
    ctx: PipelineContext,
    key: dict[str, Any],
    stimuli: Callable[[], tuple[Sequence[str], Sequence[Any]]],
    codec: LatentCodec,
    image_size: int,
    clip: torch.nn.Module | None = None,
) -> tuple[LatentCache, Slot]:
    """The ``latent_cache`` artifact of ``key``: the latent posteriors (and CLIP embeddings) of the images
    ``stimuli()`` gives as ``(ids, images)``, computed once under the slot's lock (a parallel sweep computes them
    once; ``stimuli`` is called only then), then loaded; with its slot."""
    slot = ctx.store.slot("latent_cache", key)
    with slot.lock():
        if not slot.done:
            ids, images = stimuli()
            cache = compute_latent_cache(ids, images, codec, image_size, clip, device=ctx.device)
            cache.save(slot.path)
            slot.mark_done({"n": len(ids)})
            log.info("latent cache of %d images in %s", len(ids), slot.path)
    return LatentCache.load(slot.path), slot
