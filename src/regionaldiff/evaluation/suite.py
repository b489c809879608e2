"""The configured evaluation suite: one entry point the pipeline and folder evaluation call."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from regionaldiff.evaluation.image_metrics import pixcorr, ssim


@dataclass
class EvalResult:
    """Metrics by stable name, and the metrics that were skipped with the reason."""

    metrics: dict[str, float] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)


def evaluate_images(generated: np.ndarray, reference: np.ndarray, *, cfg: Mapping[str, Any], labels: np.ndarray | None = None, samples: Any = None) -> EvalResult:
    """Score reconstructions against the true images.

    Parameters
    ----------
    generated : np.ndarray
        uint8 ``[N, H, W, 3]``, or ``[N, S, H, W, 3]`` with S samples per EEG trial (metrics are averaged over samples).
    reference : np.ndarray
        uint8 ``[N, H, W, 3]``.
    cfg : Mapping
        The ``eval`` config node: ``metrics`` (names to compute) and ``resolution`` (SSIM/PixCorr).
    """
    if generated.ndim == 4:
        generated = generated[:, None]
    result = EvalResult()
    wanted = list(cfg.get("metrics", ["ssim", "pixcorr"]))
    resolution = int(cfg.get("resolution", 425))
    functions = {"ssim": ssim, "pixcorr": pixcorr}
    for name in wanted:
        if name not in functions:
            result.skipped[f"eval/{name}"] = f"metric {name!r} is not available in this build (known: {sorted(functions)})"
            continue
        scores = [functions[name](generated[:, s], reference, resolution=resolution) for s in range(generated.shape[1])]
        result.metrics[f"eval/{name}"] = float(np.mean(scores))
    return result
