"""The step runner of EEG-RegionalDiff: prepare -> pretrain -> finetune -> generate -> evaluate (:mod:`regionaldiff.steps`).

Each step's output is an artifact keyed by the config it depends on (:mod:`regionaldiff.artifacts`):

============  =====================================================================
step          artifact key
============  =====================================================================
prepare       dataset config (minus loader settings) + regionmap config
pretrain      prepare key + encoder config + seed
finetune      pretrain key + ldm config (minus sampling) + seed; the frozen recipe also trains (once) or reuses
              its EEG-free parts, keyed without subject, encoder, EEG or seed (:mod:`regionaldiff.steps.frozen`)
generate      finetune key + ldm.sampling + pipeline.test_maps (+ pipeline.eval_split unless test)
evaluate      (per job) generate key + eval config -> ``metrics.json`` in the job folder
============  =====================================================================
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from regionaldiff.artifacts import ArtifactStore, disk_full_error, is_disk_full
from regionaldiff.config import Step, TypedConfig
from regionaldiff.data.base import EEGDataModule
from regionaldiff.errors import ConfigError, UserError, one_line
from regionaldiff.maps.base import RegionMapGenerator
from regionaldiff.preflight import format_report, instantiate, require_ready
from regionaldiff.steps.context import PipelineContext
from regionaldiff.steps.evaluate import evaluate, evaluate_folder_pair
from regionaldiff.steps.finetune import finetune
from regionaldiff.steps.generate import generate
from regionaldiff.steps.prepare import prepare
from regionaldiff.steps.pretrain import pretrain
from regionaldiff.tracking.mlflow_run import JobTracker

log = logging.getLogger(__name__)

StepFn = Callable[[PipelineContext, bool], None]

# the steps in the order they run
STEPS: dict[Step, StepFn] = {
    Step.prepare: prepare,
    Step.pretrain: pretrain,
    Step.finetune: finetune,
    Step.generate: generate,
    Step.evaluate: evaluate,
}


def startup_problems(cfg: DictConfig) -> list[str]:
    """Why the run of ``cfg`` cannot start, found without running anything (empty: it can): the preflight's
    problems (the config's check, every file and weight it reads, metrics). A sweep runs this for each of its jobs
    before the first starts (:func:`regionaldiff.sweeps.plan.check_sweep`)."""
    from regionaldiff.preflight import preflight

    try:
        report = preflight(cfg)
    except UserError as err:
        return [one_line(str(err))]
    return [] if report.ready else [report.summary()]


def build_context(cfg: DictConfig, typed: TypedConfig, tracker: JobTracker) -> PipelineContext:
    """Instantiate the dataset and regionmap of the checked config and check every file the run reads, before
    any work starts (nothing in ``cfg`` is checked again: ``typed`` is its checked form)."""
    if typed.trainer.num_threads:
        torch.set_num_threads(typed.trainer.num_threads)
    datamodule = instantiate(cfg.dataset, "dataset")
    if not isinstance(datamodule, EEGDataModule):
        raise ConfigError(f"dataset._target_ must build an EEGDataModule; got {type(datamodule).__name__}.")
    # every file the run reads is there and readable, before any cache, weights or model is touched
    report = require_ready(cfg, datamodule, typed)
    log.info("preflight:\n%s", format_report(report))
    regionmap = instantiate(cfg.regionmap, "regionmap")
    if not isinstance(regionmap, RegionMapGenerator):
        raise ConfigError(f"regionmap._target_ must build a RegionMapGenerator; got {type(regionmap).__name__}.")
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    store = ArtifactStore(cfg.paths.artifact_dir)
    return PipelineContext(cfg, typed, datamodule, regionmap, tracker, store, output_dir)


def disk_full(ctx: PipelineContext, step: Step, err: OSError) -> UserError | None:
    """A step's full disk (``ENOSPC`` anywhere in ``err``'s chain) as one line naming the folder it was writing (the
    file's, else the step's artifact folder, the cache folder or the job folder) and the free space; None for any other error. Nothing half-written is
    marked complete (:meth:`regionaldiff.artifacts.Slot.mark_done` comes last), so the same command resumes."""
    if isinstance(err, UserError) or not is_disk_full(err):
        return None
    filename = getattr(err, "filename", None)
    slot = ctx.slots.get(step.value)
    if filename:
        folder = Path(filename).parent
    elif slot is not None:
        folder = slot.path
    else:  # prepare writes the dataset and region-map caches; evaluate the job folder
        folder = Path(ctx.cfg.paths.cache_dir) if step == Step.prepare else ctx.output_dir
    return disk_full_error(folder, f"the {step.value} step's output")


def run_pipeline(cfg: DictConfig, typed: TypedConfig, tracker: JobTracker) -> dict[str, float]:
    """Run ``cfg.pipeline.steps`` in order (``typed``: ``cfg`` checked, :func:`regionaldiff.validation.validate`);
    return the final metrics."""
    ctx = build_context(cfg, typed, tracker)
    tracker.log_config(cfg, ctx.output_dir)
    test_maps = ctx.typed.pipeline.test_maps.value
    tracker.set_tags(
        {"regionaldiff.test_maps": test_maps, "regionaldiff.eval_split": ctx.typed.pipeline.eval_split.value}
    )
    if cfg.get("ablation_arm"):
        tracker.set_tags({"regionaldiff.ablation_arm": str(cfg.ablation_arm)})
    if test_maps == "oracle":
        tracker.set_tags(
            {"regionaldiff.analysis_only": "oracle region maps at test time (not a valid reconstruction result)"}
        )
    wanted = list(ctx.typed.pipeline.steps)
    if typed.eval.folder_pair:
        if wanted != [Step.evaluate]:
            raise ConfigError(
                "eval.generated_dir/eval.reference_dir score a folder of images: run them with "
                "pipeline.steps=[evaluate] (or `regionaldiff evaluate GENERATED_DIR REFERENCE_DIR`)."
            )
        evaluate_folder_pair(ctx)
        return ctx.metrics
    order = list(STEPS)
    for step, fn in STEPS.items():
        run_this = step in wanted
        # later steps need the artifacts of earlier ones: load them (trained only when asked for)
        if run_this or any(s in wanted for s in order[order.index(step) + 1 :]):
            start = time.perf_counter()
            try:
                fn(ctx, run_this)
            except OSError as err:  # a full disk: one line naming the folder (anything else keeps its traceback)
                full = disk_full(ctx, step, err)
                if full is None:
                    raise
                raise full from err
            tracker.log_metrics({f"time/{step.value}_s": time.perf_counter() - start})
    return ctx.metrics


def run_job(cfg: DictConfig, state: dict[str, Any] | None = None) -> float | None:
    """One job: check ``cfg`` (once: :func:`regionaldiff.validation.validate`), open its MLflow run, run the pipeline,
    print where the results are; return the job's objective (``eval/recon_region_miou``). ``state`` (a sweep's job)
    receives the tracker, so that the sweep can record a failure on the job's own run; without it (a single run) a
    failure's reason goes on the run here."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from regionaldiff.errors import failure_reason
    from regionaldiff.tracking.mlflow_run import (
        CONFIG_TAG,
        dashboard_url,
        job_config_hash,
        require_tracking_server,
        resolve_tracking_uri,
    )
    from regionaldiff.validation import validate

    fingerprint = job_config_hash(cfg)  # as composed, before any step adds to it: what a sweep's rerun compares
    # every check runs before anything is created (no MLflow run, no folder) on a bad config
    typed = validate(cfg)
    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    overrides = list(hc.overrides.task)
    uri = resolve_tracking_uri(typed.logger.tracking_uri, cfg.paths.output_root)
    if typed.logger.enabled:
        require_tracking_server(uri)  # a server that is not there at the start: one line, before any work
    run_name = " ".join(overrides) or "default"
    tracker = JobTracker(
        enabled=bool(typed.logger.enabled),
        tracking_uri=uri,
        experiment_name=str(typed.logger.experiment_name),
        artifact_root=Path(cfg.paths.output_root) / "mlartifacts",
        run_name=run_name if not multirun else f"#{hc.job.num} {run_name}",
        sweep_dir=str(Path(hc.sweep.dir).resolve()) if multirun else None,
        job_dir=Path(cfg.paths.output_dir),
        tags={CONFIG_TAG: fingerprint},
    )
    if state is not None:
        state["tracker"] = tracker
    tracker.set_tags({"overrides": " ".join(overrides) or "(none)", "output_dir": str(cfg.paths.output_dir)})
    try:
        metrics = run_pipeline(cfg, typed, tracker)
    except BaseException as err:
        if state is None:  # a single run: its reason goes on the run; a sweep's job records its failure itself
            tracker.fail(failure_reason(err), status="KILLED" if isinstance(err, KeyboardInterrupt) else "FAILED")
        elif isinstance(err, KeyboardInterrupt | SystemExit):
            tracker.fail(failure_reason(err), status="KILLED")
        raise
    tracker.finish("FINISHED")
    out = Path(cfg.paths.output_dir)
    lines = [f"Done. Results in {out}"]
    if (out / "metrics.json").is_file():
        lines.append(f"  metrics:         {out / 'metrics.json'}")
    if (out / "reconstructions.png").is_file():
        lines.append(f"  reconstructions: {out / 'reconstructions.png'}")
    if tracker.enabled:
        local = not uri.startswith(("http://", "https://"))
        lines.append(f"  MLflow run {tracker.run_id}" + (": start the dashboard with" if local else ""))
        if local:
            lines.append(f"    mlflow ui --backend-store-uri {uri}")
        lines.append(f"  then open the runs: {dashboard_url(uri, tracker.experiment_id)}")
        lines.append(f"         or this run: {dashboard_url(uri, tracker.experiment_id, tracker.run_id)}")
    print("\n".join(lines), flush=True)
    return metrics.get("eval/recon_region_miou")
