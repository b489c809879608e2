"""The frozen-diffusion recipe's EEG-free parts, trained once and shared (``ldm=frozen_*``, ``ldm=sd15_frozen_*``).

Nothing here reads EEG. Two artifacts, keyed by what they are trained on and never by the subject, the encoder, the
EEG (its noise, its preprocessing) or the run's seed, so that every job of a sweep over seeds, encoders or subjects on
the same images reuses them (:func:`frozen_model`, called by the ``finetune`` step):

``frozen_unet/<hash>`` (``prior.pt``)
    The tiny UNet and its image adapter (``ldm/adapter=tiny``), trained from scratch on the training images and their
    image embeddings. Key (:func:`base_key` plus the training settings): a content hash of the training images (ids
    and pixels), the image embedder (``encoder.align.image_embedder``), the LDM's image size and the ``ldm`` nodes that
    shape the model (``latent``, ``unet``, ``adapter``, ``noise_schedule``, ``cond_drop_prob``), ``lr``,
    ``weight_decay``, ``max_epochs``, the batch size, the trainer's batch limit, and the parts' own fixed seed
    (:data:`PART_SEED`). SD-1.5 has none: its UNet and IP-Adapter are read from their folders, unchanged.
``region_controlnet/<hash>`` (``controlnet.pt``)
    The ControlNet of the regional variants, trained on the training images and their true region maps (coarsened to
    the region grid the encoder predicts) with the UNet and adapter frozen, conditioned on the images' own embeddings.
    Key: the same base, the ``frozen_unet`` key (tiny), a content hash of the maps, the map format (grid, labels), the
    ``controlnet`` node and the training settings.

Both are built under their slot's lock (a parallel sweep builds each once), checkpoint every epoch into their slot and
resume. With ``ldm.train.latent_cache: true`` (``ldm=sd15_frozen_regional``: the ControlNet trains on SD-1.5's VAE
latents) the training images' posteriors are computed once into a ``latent_cache`` artifact keyed by the images'
content hash, the latent codec and the image size, and every step samples from it instead of running the VAE. The
``finetune`` step then assembles the run's model folder (encoder, frozen parts; nothing is trained on EEG).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from collections.abc import Sequence
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from regionaldiff.artifacts import Slot
from regionaldiff.components import build_ldm, resolve_target
from regionaldiff.config import LDMConfig, plain
from regionaldiff.data.base import image_to_tensor
from regionaldiff.encoder.alignment import ImageEmbeddings
from regionaldiff.encoder.base import EEGEncoder
from regionaldiff.ldm.latent import LatentCodec
from regionaldiff.ldm.latent_cache import LatentCache, resize_images
from regionaldiff.ldm.model import RegionalLDM
from regionaldiff.ldm.trainable import apply_speed_options
from regionaldiff.reconstruction import build_ldm_and_codec
from regionaldiff.regions import coarse_region_target
from regionaldiff.steps.context import PipelineContext
from regionaldiff.steps.training import make_trainer, resume_path, stored_latent_cache, training_limits

log = logging.getLogger(__name__)

#: the EEG-free parts' own seed (their initialisation, shuffling and noise): fixed, so that jobs with different
#: training seeds share them
PART_SEED = 0
PRIOR_WEIGHTS = "prior.pt"  # {"state_dict": ...} of the trained UNet and adapter ("unet.*", "adapter.*")
CONTROLNET_WEIGHTS = "controlnet.pt"  # {"state_dict": ...} of the trained ControlNet


def content_hash(ids: Sequence[str], arrays: Sequence[np.ndarray]) -> str:
    """SHA-256 of stimuli: their ids, shapes, dtypes and bytes, in id order (what the parts are trained on)."""
    digest = hashlib.sha256()
    for i in sorted(range(len(ids)), key=lambda k: ids[k]):
        array = np.ascontiguousarray(arrays[i])
        digest.update(f"{ids[i]}|{array.shape}|{array.dtype}|".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def trains_with_unet(cfg: LDMConfig) -> bool:
    """Whether the adapter and its UNet are trained here (the tiny recipe), not read from folders (SD-1.5)."""
    return bool(getattr(resolve_target(cfg.adapter, "ldm.adapter"), "trains_with_unet", True))


class StimulusSet(Dataset):
    """The training stimuli (no EEG): id, image in [-1, 1], its image embedding and, when given, its region map."""

    def __init__(
        self,
        ids: Sequence[str],
        images: Sequence[np.ndarray],
        embeddings: np.ndarray,
        maps: Sequence[np.ndarray] | None,
    ):
        self.ids, self.images, self.embeddings, self.maps = ids, images, embeddings, maps

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item: dict[str, Any] = {
            "image_id": str(self.ids[i]),
            "image": image_to_tensor(self.images[i]),
            "embedding": torch.from_numpy(np.asarray(self.embeddings[i], dtype=np.float32)),
        }
        if self.maps is not None:
            item["region_map"] = torch.from_numpy(np.asarray(self.maps[i], dtype=np.int64))
        return item


class EEGFreeModule(L.LightningModule):
    """The denoising loss of a :class:`RegionalLDM` with an adapter, conditioned on the true image embeddings (and
    the true region maps, coarsened to ``region_grid``): trains whatever of the LDM has ``requires_grad`` (the UNet
    and adapter, or the ControlNet alone). Latents are sampled from ``latent_cache`` when one is given, else
    encoded by the codec at every step."""

    def __init__(
        self,
        ldm: RegionalLDM,
        codec: LatentCodec,
        lr: float,
        weight_decay: float,
        num_region_labels: int = 0,
        region_grid: int = 0,
        latent_cache: LatentCache | None = None,
    ) -> None:
        super().__init__()
        assert ldm.adapter is not None
        self.ldm, self.codec = ldm, codec.requires_grad_(False)
        self.lr, self.weight_decay = lr, weight_decay
        self.num_region_labels, self.region_grid = num_region_labels, region_grid
        self.latent_cache = latent_cache

    def training_latents(self, batch: dict) -> torch.Tensor:
        """The batch's latents: a sample of the cached posterior, or the codec's encoding of its images."""
        with torch.no_grad():
            if self.latent_cache is not None:
                return self.codec.sample(*self.latent_cache.posterior(batch["image_id"], batch["image"].device))
            return self.codec.training_latents(resize_images(batch["image"], self.ldm.image_size))

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        assert self.ldm.adapter is not None
        latents = self.training_latents(batch)
        context = self.ldm.adapter.prepare(batch["embedding"])
        maps = None
        if self.ldm.uses_regions:
            maps = coarse_region_target(batch["region_map"], self.num_region_labels, self.region_grid)
        loss = self.ldm.training_loss(latents, context, maps)
        self.log("frozen/train_loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(latents))
        return loss

    def configure_optimizers(self):
        params = [p for p in self.ldm.parameters() if p.requires_grad]
        return torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)


@dataclasses.dataclass
class TrainingStimuli:
    """The training split's unique stimuli and their image embeddings (what the EEG-free parts learn from)."""

    ids: list[str]
    images: list[np.ndarray]
    embeddings: np.ndarray
    images_hash: str


