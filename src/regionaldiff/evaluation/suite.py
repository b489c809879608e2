"""The configured evaluation suite: one entry point the pipeline and folder evaluation call.

``eval.metrics`` names what to compute (the registry, :data:`regionaldiff.evaluation.registry.METRICS`); a metric
whose backbone weights are missing is reported in :attr:`EvalResult.skipped` with the reason, never computed with a
random network. Unknown names and bad settings raise ``ValueError`` (:func:`validate_eval_config`) before any work
starts. Every setting's default is in ``conf/eval/default.yaml`` and nowhere else: :func:`validate_eval_config`
fills what a config leaves out from that file.
"""

from __future__ import annotations

import copy
import functools
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import OmegaConf

from regionaldiff.config import config_dir, plain, resolve_device
from regionaldiff.errors import ConfigError
from regionaldiff.evaluation.backbones import WeightsUnavailable, backbone_config, check_images
from regionaldiff.evaluation.registry import METRICS, MetricInputs, int_list, retrieval_ks

__all__ = ["METRICS", "EvalResult", "EvalSettings", "eval_defaults", "evaluate_images", "retrieval_ks", "skip_names"]

log = logging.getLogger(__name__)

#: keys of conf/eval/default.yaml that point at files through ``paths`` (resolved by Hydra, not defaults here):
#: without them a relative backbone path is read relative to the working directory
_PATH_KEYS = ("weights_dir", "backbones")


@dataclass
class EvalResult:
    """Metrics by stable name, and the metrics that were skipped with the reason."""

    metrics: dict[str, float] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)


class EvalSettings(dict[str, Any]):
    """The ``eval`` settings after :func:`validate_eval_config`: every key filled and checked. Passing one on
    (the checked config's ``eval``) checks nothing again."""


@functools.lru_cache(maxsize=4)
def _read_eval_defaults(path: Path) -> dict[str, Any]:
    values = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    assert isinstance(values, dict)
    return {str(key): value for key, value in values.items() if key not in _PATH_KEYS}


def eval_defaults() -> dict[str, Any]:
    """Every ``eval`` setting at its default, read from ``conf/eval/default.yaml`` (their one home; read once per
    process), except the weight paths, which that file derives from ``paths``. A fresh copy each call."""
    return copy.deepcopy(_read_eval_defaults(config_dir() / "eval" / "default.yaml"))


def validate_eval_config(cfg: Any) -> EvalSettings:
    """Check the ``eval`` node and return it as a plain dict with every setting filled in; ``ValueError`` names the
    key and the allowed values.

    ``cfg`` is the ``eval`` node (resolved here), a mapping (copied) or None (every setting at its default). What it
    leaves out comes from ``conf/eval/default.yaml`` (:func:`eval_defaults`). Settings already checked (an
    :class:`EvalSettings`, e.g. the ``eval`` of :func:`regionaldiff.validation.validate`'s result) are returned
    as they are.
    """
    if isinstance(cfg, EvalSettings):
        return cfg
    given = plain(cfg) if cfg is not None else {}
    if not isinstance(given, Mapping):
        raise ValueError(f"eval config must be a mapping, got {type(cfg).__name__}.")
    merged = OmegaConf.merge(OmegaConf.create(eval_defaults()), OmegaConf.create(copy.deepcopy(dict(given))))
    values: dict[str, Any] = OmegaConf.to_container(merged, resolve=True)  # type: ignore[assignment]
    unknown = [m for m in values["metrics"] if m not in METRICS]
    if unknown:
        raise ConfigError(f"eval.metrics: unknown metric(s) {unknown}; allowed: {sorted(METRICS)}.")
    if int(values["resolution"]) < 11:
        raise ConfigError(
            f"eval.resolution must be >= 11 pixels (the Gaussian SSIM window), got {values['resolution']}."
        )
    nway = values["nway"]
    n, ks = int(nway["n"]), int_list(nway["k"])
    if n < 2 or any(not 1 <= k <= n for k in ks) or int(nway["trials"]) < 1:
        raise ConfigError(
            f"eval.nway: need n >= 2, 1 <= k <= n and trials >= 1; got n={n}, k={ks}, trials={nway['trials']}."
        )
    retrieval = values["retrieval"]
    if any(k < 1 for k in retrieval_ks(values)):
        raise ConfigError("eval.retrieval.k: values must be >= 1.")
    if retrieval.get("repetitions") is not None and any(n < 1 for n in int_list(retrieval["repetitions"])):
        raise ConfigError("eval.retrieval.repetitions: a list of repetition counts >= 1 (or null).")
    for slot in values.get("backbones") or {}:
        backbone_config(values, slot)  # raises on unknown slots
    return EvalSettings(values)


