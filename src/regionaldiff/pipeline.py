"""The EEG-RegionalDiff pipeline: prepare -> pretrain -> finetune -> generate -> evaluate.

Each step's output is an artifact keyed by the config it depends on (:mod:`regionaldiff.artifacts`):

============  =====================================================================
step          artifact key
============  =====================================================================
prepare       dataset config (minus loader settings) + maskmap config
pretrain      prepare key + encoder config + seed
finetune      pretrain key + ldm config (minus sampling) + seed
generate      finetune key + ldm.sampling + pipeline.test_maps
evaluate      (per job) generate key + eval config -> ``metrics.json`` in the job folder
============  =====================================================================
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from omegaconf import DictConfig
from tqdm.auto import tqdm

from regionaldiff.artifacts import ArtifactStore, Slot
from regionaldiff.config import Step, plain, validate
from regionaldiff.data.base import SPLITS, EEGDataModule, check_no_stimulus_leak, tensor_to_image
from regionaldiff.encoder.mae import EEGMaskedAutoencoder, coarse_region_target
from regionaldiff.encoder.module import EncoderPretrainModule
from regionaldiff.errors import ConfigError
from regionaldiff.ldm.conditioning import fuse_class_into_map
from regionaldiff.ldm.latent import build_codec
from regionaldiff.ldm.model import RegionalLDM, build_ldm
from regionaldiff.ldm.module import LDMFinetuneModule
from regionaldiff.preflight import format_report, instantiate, require_ready
from regionaldiff.tracking.mlflow_run import JobTracker, write_metrics_json
from regionaldiff.visualize import save_reconstruction_grid, save_stimulus_grid

log = logging.getLogger(__name__)

# dataset keys that change how data is loaded or checked, never the data itself (left out of artifact keys)
LOADER_KEYS = ("batch_size", "num_workers", "cache_dir", "cache_verify")


@dataclass
class PipelineContext:
    """Everything the steps share: config, typed config, datamodule, tracker, artifact store."""

    cfg: DictConfig
    typed: dict[str, Any]
    datamodule: EEGDataModule
    maskmap: Any
    tracker: JobTracker
    store: ArtifactStore
    output_dir: Path
    keys: dict[str, dict] = field(default_factory=dict)
    slots: dict[str, Slot] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        accel = self.typed["trainer"].accelerator.value
        if accel == "gpu" or (accel == "auto" and torch.cuda.is_available()):
            return torch.device("cuda")
        return torch.device("cpu")


# -- set-up -------------------------------------------------------------------------------------
def build_context(cfg: DictConfig, tracker: JobTracker) -> PipelineContext:
    """Validate the whole config and instantiate the dataset and maskmap, before any work starts."""
    from regionaldiff.evaluation.suite import validate_eval_config

    typed = validate(cfg)
    validate_eval_config(cfg.eval)
    if typed["trainer"].num_threads:
        torch.set_num_threads(typed["trainer"].num_threads)
    datamodule = instantiate(cfg.dataset, "dataset")
    if not isinstance(datamodule, EEGDataModule):
        raise ConfigError(f"dataset._target_ must build an EEGDataModule; got {type(datamodule).__name__}.")
    # every file the run reads is there and readable, before any cache, weights or model is touched
    report = require_ready(cfg, datamodule)
    log.info("preflight:\n%s", format_report(report))
    maskmap = instantiate(cfg.maskmap, "maskmap")
    if typed["ldm"].regions and type(maskmap).__name__ == "NoMaskMap":
        raise ConfigError(
            f"ldm={typed['ldm'].name} conditions on region maps, but maskmap=none gives none. "
            "Use a global variant (ldm=global) or a mask-map generator (maskmap=oracle|slic|sam)."
        )
    if typed["ldm"].regions and typed["encoder"].w_region == 0:
        raise ConfigError(
            f"ldm={typed['ldm'].name} conditions on region maps predicted from EEG, but encoder.w_region=0 leaves the "
            "region head untrained. Set encoder.w_region > 0, or use a global variant (ldm=global)."
        )
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    return PipelineContext(cfg, typed, datamodule, maskmap, tracker, ArtifactStore(cfg.paths.artifact_dir), output_dir)


def run_pipeline(cfg: DictConfig, tracker: JobTracker) -> dict[str, float]:
    """Run ``cfg.pipeline.steps`` in order; return the final metrics."""
    ctx = build_context(cfg, tracker)
    tracker.log_config(cfg, ctx.output_dir)
    tracker.set_tags({"regionaldiff.test_maps": ctx.typed["pipeline"].test_maps.value})
    if cfg.get("ablation_arm"):
        tracker.set_tags({"regionaldiff.ablation_arm": str(cfg.ablation_arm)})
    if ctx.typed["pipeline"].test_maps.value == "oracle":
        tracker.set_tags(
            {"regionaldiff.analysis_only": "oracle region maps at test time (not a valid reconstruction result)"}
        )
    wanted = [s.value for s in ctx.typed["pipeline"].steps]
    if cfg.eval.get("generated_dir") or cfg.eval.get("reference_dir"):
        if wanted != [Step.evaluate.value]:
            raise ConfigError(
                "eval.generated_dir/eval.reference_dir score a folder of images: run them with pipeline.steps=[evaluate] "
                "(or `regionaldiff evaluate GENERATED_DIR REFERENCE_DIR`)."
            )
        evaluate_folder_pair(ctx)
        return ctx.metrics
    steps = {
        Step.prepare.value: prepare,
        Step.pretrain.value: pretrain,
        Step.finetune.value: finetune,
        Step.generate.value: generate,
        Step.evaluate.value: evaluate,
    }
    for name, fn in steps.items():
        run_this = name in wanted
        # later steps need the artifacts of earlier ones: load them (trained only when asked for)
        if run_this or any(s in wanted for s in list(steps)[list(steps).index(name) + 1 :]):
            start = time.perf_counter()
            fn(ctx, train=run_this)
            tracker.log_metrics({f"time/{name}_s": time.perf_counter() - start})
    return ctx.metrics


# -- prepare ------------------------------------------------------------------------------------
def prepare(ctx: PipelineContext, train: bool = True) -> None:
    """Dataset cache, splits, leak checks, region maps."""
    cfg, dm = ctx.cfg, ctx.datamodule
    dataset_key = {k: v for k, v in plain(cfg.dataset).items() if k not in LOADER_KEYS}
    ctx.keys["prepare"] = {"dataset": dataset_key, "maskmap": plain(cfg.maskmap)}
    dm.setup()
    leaks = check_no_stimulus_leak({s: dm.get_split(s).image_ids for s in SPLITS})
    maps = generate_maps(ctx)
    dm.set_region_maps(maps)
    sizes = {f"data/n_{s}": len(dm.get_split(s)) for s in SPLITS}
    ctx.tracker.log_metrics(sizes)
    ctx.tracker.set_tags(
        {
            "data.name": dm.name,
            "data.leak_check": "passed: " + ", ".join(f"{k}={v}" for k, v in leaks.items()),
            **{f"data.{k}": v for k, v in dm.describe().items()},
            **getattr(dm, "run_tags", {}),
        }
    )
    report = getattr(dm, "data_report", {})
    ctx.tracker.log_metrics({f"data/{k}": v for k, v in report.items() if isinstance(v, (int, float))})
    if train:
        ids, images, _ = dm.stimuli("train")
        n = min(16, len(ids))
        grid = save_stimulus_grid(
            ctx.output_dir / "stimuli.png", images[:n], [maps[i] for i in ids[:n]] if maps else None
        )
        ctx.tracker.log_artifact(grid, "figures")
    log.info("prepare: %s", ", ".join(f"{k}={v}" for k, v in sizes.items()))


def generate_maps(ctx: PipelineContext):
    """Region maps of every stimulus from the configured generator (None for ``maskmap=none``).

    Per-image generators (slic, sam) are cached on disk by generator config and image content, and resume
    after an interruption (:func:`regionaldiff.maps.cache.generate_cached`).
    """
    from regionaldiff.maps.cache import generate_cached

    return generate_cached(ctx.maskmap, ctx.datamodule, Path(ctx.cfg.paths.cache_dir) / "maskmaps")


# -- training helpers ---------------------------------------------------------------------------
def _quiet_known_warnings() -> None:
    """Silence Lightning warnings that are expected here and would only confuse users."""
    import warnings

    # the pretrained EEG encoder is frozen in eval mode on purpose while the LDM trains
    warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")
    # small datasets: fewer batches than the logging interval is fine
    warnings.filterwarnings(
        "ignore", message=r"The number of training batches .* is smaller than the logging interval"
    )
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")


def _trainer(ctx: PipelineContext, slot: Slot, max_epochs: int) -> L.Trainer:
    from lightning.pytorch.callbacks import ModelCheckpoint

    _quiet_known_warnings()

    t = ctx.typed["trainer"]
    logger = ctx.tracker.lightning_logger()
    return L.Trainer(
        default_root_dir=str(slot.path),
        max_epochs=max_epochs,
        accelerator=t.accelerator.value,
        devices=t.devices,
        precision=t.precision,
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


def _resume_path(slot: Slot) -> str | None:
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


# -- pretrain -----------------------------------------------------------------------------------
def build_encoder(ctx: PipelineContext) -> EEGMaskedAutoencoder:
    e, dm = ctx.typed["encoder"], ctx.datamodule
    return EEGMaskedAutoencoder(
        n_chans=dm.n_chans,
        n_times=dm.n_times,
        sfreq=dm.sfreq,
        num_classes=dm.num_classes,
        patch_size=e.patch_size,
        embed_dim=e.embed_dim,
        depth=e.depth,
        num_heads=e.num_heads,
        decoder_embed_dim=e.decoder_embed_dim,
        decoder_depth=e.decoder_depth,
        decoder_num_heads=e.decoder_num_heads,
        mlp_ratio=e.mlp_ratio,
        mask_ratio=e.mask_ratio,
        region_grid=e.region_grid if ctx.datamodule.has_region_maps else 0,
        dropout=e.dropout,
    )


def pretrain(ctx: PipelineContext, train: bool = True) -> None:
    """Pretrain the EEG encoder (masked recovery + classification + regions), or reuse the artifact."""
    e = ctx.typed["encoder"]
    ctx.keys["pretrain"] = {
        "prepare": ctx.keys["prepare"],
        "encoder": plain(ctx.cfg.encoder),
        "seed": int(ctx.cfg.seed),
    }
    slot = ctx.slots["pretrain"] = ctx.store.slot("pretrain", ctx.keys["pretrain"])
    ctx.tracker.set_tags({"artifact.encoder": str(slot.path)})
    with slot.lock():
        if not slot.done:
            if not train:
                raise RuntimeError(
                    f"No pretrained encoder for this config at {slot.path}: add 'pretrain' to pipeline.steps."
                )
            L.seed_everything(int(ctx.cfg.seed), workers=True)
            model = build_encoder(ctx)
            module = EncoderPretrainModule(model, e.lr, e.weight_decay, e.w_mae, e.w_cls, e.w_region, e.max_epochs)
            trainer = _trainer(ctx, slot, e.max_epochs)
            dm = ctx.datamodule
            trainer.fit(
                module,
                train_dataloaders=dm.train_dataloader(),
                val_dataloaders=dm.val_dataloader(),
                ckpt_path=_resume_path(slot),
            )
            torch.save({"state_dict": model.state_dict(), "region_grid": model.region_grid}, slot.path / "encoder.pt")
            slot.mark_done({k: float(v) for k, v in trainer.callback_metrics.items()})
            log.info("pretrain: encoder saved to %s", slot.path / "encoder.pt")
        else:
            log.info("pretrain: reusing encoder %s", slot.path)
    ctx.tracker.set_tags({"checkpoint.encoder": str(slot.path / "encoder.pt")})


def load_encoder(ctx: PipelineContext) -> EEGMaskedAutoencoder:
    saved = torch.load(ctx.slots["pretrain"].path / "encoder.pt", map_location="cpu", weights_only=True)
    model = build_encoder(ctx)
    model.load_state_dict(saved["state_dict"])
    return model.eval()


# -- finetune -----------------------------------------------------------------------------------
def build_model(ctx: PipelineContext, encoder: EEGMaskedAutoencoder) -> tuple[RegionalLDM, torch.nn.Module]:
    cfg_ldm = plain(ctx.cfg.ldm)
    codec = build_codec(cfg_ldm["latent"])
    size = ctx.datamodule.image_size
    if size % codec.downsample:
        raise ValueError(f"dataset.image_size={size} is not divisible by the latent downsampling {codec.downsample}.")
    if ctx.typed["ldm"].regions and encoder.region_grid <= 0:
        raise ValueError("The regional LDM needs an encoder with a region head: set encoder.region_grid > 0.")
    ldm = build_ldm(
        cfg_ldm,
        latent_channels=codec.latent_channels,
        code_len=encoder.num_patches,
        code_dim=encoder.embed_dim,
        num_classes=encoder.num_classes,
        image_size=size,
        latent_size=size // codec.downsample,
    )
    return ldm, codec


def finetune(ctx: PipelineContext, train: bool = True) -> None:
    """Fine-tune the LDM on the frozen encoder's codes (and region maps), or reuse the artifact."""
    l_cfg = ctx.typed["ldm"]
    ldm_key = {k: v for k, v in plain(ctx.cfg.ldm).items() if k != "sampling"}
    ctx.keys["finetune"] = {"pretrain": ctx.keys["pretrain"], "ldm": ldm_key, "seed": int(ctx.cfg.seed)}
    slot = ctx.slots["finetune"] = ctx.store.slot("finetune", ctx.keys["finetune"])
    ctx.tracker.set_tags({"artifact.ldm": str(slot.path)})
    encoder = load_encoder(ctx)
    with slot.lock():
        if not slot.done:
            if not train:
                raise RuntimeError(
                    f"No fine-tuned LDM for this config at {slot.path}: add 'finetune' to pipeline.steps."
                )
            L.seed_everything(int(ctx.cfg.seed), workers=True)
            ldm, codec = build_model(ctx, encoder)
            module = LDMFinetuneModule(encoder, ldm, codec, l_cfg.lr, l_cfg.weight_decay, l_cfg.train_maps.value)
            trainer = _trainer(ctx, slot, l_cfg.max_epochs)
            dm = ctx.datamodule
            trainer.fit(
                module,
                train_dataloaders=dm.loader("train", True, l_cfg.batch_size),
                val_dataloaders=dm.loader("val", False, l_cfg.batch_size),
                ckpt_path=_resume_path(slot),
            )
            torch.save({"state_dict": ldm.state_dict()}, slot.path / "ldm.pt")
            slot.mark_done({k: float(v) for k, v in trainer.callback_metrics.items()})
            log.info("finetune: LDM saved to %s", slot.path / "ldm.pt")
        else:
            log.info("finetune: reusing LDM %s", slot.path)
    ctx.tracker.set_tags({"checkpoint.ldm": str(slot.path / "ldm.pt")})