def training_stimuli(ctx: PipelineContext, embeddings: ImageEmbeddings) -> TrainingStimuli:
    ids, images, _ = ctx.datamodule.stimuli("train")
    table = embeddings.array[embeddings.rows(ids)].astype(np.float32)
    return TrainingStimuli(ids, images, table, content_hash(ids, images))


def batch_size(ctx: PipelineContext) -> int:
    return int(ctx.typed.ldm.batch_size or ctx.datamodule.batch_size)


def base_key(ctx: PipelineContext, stimuli: TrainingStimuli, image_size: int) -> dict[str, Any]:
    """What every EEG-free part depends on: the images, the embedding, the model's shape (no subject, encoder or
    EEG setting, no run seed)."""
    ldm = plain(ctx.cfg.ldm)
    return {
        "images": stimuli.images_hash,
        "image_embedder": plain(ctx.cfg.encoder.align.image_embedder),
        "image_size": image_size,
        "ldm": {k: ldm[k] for k in ("latent", "unet", "adapter", "noise_schedule", "cond_drop_prob")},
        "part_seed": PART_SEED,
        **training_limits(ctx),
    }


def train_settings(ctx: PipelineContext) -> dict[str, Any]:
    """The training settings that change a part's weights (the latent cache only when on, which changes a VAE's
    posterior draws: keys of parts trained without it are as before)."""
    l_cfg = ctx.typed.ldm
    settings: dict[str, Any] = {
        "lr": float(l_cfg.lr),
        "weight_decay": float(l_cfg.weight_decay),
        "max_epochs": int(l_cfg.max_epochs),
        "batch_size": batch_size(ctx),
    }
    if l_cfg.train.latent_cache:
        settings["latent_cache"] = True
    return settings


def stimulus_latent_cache(
    ctx: PipelineContext, stimuli: TrainingStimuli, codec: LatentCodec, image_size: int
) -> LatentCache | None:
    """With ``ldm.train.latent_cache``: the training images' latent posteriors, computed once (keyed by the images'
    content hash, the codec and the image size: no EEG, no seed) and reused by every EEG-free part and job."""
    if not ctx.typed.ldm.train.latent_cache:
        return None
    key = {"images": stimuli.images_hash, "latent": plain(ctx.cfg.ldm.latent), "image_size": image_size}
    cache, slot = stored_latent_cache(ctx, key, lambda: (stimuli.ids, stimuli.images), codec, image_size)
    ctx.tracker.set_tags({"artifact.frozen_latent_cache": str(slot.path)})
    return cache


