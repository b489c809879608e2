"""Step ``evaluate``: metrics of the reconstructions -> ``metrics.json`` in the job folder and MLflow.

The configured suite (``eval.metrics``), the EEG classification head's accuracy, the known-truth metrics where
the dataset has true region maps, and the region alignment of reconstructions where the region-map generator can
segment new images. Also scores a folder of images against another (``regionaldiff evaluate GEN REF``).
"""

from __future__ import annotations

import logging

import numpy as np

from regionaldiff.errors import ConfigError
from regionaldiff.steps.context import PipelineContext
from regionaldiff.steps.generate import GENERATED_FILE
from regionaldiff.tracking.mlflow_run import write_metrics_json

log = logging.getLogger(__name__)


def eeg_top1(arrays: dict[str, np.ndarray], w_cls: float) -> tuple[dict[str, float], dict[str, str]]:
    """``eval/eeg_top1`` (the classification head's accuracy on the test trials), or skipped with the reason when
    that head was never trained (``encoder.w_cls=0``): its argmax would be a random network's."""
    if w_cls > 0:
        return {"eval/eeg_top1": float((arrays["eeg_pred"] == arrays["labels"]).mean())}, {}
    return {}, {"eval/eeg_top1": "the classification head is untrained (encoder.w_cls=0)"}


def background_bias(ctx: PipelineContext) -> float:
    """The region head's fitted background bias (0 when uncalibrated, or without a region head)."""
    import torch

    from regionaldiff.steps.pretrain import ENCODER_FILE

    saved = torch.load(ctx.slots["pretrain"].path / ENCODER_FILE, map_location="cpu", weights_only=True)
    bias = saved["state_dict"].get("region_background_bias")
    return float(bias) if bias is not None else 0.0


def evaluate(ctx: PipelineContext, train: bool = True) -> None:
    """Metrics of the reconstructions: the configured suite, plus known-truth metrics where the dataset has them."""
    from regionaldiff.evaluation.alignment import reconstruction_alignment
    from regionaldiff.evaluation.known_truth import region_and_class_metrics
    from regionaldiff.evaluation.suite import evaluate_images

    arrays = dict(np.load(ctx.slots["generate"].path / GENERATED_FILE))
    result = evaluate_images(arrays["generated"], arrays["reference"], cfg=ctx.cfg.eval)
    metrics, skipped = dict(result.metrics), dict(result.skipped)
    top1, top1_skipped = eeg_top1(arrays, ctx.typed.encoder.w_cls)
    metrics.update(top1)
    skipped.update(top1_skipped)
    known, known_skipped = region_and_class_metrics(
        arrays, ctx.datamodule, ctx.store, ctx.keys["prepare"]["dataset"], background_bias(ctx)
    )
    metrics.update(known)
    skipped.update(known_skipped)
    aligned, aligned_skipped = reconstruction_alignment(
        ctx.regionmap, arrays["generated"], arrays.get("region_maps"), arrays["labels"], ctx.datamodule.num_classes
    )
    metrics.update(aligned)
    skipped.update(aligned_skipped)
    report_metrics(ctx, metrics, skipped)


def report_metrics(ctx: PipelineContext, metrics: dict[str, float], skipped: dict[str, str]) -> None:
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
        raise ConfigError("Folder evaluation needs both eval.generated_dir and eval.reference_dir.")
    ctx.tracker.set_tags(
        {
            "regionaldiff.mode": "folder evaluation",
            "eval.generated_dir": generated_dir,
            "eval.reference_dir": reference_dir,
        }
    )
    result = evaluate_folders(generated_dir, reference_dir, ctx.cfg.eval)
    report_metrics(ctx, dict(result.metrics), dict(result.skipped))
