"""The step runner of EEG-RegionalDiff: prepare -> pretrain -> finetune -> generate -> evaluate (:mod:`regionaldiff.steps`).

Each step's output is an artifact keyed by the config it depends on (:mod:`regionaldiff.artifacts`):

============  =====================================================================
step          artifact key
============  =====================================================================
prepare       dataset config (minus loader settings) + regionmap config
pretrain      prepare key + encoder config + seed
finetune      pretrain key + ldm config (minus sampling) + seed
generate      finetune key + ldm.sampling + pipeline.test_maps (+ pipeline.eval_split unless test)
evaluate      (per job) generate key + eval config -> ``metrics.json`` in the job folder
============  =====================================================================
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

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
from regionaldiff.validation import validate

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


def check_region_settings(typed: TypedConfig, produces_maps: bool) -> None:
    """An LDM that conditions on region maps needs a region-map generator and a trained region head."""
    if typed.ldm.regions and not produces_maps:
        raise ConfigError(
            f"ldm={typed.ldm.name} conditions on region maps, but regionmap=none gives none. "
            "Use a global variant (ldm=global) or a region-map generator (regionmap=oracle|slic|sam)."
        )
    if typed.ldm.regions and typed.encoder.w_region == 0:
        raise ConfigError(
            f"ldm={typed.ldm.name} conditions on region maps predicted from EEG, but encoder.w_region=0 leaves the "
            "region head untrained. Set encoder.w_region > 0, or use a global variant (ldm=global)."
        )


def startup_problems(cfg: DictConfig) -> list[str]:
    """Why the run of ``cfg`` cannot start, found without running anything (empty: it can): the preflight (config
    values, every file and weight it reads, metrics) and the combination of settings :func:`build_context` checks.
    A sweep runs this for each of its jobs before the first starts (:func:`regionaldiff.cli.check_sweep`)."""
    from hydra.utils import get_class

    from regionaldiff.preflight import preflight

    report = preflight(cfg)
    problems = [] if report.ready else [report.summary()]
    try:
        typed = validate(cfg)
        produces_maps = bool(getattr(get_class(str(cfg.regionmap._target_)), "produces_maps", True))
        check_region_settings(typed, produces_maps)
    except ConfigError as err:
        text = one_line(str(err))
        if not any(text in p for p in problems):
            problems.append(text)
    except Exception as err:  # noqa: BLE001 - e.g. a _target_ that cannot be imported
        problems.append(one_line(f"{type(err).__name__}: {err}"))
    return problems


def build_context(cfg: DictConfig, tracker: JobTracker) -> PipelineContext:
    """Validate the whole config and instantiate the dataset and regionmap, before any work starts."""
    from regionaldiff.evaluation.suite import validate_eval_config

    typed = validate(cfg)
    validate_eval_config(cfg.eval)
    if typed.trainer.num_threads:
        torch.set_num_threads(typed.trainer.num_threads)
    datamodule = instantiate(cfg.dataset, "dataset")
    if not isinstance(datamodule, EEGDataModule):
        raise ConfigError(f"dataset._target_ must build an EEGDataModule; got {type(datamodule).__name__}.")
    # every file the run reads is there and readable, before any cache, weights or model is touched
    report = require_ready(cfg, datamodule)
    log.info("preflight:\n%s", format_report(report))
    regionmap = instantiate(cfg.regionmap, "regionmap")
    if not isinstance(regionmap, RegionMapGenerator):
        raise ConfigError(f"regionmap._target_ must build a RegionMapGenerator; got {type(regionmap).__name__}.")
    check_region_settings(typed, regionmap.produces_maps)
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


def run_pipeline(cfg: DictConfig, tracker: JobTracker) -> dict[str, float]:
    """Run ``cfg.pipeline.steps`` in order; return the final metrics."""
    ctx = build_context(cfg, tracker)
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
    if cfg.eval.get("generated_dir") or cfg.eval.get("reference_dir"):
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