def fit_part(ctx: PipelineContext, slot: Slot, module: EEGFreeModule, dataset: StimulusSet, what: str) -> dict:
    """Train ``module`` on ``dataset`` (fixed seed), checkpointing into ``slot``; the seconds and samples it took."""
    loader = DataLoader(
        dataset,
        batch_size=batch_size(ctx),
        shuffle=True,
        num_workers=0,
        generator=torch.Generator().manual_seed(PART_SEED),
    )
    trained = [m for m in (module.ldm.unet, module.ldm.controlnet) if m is not None]
    apply_speed_options(trained, ctx.typed.ldm.train)  # channels-last, checkpointing, compile, as configured
    trainer = make_trainer(ctx, slot, int(ctx.typed.ldm.max_epochs))
    start = time.perf_counter()
    trainer.fit(module, train_dataloaders=loader, ckpt_path=resume_path(slot))
    seconds = round(time.perf_counter() - start, 1)
    samples = int(trainer.global_step) * batch_size(ctx)
    log.info("frozen: %s trained on %d images in %.1f s", what, len(dataset), seconds)
    return {f"frozen/{what}_train_seconds": seconds, f"frozen/{what}_train_samples": float(samples)}


def part_metrics(slot: Slot) -> dict[str, float]:
    """The ``frozen/...`` training time and samples a part's ``DONE`` records (empty when unreadable)."""
    try:
        info = json.loads((slot.path / "DONE").read_text())
    except (OSError, ValueError):
        info = {}
    return {k: float(v) for k, v in info.items() if k.startswith("frozen/")}


def record(ctx: PipelineContext, slot: Slot, what: str, trained: bool) -> None:
    """Tag where the part is and whether this job trained or reused it; log its training time and samples."""
    ctx.tracker.set_tags({f"artifact.{what}": str(slot.path), f"frozen.{what}": "trained" if trained else "reused"})
    ctx.tracker.log_metrics(part_metrics(slot))


def parts_record(ctx: PipelineContext) -> dict[str, float]:
    """What the EEG-free parts this job put together cost to train (their ``frozen/...`` metrics), for the model's own
    ``DONE``: a job that reuses the whole model still logs them (:func:`regionaldiff.steps.finetune.finetune`)."""
    info: dict[str, float] = {}
    for what in ("frozen_unet", "region_controlnet"):
        if what in ctx.slots:
            info.update(part_metrics(ctx.slots[what]))
    return info


def frozen_unet(ctx: PipelineContext, stimuli: TrainingStimuli, image_size: int) -> tuple[dict | None, dict | None]:
    """The trained UNet and adapter of the tiny recipe (trained once, or reused): ``(state_dict, key)``; ``(None,
    None)`` for a pretrained UNet and adapter (SD-1.5)."""
    l_cfg = ctx.typed.ldm
    if not trains_with_unet(l_cfg):
        return None, None
    key = {**base_key(ctx, stimuli, image_size), "train": train_settings(ctx)}
    slot = ctx.slots["frozen_unet"] = ctx.store.slot("frozen_unet", key)
    trained = False
    with slot.lock():
        if not slot.done:
            L.seed_everything(PART_SEED, workers=True)
            cfg = dataclasses.replace(l_cfg, controlnet=None, train_maps=None)
            ldm, codec = build_parts(cfg, ctx, stimuli, image_size)
            assert ldm.adapter is not None
            ldm.unet.requires_grad_(True)
            ldm.adapter.requires_grad_(True)
            ldm.adapter.fit_scale(torch.from_numpy(stimuli.embeddings))
            cache = stimulus_latent_cache(ctx, stimuli, codec, image_size)
            module = EEGFreeModule(ldm, codec, l_cfg.lr, l_cfg.weight_decay, latent_cache=cache)
            dataset = StimulusSet(stimuli.ids, stimuli.images, stimuli.embeddings, None)
            info = fit_part(ctx, slot, module, dataset, "frozen_unet")
            torch.save({"state_dict": ldm.state_dict()}, slot.path / PRIOR_WEIGHTS)
            slot.mark_done({**info, "n_images": len(stimuli.ids)})
            trained = True
        else:
            log.info("frozen: reusing the EEG-free UNet and adapter %s", slot.path)
    record(ctx, slot, "frozen_unet", trained)
    state = torch.load(slot.path / PRIOR_WEIGHTS, map_location="cpu", weights_only=True)["state_dict"]
    return state, key


