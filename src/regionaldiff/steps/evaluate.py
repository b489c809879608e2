"""Step ``evaluate``: metrics of the reconstructions -> ``metrics.json`` in the job folder and MLflow.

The configured suite (``eval.metrics``; with ``retrieval``, the zero-shot retrieval of the evaluated split's images
from the encoder's aligned EEG embedding), the EEG classification head's accuracy, the known-truth metrics where
the dataset has true region maps, and the region alignment of reconstructions where the region-map generator can
segment new images. A metric that cannot mean anything on the evaluated split is skipped with the reason: class
accuracy over concepts never seen in training, and region scores whose labels are such concepts (zero-shot splits;
``dataset.region_labels=layout`` keeps the region scores meaningful there). Also scores a folder of images against
another (``regionaldiff evaluate GEN REF``).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np

from regionaldiff.errors import ConfigError
from regionaldiff.steps.context import PipelineContext
from regionaldiff.steps.generate import GENERATED_FILE
from regionaldiff.tracking.mlflow_run import write_metrics_json

if TYPE_CHECKING:
    from regionaldiff.config import EvalConfig
    from regionaldiff.encoder.alignment import ImageEmbeddings
    from regionaldiff.encoder.base import EEGEncoder

log = logging.getLogger(__name__)


def eeg_top1(
    arrays: dict[str, np.ndarray], w_cls: float, unseen: str | None = None
) -> tuple[dict[str, float], dict[str, str]]:
    """``eval/eeg_top1`` (the classification head's accuracy on the test trials), or skipped with the reason when
    that head was never trained (``encoder.w_cls=0``: its argmax would be a random network's) or when the split's
    classes never appear in training (``unseen``, the reason: the head cannot name them). Unseen classes come first:
    that reason holds whatever ``w_cls`` is (the zero-shot presets train no class head either)."""
    if unseen:
        return {}, {"eval/eeg_top1": unseen}
    if w_cls <= 0:
        return {}, {"eval/eeg_top1": "the classification head is untrained (encoder.w_cls=0)"}
    return {"eval/eeg_top1": float((arrays["eeg_pred"] == arrays["labels"]).mean())}, {}


def unseen_classes(ctx: PipelineContext, split: str) -> str | None:
    """Why class scores on ``split`` mean nothing (its classes never appear in the training split, as THINGS-EEG2's
    zero-shot test concepts), or None when every class of ``split`` is a training class."""
    dm = ctx.datamodule
    seen = set(np.unique(dm.get_split("train").labels).tolist())
    labels = set(np.unique(dm.get_split(split).labels).tolist())
    missing = labels - seen
    if not missing:
        return None
    return (
        f"{len(missing)} of the {len(labels)} classes of the {split} split never appear in training (zero-shot "
        "concepts): a classifier cannot name them; eval/retrieval_top* scores this split"
    )


def aligned_encoder(ctx: PipelineContext) -> tuple[EEGEncoder, ImageEmbeddings] | str:
    """The run's encoder (on the run's device) and the stimuli's image embeddings, or why it has no aligned
    embedding."""
    from regionaldiff.encoder.alignment import ImageEmbeddings
    from regionaldiff.steps.pretrain import load_encoder

    encoder = load_encoder(ctx)
    if encoder.align_dim <= 0 or "image_embeddings" not in ctx.slots:
        return (
            "the encoder has no EEG embedding aligned to images: choose encoder/align=clip (a local CLIP folder; the "
            "things_* experiments do) or encoder/align=pixels (weight-free, synthetic benchmark)"
        )
    return encoder.to(ctx.device), ImageEmbeddings.load(ctx.slots["image_embeddings"].path)


def embed_split(
    ctx: PipelineContext, encoder: EEGEncoder, images: ImageEmbeddings, loader: Any
) -> dict[str, np.ndarray]:
    """The suite's retrieval inputs for the trials ``loader`` yields: each trial's aligned EEG embedding, the distinct
    stimuli's image embeddings (the candidates) and each trial's candidate row."""
    from regionaldiff.evaluation.retrieval import candidates_and_targets, embed_trials

    eeg, ids = embed_trials(encoder, loader, ctx.device)
    candidates, targets = candidates_and_targets(ids)
    return {"eeg_embeddings": eeg, "image_embeddings": images.lookup(candidates).numpy(), "retrieval_targets": targets}


def retrieval_curve(
    ctx: PipelineContext,
    split: str,
    aligned: tuple[EEGEncoder, ImageEmbeddings],
    repetitions: list[int],
    ks: list[int],
) -> tuple[dict[str, float], dict[str, str]]:
    """``eval/retrieval_top{k}_reps{n}``: retrieval with each stimulus's EEG averaged over its first ``n`` repetitions
    (``eval.retrieval.repetitions``; NICE/ATM's curve), plotted in ``retrieval_repetitions.png``."""
    from torch.utils.data import DataLoader

    from regionaldiff.data.base import EEGImageDataset
    from regionaldiff.evaluation.retrieval import retrieval_scores

    metrics: dict[str, float] = {}
    n_candidates = 0
    for n in repetitions:
        try:
            averaged = ctx.datamodule.averaged_split(split, n)
        except NotImplementedError as err:
            return {}, {f"eval/retrieval_top{k}_reps{n}": str(err) for n in repetitions for k in ks}
        inputs = embed_split(
            ctx, *aligned, DataLoader(EEGImageDataset(averaged), batch_size=ctx.datamodule.batch_size)
        )
        n_candidates = len(inputs["image_embeddings"])
        scores = retrieval_scores(
            inputs["eeg_embeddings"], inputs["image_embeddings"], inputs["retrieval_targets"], ks
        )
        metrics.update({f"{k}_reps{n}": v for k, v in scores.items() if k != "eval/retrieval_2way"})
    from regionaldiff.visualize import save_retrieval_curve

    figure = save_retrieval_curve(ctx.output_dir / "retrieval_repetitions.png", metrics, n_candidates)
    ctx.tracker.log_artifact(figure, "figures")
    return metrics, {}


def zero_shot_retrieval(
    ctx: PipelineContext, split: str, eval_cfg: EvalConfig
) -> tuple[dict[str, np.ndarray], dict[str, float], dict[str, str]]:
    """For ``eval.metrics: [retrieval, ...]``: the suite's retrieval inputs on ``split`` and the repetitions curve's
    metrics; or, without an aligned EEG embedding, no inputs and every retrieval metric skipped with the reason."""
    from regionaldiff.evaluation.suite import retrieval_ks, skip_names

    if "retrieval" not in eval_cfg.metrics:
        return {}, {}, {}
    ks = retrieval_ks(eval_cfg)
    repetitions = [int(n) for n in eval_cfg.retrieval.repetitions or []]
    aligned = aligned_encoder(ctx)
    if isinstance(aligned, str):
        names = skip_names("retrieval", eval_cfg) + [f"eval/retrieval_top{k}_reps{n}" for n in repetitions for k in ks]
        return {}, {}, dict.fromkeys(names, aligned)
    inputs = embed_split(ctx, *aligned, ctx.datamodule.loader(split, False))
    curve, skipped = retrieval_curve(ctx, split, aligned, repetitions, ks) if repetitions else ({}, {})
    return inputs, curve, skipped


def background_bias(ctx: PipelineContext) -> float:
    """The region head's fitted background bias (0 when uncalibrated, or without a region head)."""
    import torch

    from regionaldiff.reconstruction import ENCODER_WEIGHTS

    saved = torch.load(ctx.slots["pretrain"].path / ENCODER_WEIGHTS, map_location="cpu", weights_only=True)
    bias = saved["state_dict"].get("region_background_bias")
    return float(bias) if bias is not None else 0.0


def evaluate(ctx: PipelineContext, train: bool = True) -> None:
    """Metrics of the reconstructions: the configured suite, plus known-truth metrics where the dataset has them."""
    from regionaldiff.evaluation.alignment import reconstruction_alignment
    from regionaldiff.evaluation.known_truth import region_and_class_metrics
    from regionaldiff.evaluation.suite import evaluate_images

    split = ctx.typed.pipeline.eval_split.value
    dm = ctx.datamodule
    arrays = dict(np.load(ctx.slots["generate"].path / GENERATED_FILE))
    eval_cfg = ctx.typed.eval  # checked once, with the rest of the config
    retrieval, curve, no_retrieval = zero_shot_retrieval(ctx, split, eval_cfg)
    result = evaluate_images(arrays["generated"], arrays["reference"], cfg=eval_cfg, **retrieval)
    metrics, skipped = {**result.metrics, **curve}, {**result.skipped, **no_retrieval}
    unseen = unseen_classes(ctx, split)
    top1, top1_skipped = eeg_top1(arrays, ctx.typed.encoder.w_cls, unseen)
    metrics.update(top1)
    skipped.update(top1_skipped)
    known, known_skipped = region_and_class_metrics(
        arrays, dm, ctx.store, ctx.keys["prepare"]["dataset"], background_bias(ctx)
    )
    metrics.update(known)
    skipped.update(known_skipped)
    aligned, aligned_skipped = reconstruction_alignment(
        ctx.regionmap,
        arrays["generated"],
        arrays.get("region_maps"),
        arrays["labels"],
        dm.num_region_labels,
        dm.region_labels,
    )
    metrics.update(aligned)
    skipped.update(aligned_skipped)
    if unseen and dm.region_labels.are_classes:
        # the maps' object labels are classes the model never saw: nothing it could name
        reason = f"{unseen}; its region labels are those classes (dataset.region_labels=layout scores the layout)"
        class_scored = ("eval/region_miou", "eval/region_alignment", "eval/recon_", "eval/judge_stimulus")
        for name in [k for k in metrics if k.startswith(class_scored)]:
            skipped[name] = reason
            del metrics[name]
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

    generated_dir, reference_dir = ctx.typed.eval.generated_dir, ctx.typed.eval.reference_dir
    if not generated_dir or not reference_dir:
        raise ConfigError("Folder evaluation needs both eval.generated_dir and eval.reference_dir.")
    ctx.tracker.set_tags(
        {
            "regionaldiff.mode": "folder evaluation",
            "eval.generated_dir": generated_dir,
            "eval.reference_dir": reference_dir,
        }
    )
    result = evaluate_folders(generated_dir, reference_dir, ctx.typed.eval)
    report_metrics(ctx, dict(result.metrics), dict(result.skipped))