def load_model(ctx: PipelineContext) -> tuple[EEGMaskedAutoencoder, RegionalLDM, torch.nn.Module]:
    encoder = load_encoder(ctx)
    ldm, codec = build_model(ctx, encoder)
    saved = torch.load(ctx.slots["finetune"].path / "ldm.pt", map_location="cpu", weights_only=True)
    ldm.load_state_dict(saved["state_dict"])
    return encoder, ldm.eval(), codec


# -- generate -----------------------------------------------------------------------------------
@torch.no_grad()
def generate(ctx: PipelineContext, train: bool = True) -> None:
    """Reconstruct the test split from EEG (region maps predicted from EEG unless ``test_maps=oracle``)."""
    sampling = ctx.typed["ldm"].sampling
    test_maps = ctx.typed["pipeline"].test_maps.value
    ctx.keys["generate"] = {
        "finetune": ctx.keys["finetune"],
        "sampling": plain(ctx.cfg.ldm.sampling),
        "test_maps": test_maps,
    }
    slot = ctx.slots["generate"] = ctx.store.slot("generate", ctx.keys["generate"])
    out_file = slot.path / "generated.npz"
    with slot.lock():
        if not slot.done:
            if not train:
                raise RuntimeError(
                    f"No reconstructions for this config at {slot.path}: add 'generate' to pipeline.steps."
                )
            arrays = _sample_test_split(ctx, sampling, test_maps)
            np.savez_compressed(out_file, **arrays)
            _write_image_folders(slot.path, arrays)
            slot.mark_done({"n": len(arrays["labels"])})
        else:
            log.info("generate: reusing reconstructions %s", slot.path)
    arrays = dict(np.load(out_file))
    n = min(ctx.typed["pipeline"].grid_size, len(arrays["labels"]))
    maps, map_title = grid_maps(arrays, test_maps, n, ctx.datamodule.image_size)
    grid = save_reconstruction_grid(
        ctx.output_dir / "reconstructions.png",
        arrays["reference"][:n],
        arrays["generated"][:n, 0],
        maps=maps,
        num_labels=ctx.datamodule.num_classes + 1,
        map_title=map_title,
        class_names=list(ctx.datamodule.class_names),
    )
    ctx.tracker.log_artifact(grid, "figures")
    ctx.tracker.set_tags({"artifact.generated": str(slot.path)})