def skip_names(name: str, cfg: Mapping[str, Any]) -> list[str]:
    """The metric keys metric ``name`` reports (what is listed as skipped when it cannot be computed)."""
    return METRICS[name].metric_keys(cfg)


def evaluate_images(
    generated: np.ndarray,
    reference: np.ndarray,
    *,
    cfg: Mapping[str, Any] | None,
    eeg_embeddings: np.ndarray | None = None,
    image_embeddings: np.ndarray | None = None,
    retrieval_targets: np.ndarray | None = None,
) -> EvalResult:
    """Score reconstructions against the true images with the metrics named in ``cfg['metrics']``.

    Parameters
    ----------
    generated : np.ndarray
        uint8 ``[N, H, W, 3]``, or ``[N, S, H, W, 3]`` with S samples per EEG trial (per-image metrics are averaged
        over samples; n-way also reports the best sample; FID/IS pool all samples).
    reference : np.ndarray
        uint8 ``[N, H, W, 3]``; may have another size than ``generated``.
    cfg : Mapping or None
        The ``eval`` config node (a plain dict works; None = every setting at its default): ``metrics``,
        ``resolution`` (SSIM/PixCorr), ``pairwise_resolution``, ``nway`` (n, k, trials, seed), ``is_splits``,
        ``retrieval`` (k), ``weights_dir``, ``backbones`` (per-slot overrides), ``allow_download``, ``device``,
        ``batch_size``, ``seed``.
    eeg_embeddings, image_embeddings, retrieval_targets : np.ndarray, optional
        For ``retrieval``: EEG embeddings ``[N, D]``, candidate image embeddings ``[M, D]`` and each EEG's
        candidate row ``[N]`` (default ``arange(N)``).

    Returns
    -------
    EvalResult
        ``metrics`` (``eval/<name>`` -> float) and ``skipped`` (``eval/<name>`` -> reason).
    """
    cfg = validate_eval_config(cfg)
    generated = np.asarray(generated)
    if generated.ndim == 4:
        generated = generated[:, None]
    generated = check_images(generated, "generated", sampled=True)
    reference = check_images(reference, "reference")
    if generated.shape[0] != reference.shape[0]:
        raise ValueError(
            f"evaluate_images: generated has N={generated.shape[0]} trials, reference N={reference.shape[0]}."
        )
    inputs = MetricInputs(
        generated,
        reference,
        cfg,
        resolve_device(str(cfg["device"]), "eval.device"),
        eeg_embeddings,
        image_embeddings,
        retrieval_targets,
    )
    # metrics that share a computation run as one call, in the order they are first named
    groups: dict[Any, list[str]] = {}
    for name in cfg["metrics"]:
        groups.setdefault(METRICS[name].compute, []).append(name)
    result = EvalResult()
    for compute, names in groups.items():
        try:
            metrics, skipped = compute(names, inputs)
        except WeightsUnavailable as err:
            metrics, skipped = {}, {key: str(err) for name in names for key in skip_names(name, cfg)}
        result.metrics.update(metrics)
        result.skipped.update(skipped)
    return result
