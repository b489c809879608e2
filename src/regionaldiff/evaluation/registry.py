"""The metric registry: every name ``eval.metrics`` accepts, in one place.

A :class:`Metric` declares what the rest of the project needs to know about it: the keys it reports (listed as
skipped, with the reason, when it cannot be computed), the ``eval.backbones`` slots whose weights it reads (what
``regionaldiff check`` looks for), a package it needs, and the function that computes it. The suite
(:func:`regionaldiff.evaluation.suite.evaluate_images`) and preflight read this table and nothing else, so a new
metric is one entry here, its settings in ``conf/eval/default.yaml``, a line in ``docs/metrics.md`` and a test.

Metrics whose ``compute`` is the same function share one call (the MindEye backbones embed each image once for
all their metrics): ``compute(names, inputs)`` receives every wanted name of its group.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from regionaldiff.config import EvalConfig, int_list
from regionaldiff.evaluation.backbones import backbone_config
from regionaldiff.evaluation.identification import MINDEYE_METRICS, PAIRWISE_METRICS
from regionaldiff.evaluation.image_metrics import pixcorr, ssim

__all__ = ["METRICS", "Metric", "MetricInputs", "int_list", "retrieval_ks"]


def retrieval_ks(cfg: EvalConfig) -> list[int]:
    """The retrieval ``k`` values of the ``eval`` settings (``eval.retrieval.k``)."""
    return int_list(cfg.retrieval.k)


@dataclass(frozen=True)
class MetricInputs:
    """What a metric is computed from: images as uint8 ``[N, S, H, W, 3]`` (S samples per trial) and ``[N, H, W,
    3]``, the checked ``eval`` settings, and (retrieval) the EEG and candidate image embeddings."""

    generated: np.ndarray
    reference: np.ndarray
    cfg: EvalConfig
    device: Any
    eeg_embeddings: np.ndarray | None = None
    image_embeddings: np.ndarray | None = None
    retrieval_targets: np.ndarray | None = None

    @property
    def batch_size(self) -> int:
        return int(self.cfg.batch_size)

    def backbone(self, slot: str) -> dict[str, Any]:
        return backbone_config(self.cfg, slot)


Compute = Callable[[list[str], MetricInputs], tuple[dict[str, float], dict[str, str]]]


@dataclass(frozen=True)
class Metric:
    """One selectable metric.

    Parameters
    ----------
    name : str
        The name in ``eval.metrics``.
    reports : str
        What it logs, for the docs and errors.
    compute : callable
        ``compute(names, inputs) -> (metrics, skipped)``; raises
        :class:`~regionaldiff.evaluation.backbones.WeightsUnavailable` when its weights are missing.
    slots : tuple of str
        The ``eval.backbones`` slots whose weights it reads.
    keys : callable, optional
        ``keys(cfg) -> [metric keys]`` it reports; default ``[f"eval/{name}"]``.
    package : str, optional
        A Python package it needs (checked by preflight).
    """

    name: str
    reports: str
    compute: Compute
    slots: tuple[str, ...] = ()
    keys: Callable[[EvalConfig], list[str]] | None = None
    package: str | None = None

    def metric_keys(self, cfg: EvalConfig) -> list[str]:
        return self.keys(cfg) if self.keys is not None else [f"eval/{self.name}"]


# -- the computations ------------------------------------------------------------------------------------------------
def _per_sample(fn: Callable[..., float]) -> Compute:
    def compute(names: list[str], inputs: MetricInputs) -> tuple[dict[str, float], dict[str, str]]:
        resolution = int(inputs.cfg.resolution)
        scores = [
            fn(inputs.generated[:, s], inputs.reference, resolution=resolution)
            for s in range(inputs.generated.shape[1])
        ]
        return {f"eval/{names[0]}": float(np.mean(scores))}, {}

    return compute


def _nway(names: list[str], inputs: MetricInputs) -> tuple[dict[str, float], dict[str, str]]:
    from regionaldiff.evaluation.nway import nway_metrics

    nway_cfg = asdict(inputs.cfg.nway)
    metrics = nway_metrics(
        inputs.generated, inputs.reference, inputs.backbone("classifier"), nway_cfg, inputs.device, inputs.batch_size
    )
    return metrics, {}


def _fid(names: list[str], inputs: MetricInputs) -> tuple[dict[str, float], dict[str, str]]:
    from regionaldiff.evaluation.backbones import load_cleanfid_inception
    from regionaldiff.evaluation.distribution import fid

    model = load_cleanfid_inception(inputs.backbone("fid_inception")).to(inputs.device)
    return {"eval/fid": fid(model, inputs.generated, inputs.reference, inputs.device, inputs.batch_size)}, {}


def _inception_score(names: list[str], inputs: MetricInputs) -> tuple[dict[str, float], dict[str, str]]:
    from regionaldiff.evaluation.backbones import load_is_inception
    from regionaldiff.evaluation.distribution import inception_score

    model = load_is_inception(inputs.backbone("is_inception"))
    mean, std = inception_score(
        model,
        inputs.generated,
        inputs.device,
        int(inputs.cfg.is_splits),
        int(inputs.cfg.seed),
        inputs.batch_size,
    )
    return {"eval/is": mean, "eval/is_std": std}, {}


def _mindeye(names: list[str], inputs: MetricInputs) -> tuple[dict[str, float], dict[str, str]]:
    from regionaldiff.evaluation.identification import mindeye_metrics

    specs = {slot: inputs.backbone(slot) for slot in {MINDEYE_METRICS[n][0] for n in names}}
    return mindeye_metrics(inputs.generated, inputs.reference, names, specs, inputs.device, inputs.batch_size)


def _pairwise(names: list[str], inputs: MetricInputs) -> tuple[dict[str, float], dict[str, str]]:
    from regionaldiff.evaluation.identification import pairwise_metrics

    return pairwise_metrics(
        inputs.generated,
        inputs.reference,
        names,
        int(inputs.cfg.pairwise_resolution),
        inputs.backbone("lpips"),
        inputs.device,
        inputs.batch_size,
    )


def _retrieval(names: list[str], inputs: MetricInputs) -> tuple[dict[str, float], dict[str, str]]:
    ks = retrieval_ks(inputs.cfg)
    if inputs.eeg_embeddings is None or inputs.image_embeddings is None:
        reason = "needs EEG and candidate image embeddings (THINGS-EEG2 zero-shot retrieval); none were given"
        return {}, {key: reason for key in _retrieval_keys(inputs.cfg)}
    from regionaldiff.evaluation.retrieval import retrieval_scores

    metrics = retrieval_scores(inputs.eeg_embeddings, inputs.image_embeddings, inputs.retrieval_targets, ks)
    skipped = {
        f"eval/retrieval_top{k}": f"only {len(inputs.image_embeddings)} candidate images"
        for k in ks
        if f"eval/retrieval_top{k}" not in metrics
    }
    return metrics, skipped


def _nway_keys(cfg: EvalConfig) -> list[str]:
    return [f"eval/nway_top{k}{suffix}" for k in int_list(cfg.nway.k) for suffix in ("", "_max")]


def _retrieval_keys(cfg: EvalConfig) -> list[str]:
    return [f"eval/retrieval_top{k}" for k in retrieval_ks(cfg)] + ["eval/retrieval_2way"]


# -- the table --------------------------------------------------------------------------------------------------------
_ALL: list[Metric] = [
    Metric("ssim", "eval/ssim (MindEye SSIM)", _per_sample(ssim)),
    Metric("pixcorr", "eval/pixcorr (MindEye PixCorr)", _per_sample(pixcorr)),
    Metric(
        "nway",
        "eval/nway_top{k}, eval/nway_top{k}_max (Mind-vis n-way top-k)",
        _nway,
        slots=("classifier",),
        keys=_nway_keys,
    ),
    Metric("fid", "eval/fid (clean-fid)", _fid, slots=("fid_inception",)),
    Metric(
        "is",
        "eval/is, eval/is_std (torchmetrics Inception Score)",
        _inception_score,
        slots=("is_inception",),
        keys=lambda cfg: ["eval/is", "eval/is_std"],
        package="torch_fidelity",
    ),
    *(
        Metric(name, f"eval/{name} (MindEye {kind.replace('_', '-')})", _mindeye, slots=(slot,))
        for name, (slot, kind) in MINDEYE_METRICS.items()
    ),
    *(
        Metric(
            name,
            f"eval/{name} (DreamDiffusion pair-wise identification)",
            _pairwise,
            slots=("lpips",) if name == "pairwise_lpips" else (),
        )
        for name in PAIRWISE_METRICS
    ),
    Metric(
        "retrieval",
        "eval/retrieval_top{k}, eval/retrieval_2way (zero-shot EEG -> image retrieval)",
        _retrieval,
        keys=_retrieval_keys,
    ),
]

#: selectable names in ``eval.metrics`` -> their :class:`Metric`
METRICS: dict[str, Metric] = {metric.name: metric for metric in _ALL}
