"""The configured evaluation suite: one entry point the pipeline and folder evaluation call.

``eval.metrics`` names what to compute (see :data:`METRICS`); a metric whose backbone weights are missing is
reported in :attr:`EvalResult.skipped` with the reason, never computed with a random network. Unknown names and
bad settings raise ``ValueError`` (:func:`validate_eval_config`) before any work starts.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from regionaldiff.config import plain, resolve_device
from regionaldiff.errors import ConfigError
from regionaldiff.evaluation.backbones import WeightsUnavailable, backbone_config, check_images
from regionaldiff.evaluation.identification import MINDEYE_METRICS, PAIRWISE_METRICS
from regionaldiff.evaluation.image_metrics import pixcorr, ssim

log = logging.getLogger(__name__)

#: selectable names in ``eval.metrics`` -> what they report
METRICS: dict[str, str] = {
    "ssim": "eval/ssim (MindEye SSIM)",
    "pixcorr": "eval/pixcorr (MindEye PixCorr)",
    "nway": "eval/nway_top{k}, eval/nway_top{k}_max (Mind-vis n-way top-k)",
    "fid": "eval/fid (clean-fid)",
    "is": "eval/is, eval/is_std (torchmetrics Inception Score)",
    **{name: f"eval/{name} (MindEye {kind.replace('_', '-')})" for name, (_, kind) in MINDEYE_METRICS.items()},
    **{name: f"eval/{name} (DreamDiffusion pair-wise identification)" for name in PAIRWISE_METRICS},
    "retrieval": "eval/retrieval_top{k}, eval/retrieval_2way (zero-shot EEG -> image retrieval)",
}


@dataclass
class EvalResult:
    """Metrics by stable name, and the metrics that were skipped with the reason."""

    metrics: dict[str, float] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)


def _ks(value: Any) -> list[int]:
    return [int(value)] if isinstance(value, (int, np.integer)) else [int(v) for v in value]


def validate_eval_config(cfg: Any) -> dict[str, Any]:
    """Check the ``eval`` node and return it as a plain dict; ``ValueError`` names the key and the allowed values.

    ``cfg`` is the ``eval`` node (resolved here), a mapping (copied) or None (every setting at its default).
    """
    values = plain(cfg) if cfg is not None else {}
    if not isinstance(values, Mapping):
        raise ValueError(f"eval config must be a mapping, got {type(cfg).__name__}.")
    values = copy.deepcopy(dict(values))
    wanted = list(values.get("metrics", ["ssim", "pixcorr"]))
    unknown = [m for m in wanted if m not in METRICS]
    if unknown:
        raise ConfigError(f"eval.metrics: unknown metric(s) {unknown}; allowed: {sorted(METRICS)}.")
    if int(values.get("resolution", 425)) < 11:
        raise ConfigError(
            f"eval.resolution must be >= 11 pixels (the Gaussian SSIM window), got {values.get('resolution')}."
        )
    nway = values.get("nway") or {}
    n, ks = int(nway.get("n", 50)), _ks(nway.get("k", 1))
    if n < 2 or any(not 1 <= k <= n for k in ks) or int(nway.get("trials", 50)) < 1:
        raise ConfigError(
            f"eval.nway: need n >= 2, 1 <= k <= n and trials >= 1; got n={n}, k={ks}, trials={nway.get('trials', 50)}."
        )
    retrieval = values.get("retrieval") or {}
    if any(k < 1 for k in retrieval_ks(values)):
        raise ConfigError("eval.retrieval.k: values must be >= 1.")
    if retrieval.get("repetitions") is not None and any(n < 1 for n in _ks(retrieval["repetitions"])):
        raise ConfigError("eval.retrieval.repetitions: a list of repetition counts >= 1 (or null).")
    for slot in values.get("backbones") or {}:
        backbone_config(values, slot)  # raises on unknown slots
    return values


def retrieval_ks(cfg: Mapping[str, Any]) -> list[int]:
    """The retrieval ``k`` values of an ``eval`` config (``eval.retrieval.k``, default ``[1, 5]``)."""
    return _ks((cfg.get("retrieval") or {}).get("k", [1, 5]))


def skip_names(name: str, cfg: Mapping[str, Any]) -> list[str]:
    """The metric keys metric ``name`` reports (what is listed as skipped when it cannot be computed)."""
    if name == "nway":
        return [
            f"eval/nway_top{k}{suffix}" for k in _ks((cfg.get("nway") or {}).get("k", 1)) for suffix in ("", "_max")
        ]
    if name == "is":
        return ["eval/is", "eval/is_std"]
    if name == "retrieval":
        return [f"eval/retrieval_top{k}" for k in retrieval_ks(cfg)] + ["eval/retrieval_2way"]
    return [f"eval/{name}"]


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
    result = EvalResult()
    wanted = list(cfg.get("metrics", ["ssim", "pixcorr"]))
    device = resolve_device(str(cfg.get("device", "auto")), "eval.device")
    batch_size = int(cfg.get("batch_size", 32))
    seed = int(cfg.get("seed", 0))

    def run(names: list[str], fn) -> None:
        """Run ``fn() -> (metrics, skipped)``; missing weights skip every name in ``names``."""
        try:
            metrics, skipped = fn()
        except WeightsUnavailable as err:
            metrics, skipped = {}, {key: str(err) for name in names for key in skip_names(name, cfg)}
        result.metrics.update(metrics)
        result.skipped.update(skipped)

    resolution = int(cfg.get("resolution", 425))
    for name, fn in (("ssim", ssim), ("pixcorr", pixcorr)):
        if name in wanted:
            scores = [fn(generated[:, s], reference, resolution=resolution) for s in range(generated.shape[1])]
            result.metrics[f"eval/{name}"] = float(np.mean(scores))

    if "nway" in wanted:
        from regionaldiff.evaluation.nway import nway_metrics

        nway_cfg = dict(cfg.get("nway") or {})
        nway_cfg.setdefault("seed", seed)
        run(
            ["nway"],
            lambda: (
                nway_metrics(generated, reference, backbone_config(cfg, "classifier"), nway_cfg, device, batch_size),
                {},
            ),
        )

    if "fid" in wanted:
        from regionaldiff.evaluation.backbones import load_cleanfid_inception
        from regionaldiff.evaluation.distribution import fid

        def _fid():
            model = load_cleanfid_inception(backbone_config(cfg, "fid_inception")).to(device)
            return {"eval/fid": fid(model, generated, reference, device, batch_size)}, {}

        run(["fid"], _fid)

    if "is" in wanted:
        from regionaldiff.evaluation.backbones import load_is_inception
        from regionaldiff.evaluation.distribution import inception_score

        def _is():
            model = load_is_inception(backbone_config(cfg, "is_inception"))
            mean, std = inception_score(model, generated, device, int(cfg.get("is_splits", 10)), seed, batch_size)
            return {"eval/is": mean, "eval/is_std": std}, {}

        run(["is"], _is)

    mindeye = [name for name in wanted if name in MINDEYE_METRICS]
    if mindeye:
        from regionaldiff.evaluation.identification import mindeye_metrics

        specs = {slot: backbone_config(cfg, slot) for slot in {MINDEYE_METRICS[n][0] for n in mindeye}}
        run(mindeye, lambda: mindeye_metrics(generated, reference, mindeye, specs, device, batch_size))

    pairwise = [name for name in wanted if name in PAIRWISE_METRICS]
    if pairwise:
        from regionaldiff.evaluation.identification import pairwise_metrics

        resolution_pw = int(cfg.get("pairwise_resolution", 256))
        run(
            pairwise,
            lambda: pairwise_metrics(
                generated, reference, pairwise, resolution_pw, backbone_config(cfg, "lpips"), device, batch_size
            ),
        )

    if "retrieval" in wanted:
        ks = retrieval_ks(cfg)
        if eeg_embeddings is None or image_embeddings is None:
            reason = "needs EEG and candidate image embeddings (THINGS-EEG2 zero-shot retrieval); none were given"
            result.skipped.update({name: reason for name in skip_names("retrieval", cfg)})
        else:
            from regionaldiff.evaluation.retrieval import retrieval_scores

            result.metrics.update(retrieval_scores(eeg_embeddings, image_embeddings, retrieval_targets, ks))
            for k in ks:
                if f"eval/retrieval_top{k}" not in result.metrics:
                    result.skipped[f"eval/retrieval_top{k}"] = f"only {len(image_embeddings)} candidate images"
    return result