def grid_maps(arrays: dict[str, np.ndarray], test_maps: str, n: int, image_size: int) -> tuple[np.ndarray | None, str]:
    """The region maps shown under the first ``n`` reconstructions, and their row title: the reference maps when
    they conditioned generation (``test_maps=oracle``), else the maps predicted from EEG (None if there are none)."""
    if test_maps == "oracle" and arrays.get("region_maps") is not None and len(arrays["region_maps"]):
        return arrays["region_maps"][:n].astype(np.int64), "true map (oracle)"
    if "region_probs" in arrays:
        from regionaldiff.evaluation.synthetic import upsample_prediction

        return upsample_prediction(arrays["region_probs"][:n], image_size), "map from EEG"
    return None, ""


def _sample_test_split(ctx: PipelineContext, sampling, test_maps: str) -> dict[str, np.ndarray]:
    device = ctx.device
    encoder, ldm, codec = load_model(ctx)
    encoder, ldm, codec = encoder.to(device), ldm.to(device), codec.to(device)
    dm = ctx.datamodule
    size = dm.image_size
    latent_shape = (codec.latent_channels, size // codec.downsample, size // codec.downsample)
    generator = torch.Generator(device=device).manual_seed(int(ctx.cfg.seed))
    out: dict[str, list] = {
        k: [] for k in ("generated", "reference", "labels", "eeg_pred", "region_probs", "image_ids", "region_maps")
    }
    loader = dm.loader("test", False, sampling.batch_size)
    for batch in tqdm(loader, desc="generate (test split)"):
        eeg = batch["eeg"].to(device)
        enc = encoder(eeg)
        context = ldm.conditioner(enc["codes"], enc["class_logits"])
        probs = None
        # an untrained region head (encoder.w_region=0) gives no map: never score or condition on a random network
        if "region_logits" in enc and ctx.typed["encoder"].w_region > 0:
            predicted = enc["region_logits"].softmax(dim=1)
            if sampling.class_fused_maps and ctx.typed["encoder"].w_cls > 0:  # an untrained class head says nothing
                predicted = fuse_class_into_map(predicted, enc["class_logits"].softmax(dim=-1))
            out["region_probs"].append(predicted.half().cpu().numpy())
            probs = predicted
            if test_maps == "oracle":
                if "region_map" not in batch:
                    raise ValueError("pipeline.test_maps=oracle needs reference region maps: set a maskmap.")
                probs = coarse_region_target(
                    batch["region_map"].to(device), encoder.num_classes + 1, encoder.region_grid
                )
        if not ldm.uses_regions:
            probs = None
        samples = []
        for _ in range(sampling.samples_per_eeg):
            latents = ldm.sample(
                context,
                probs,
                latent_shape,
                sampling.num_steps,
                sampling.guidance_scale,
                generator,
                sampling.eta,
                clip_sample=sampling.clip_sample,
                clip_sample_range=sampling.clip_sample_range,
            )
            samples.append(tensor_to_image(codec.decode(latents)))
        out["generated"].append(np.stack(samples, axis=1))
        out["reference"].append(tensor_to_image(batch["image"]))
        out["labels"].append(batch["label"].numpy())
        out["eeg_pred"].append(enc["class_logits"].argmax(-1).cpu().numpy())
        out["image_ids"].append(np.asarray(batch["image_id"]))
        if "region_map" in batch:
            out["region_maps"].append(batch["region_map"].numpy().astype(np.int16))
    return {k: np.concatenate(v) for k, v in out.items() if v}


def _write_image_folders(folder: Path, arrays: dict[str, np.ndarray]) -> None:
    """PNG files ``generated/<trial>_<id>[_s<k>].png`` and ``reference/<trial>_<id>.png`` (for folder evaluation;
    ``_s<k>`` only with several samples per EEG)."""
    from PIL import Image

    for sub in ("generated", "reference"):
        (folder / sub).mkdir(exist_ok=True)
    for i, image_id in enumerate(arrays["image_ids"]):
        stem = f"{i:05d}_{image_id}"
        Image.fromarray(arrays["reference"][i]).save(folder / "reference" / f"{stem}.png")
        samples = arrays["generated"][i]
        for k, sample in enumerate(samples):
            name = f"{stem}.png" if len(samples) == 1 else f"{stem}_s{k}.png"
            Image.fromarray(sample).save(folder / "generated" / name)


# -- evaluate -----------------------------------------------------------------------------------
def eeg_top1(arrays: dict[str, np.ndarray], w_cls: float) -> tuple[dict[str, float], dict[str, str]]:
    """``eval/eeg_top1`` (the classification head's accuracy on the test trials), or skipped with the reason when
    that head was never trained (``encoder.w_cls=0``): its argmax would be a random network's."""
    if w_cls > 0:
        return {"eval/eeg_top1": float((arrays["eeg_pred"] == arrays["labels"]).mean())}, {}
    return {}, {"eval/eeg_top1": "the classification head is untrained (encoder.w_cls=0)"}


def evaluate(ctx: PipelineContext, train: bool = True) -> None:
    """Metrics of the reconstructions: the configured suite, plus known-truth metrics where the dataset has them."""
    from regionaldiff.evaluation.alignment import reconstruction_alignment
    from regionaldiff.evaluation.suite import evaluate_images
    from regionaldiff.evaluation.synthetic import region_and_class_metrics

    arrays = dict(np.load(ctx.slots["generate"].path / "generated.npz"))
    result = evaluate_images(arrays["generated"], arrays["reference"], cfg=ctx.cfg.eval, labels=arrays["labels"])
    metrics, skipped = dict(result.metrics), dict(result.skipped)
    top1, top1_skipped = eeg_top1(arrays, ctx.typed["encoder"].w_cls)
    metrics.update(top1)
    skipped.update(top1_skipped)
    known, known_skipped = region_and_class_metrics(ctx, arrays)
    metrics.update(known)
    skipped.update(known_skipped)
    aligned, aligned_skipped = reconstruction_alignment(
        ctx.maskmap, arrays["generated"], arrays.get("region_maps"), arrays["labels"], ctx.datamodule.num_classes
    )
    metrics.update(aligned)
    skipped.update(aligned_skipped)
    _report_metrics(ctx, metrics, skipped)


def _report_metrics(ctx: PipelineContext, metrics: dict[str, float], skipped: dict[str, str]) -> None:
    """``metrics.json`` in the job folder, MLflow metrics and ``skipped.*`` tags, and the log."""
    ctx.metrics.update(metrics)
    ctx.skipped.update(skipped)
    write_metrics_json(ctx.output_dir / "metrics.json", metrics, skipped)
    ctx.tracker.log_metrics(metrics)
    ctx.tracker.set_tags({f"skipped.{k}": v for k, v in skipped.items()})
    ctx.tracker.log_artifact(ctx.output_dir / "metrics.json")
    for name, reason in skipped.items():
        log.warning("metric %s skipped: %s", name, reason)
    log.info("metrics: %s", ", ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items())))


def evaluate_folder_pair(ctx: PipelineContext) -> None:
    """Score ``eval.generated_dir`` against ``eval.reference_dir`` (e.g. another method's outputs)."""
    from regionaldiff.evaluation.folders import evaluate_folders

    generated_dir, reference_dir = ctx.cfg.eval.get("generated_dir"), ctx.cfg.eval.get("reference_dir")
    if not generated_dir or not reference_dir:
        raise ValueError("Folder evaluation needs both eval.generated_dir and eval.reference_dir.")
    ctx.tracker.set_tags(
        {
            "regionaldiff.mode": "folder evaluation",
            "eval.generated_dir": generated_dir,
            "eval.reference_dir": reference_dir,
        }
    )
    result = evaluate_folders(generated_dir, reference_dir, ctx.cfg.eval)
    _report_metrics(ctx, dict(result.metrics), dict(result.skipped))