def build_parts(
    cfg: LDMConfig, ctx: PipelineContext, stimuli: TrainingStimuli, image_size: int, prior: dict | None = None
) -> tuple[RegionalLDM, LatentCodec]:
    """The LDM of ``cfg`` for the training stimuli's embeddings and the map format the encoder predicts."""
    from regionaldiff.components import build_codec

    codec = build_codec(cfg.latent)
    dm = ctx.datamodule
    ldm = build_ldm(
        cfg,
        latent_channels=codec.latent_channels,
        code_len=1,
        code_dim=1,
        num_classes=int(dm.num_classes),
        image_size=image_size,
        latent_size=image_size // codec.downsample,
        num_region_labels=int(dm.num_region_labels),
        embedding_dim=int(stimuli.embeddings.shape[1]),
        prior=prior,
    )
    return ldm, codec


def region_controlnet(
    ctx: PipelineContext,
    stimuli: TrainingStimuli,
    image_size: int,
    prior: dict | None,
    prior_key: dict | None,
    region_grid: int,
) -> dict:
    """The ControlNet trained once on the training images and their true region maps (UNet and adapter frozen), or
    reused: its state dict."""
    l_cfg = ctx.typed.ldm
    dm = ctx.datamodule
    maps = dm.stimulus_region_maps(stimuli.ids)
    key = {
        **base_key(ctx, stimuli, image_size),
        "frozen_unet": prior_key,
        "maps": content_hash(stimuli.ids, maps),
        "region_grid": int(region_grid),
        "num_region_labels": int(dm.num_region_labels),
        "controlnet": plain(ctx.cfg.ldm.controlnet),
        "train": train_settings(ctx),
    }
    slot = ctx.slots["region_controlnet"] = ctx.store.slot("region_controlnet", key)
    trained = False
    with slot.lock():
        if not slot.done:
            L.seed_everything(PART_SEED, workers=True)
            ldm, codec = build_parts(l_cfg, ctx, stimuli, image_size, prior)
            assert ldm.adapter is not None and ldm.controlnet is not None
            if prior is None:  # a pretrained adapter: its embedding scale from the training images
                ldm.adapter.fit_scale(torch.from_numpy(stimuli.embeddings))
            cache = stimulus_latent_cache(ctx, stimuli, codec, image_size)
            module = EEGFreeModule(
                ldm, codec, l_cfg.lr, l_cfg.weight_decay, int(dm.num_region_labels), region_grid, cache
            )
            dataset = StimulusSet(stimuli.ids, stimuli.images, stimuli.embeddings, maps)
            info = fit_part(ctx, slot, module, dataset, "region_controlnet")
            torch.save({"state_dict": ldm.controlnet.state_dict()}, slot.path / CONTROLNET_WEIGHTS)
            slot.mark_done({**info, "n_images": len(stimuli.ids)})
            trained = True
        else:
            log.info("frozen: reusing the EEG-free region ControlNet %s", slot.path)
    record(ctx, slot, "region_controlnet", trained)
    return torch.load(slot.path / CONTROLNET_WEIGHTS, map_location="cpu", weights_only=True)["state_dict"]


def frozen_model(
    ctx: PipelineContext, encoder: EEGEncoder, embeddings: ImageEmbeddings, image_size: int
) -> tuple[RegionalLDM, LatentCodec]:
    """The frozen recipe's LDM for ``encoder``: the EEG-free parts (trained once, or reused) put together. Nothing in
    it is trained on EEG; the encoder only sets the embedding width and the map format it predicts."""
    l_cfg = ctx.typed.ldm
    stimuli = training_stimuli(ctx, embeddings)
    if stimuli.embeddings.shape[1] != encoder.align_dim:
        raise RuntimeError(
            f"The image embeddings are {stimuli.embeddings.shape[1]}-d but the encoder's alignment head predicts "
            f"{encoder.align_dim}-d ones: pretrain the encoder with the same encoder.align."
        )
    prior, prior_key = frozen_unet(ctx, stimuli, image_size)
    controlnet = None
    if l_cfg.regions:
        controlnet = region_controlnet(ctx, stimuli, image_size, prior, prior_key, encoder.region_grid)
    ldm, codec = build_ldm_and_codec(l_cfg, encoder, image_size, prior=prior)
    assert ldm.adapter is not None
    if prior is None:
        ldm.adapter.fit_scale(torch.from_numpy(stimuli.embeddings))
    if controlnet is not None:
        assert ldm.controlnet is not None
        ldm.controlnet.load_state_dict(controlnet)
    return ldm, codec
