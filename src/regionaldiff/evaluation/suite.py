"""The configured evaluation suite: one entry point the pipeline and folder evaluation call.

``eval.metrics`` names what to compute (the registry, :data:`regionaldiff.evaluation.registry.METRICS`); a metric
whose backbone weights are missing is reported in :attr:`EvalResult.skipped` with the reason, never computed with a
random network. The settings are the ``eval`` schema (:class:`regionaldiff.config.EvalConfig`, checked with the rest
of the config before any work starts; unknown metric names by :func:`check_eval`). Every setting's default is in
``conf/eval/default.yaml`` and nowhere else: a Python caller's settings are filled from that file
(:func:`eval_config`).
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
from omegaconf.errors import OmegaConfBaseException

from regionaldiff.config import EvalConfig, config_dir, plain, resolve_device
from regionaldiff.errors import ConfigError, one_line
from regionaldiff.evaluation.backbones import WeightsUnavailable, backbone_config, check_images
from regionaldiff.evaluation.registry import METRICS, MetricInputs, retrieval_ks

__all__ = [
    "METRICS",
    "EvalResult",
    "check_eval",
    "eval_config",
    "eval_defaults",
    "evaluate_images",
    "retrieval_ks",
    "skip_names",
]

log = logging.getLogger(__name__)

#: keys of conf/eval/default.yaml that point at files through ``paths`` (resolved by Hydra, not defaults here):
#: without them a relative backbone path is read relative to the working directory
_PATH_KEYS = ("weights_dir", "backbones")


@dataclass
class EvalResult:
    """Metrics by stable name, and the metrics that were skipped with the reason."""

    metrics: dict[str, float] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)


@functools.lru_cache(maxsize=4)
def _read_eval_defaults(path: Path) -> dict[str, Any]:
    values = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    assert isinstance(values, dict)
    return {str(key): value for key, value in values.items() if key not in _PATH_KEYS and key != "defaults"}


def eval_defaults() -> dict[str, Any]:
    """Every ``eval`` setting at its default, read from ``conf/eval/default.yaml`` (their one home; read once per
    process), except the weight paths, which that file derives from ``paths``. A fresh copy each call."""
    return copy.deepcopy(_read_eval_defaults(config_dir() / "eval" / "default.yaml"))


def check_eval(settings: EvalConfig) -> EvalConfig:
    """What the ``eval`` schema cannot check itself, as it sits below the tables: every name of ``eval.metrics`` is
    in the metric registry, every slot of ``eval.backbones`` is a known backbone. A ConfigError names the key."""
    unknown = [m for m in settings.metrics if m not in METRICS]
    if unknown:
        raise ConfigError(f"eval.metrics: unknown metric(s) {unknown}; allowed: {sorted(METRICS)}.")
    for slot in settings.backbones or {}:
        backbone_config(settings, slot)  # raises on unknown slots
    return settings


def eval_config(cfg: Any) -> EvalConfig:
    """The checked ``eval`` settings of a Python caller (:func:`evaluate_images`, folder evaluation, the preflight's
    plan): ``cfg`` is None (every setting at its default), a mapping or ``eval`` node of the settings it changes
    (what it leaves out comes from ``conf/eval/default.yaml``, :func:`eval_defaults`), or settings already checked
    (an :class:`~regionaldiff.config.EvalConfig`, the ``eval`` of :func:`regionaldiff.validation.validate`'s
    result), returned as they are. A ConfigError names a key the schema does not have, or a bad value.
    """
    if isinstance(cfg, EvalConfig):
        return cfg
    given = plain(cfg) if cfg is not None else {}
    if not isinstance(given, Mapping):
        raise ConfigError(f"eval config must be a mapping, got {type(cfg).__name__}.")
    try:
        merged = OmegaConf.merge(
            OmegaConf.structured(EvalConfig),
            dict.fromkeys(_PATH_KEYS),
            eval_defaults(),
            copy.deepcopy(dict(given)),
        )
        settings = OmegaConf.to_object(merged)
    except OmegaConfBaseException as err:
        raise ConfigError(f"eval: {one_line(str(err))}") from err
    assert isinstance(settings, EvalConfig)
    return check_eval(settings)


def skip_names(name: str, cfg: EvalConfig) -> list[str]:
    """The metric keys metric ``name`` reports (what is listed as skipped when it cannot be computed)."""
    return METRICS[name].metric_keys(cfg)


def evaluate_images(
    generated: np.ndarray,
    reference: np.ndarray,
    *,
    cfg: EvalConfig | Mapping[str, Any] | None,
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
    cfg : EvalConfig, Mapping or None
        The ``eval`` settings (:func:`eval_config`: a plain dict of the settings that differ works; None = every
        setting at its default): ``metrics``,
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
    cfg = eval_config(cfg)
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
        resolve_device(cfg.device, "eval.device"),
        eeg_embeddings,
        image_embeddings,
        retrieval_targets,
    )
    # metrics that share a computation run as one call, in the order they are first named
    groups: dict[Any, list[str]] = {}
    for name in cfg.metrics:
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
