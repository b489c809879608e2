"""Identification metrics: MindEye two-way identification and correlation distance; DreamDiffusion pairwise scores.

MindEye (Scotti et al. 2023, ``utils.two_way_identification`` and the final-evaluation notebook), also used by
ATM and UBP on THINGS-EEG:

- **two-way identification** on features ``f``: with ``r[i, j] = corr(f(ref_i), f(gen_j))`` (Pearson over the
  flattened features), generated image ``j`` wins against reference ``i != j`` when ``r[i, j] < r[j, j]``; the
  score is the mean over ``j`` of its wins divided by ``N - 1``. Chance is 0.5, perfect is 1.
  Backbones: AlexNet ``features.4`` ("AlexNet(2)") and ``features.11`` ("AlexNet(5)"), Resize(256);
  InceptionV3 ``avgpool``, Resize(342); CLIP ViT-L/14 image embedding, Resize(224, bicubic), CLIP normalisation.
- **correlation distance**: mean over images of ``1 - corr(f(ref_i), f(gen_i))`` (``scipy.spatial.distance.
  correlation``) on EfficientNet-B1 ``avgpool`` (Resize(255)) and SwAV ResNet-50 ``avgpool`` (Resize(224)).
  Lower is better.

All MindEye preprocessing: float images in [0, 1], ``Resize(shorter side)`` (antialiased), ImageNet normalisation
(CLIP's for CLIP). With several samples per EEG, each score is averaged over samples.

DreamDiffusion / Mind-vis ``pair_wise_score`` (option): for each generated image, the fraction of the other
``N - 1`` ground-truth images that it matches *worse* than its own ground truth under MSE (lower is better),
PCC, SSIM (``skimage`` defaults: 7x7 uniform window, ``data_range=255``, channels averaged; higher is better) or
LPIPS-AlexNet (lower is better). Chance is 0.5.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from regionaldiff.evaluation.backbones import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    check_images,
    load_clip_vision,
    load_lpips,
    load_swav_resnet,
    load_torchvision,
    normalize,
    resize_shorter,
    resize_square,
    to_unit_tensor,
)

#: metric -> (backbone slot, kind)
MINDEYE_METRICS: dict[str, tuple[str, str]] = {
    "alexnet2": ("alexnet", "two_way"),
    "alexnet5": ("alexnet", "two_way"),
    "inception": ("inception", "two_way"),
    "clip": ("clip", "two_way"),
    "effnet": ("effnet", "distance"),
    "swav": ("swav", "distance"),
}
PAIRWISE_METRICS = ("pairwise_mse", "pairwise_pcc", "pairwise_ssim", "pairwise_lpips")


# -- arithmetic -----------------------------------------------------------------------------------------------------
def _zscore_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    x = x - x.mean(1, keepdims=True)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norm > 0, norm, 1.0)


def correlation_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation ``r[i, j] = corr(a_i, b_j)`` of the flattened rows of ``a [N, ...]`` and ``b [M, ...]``."""
    return _zscore_rows(a) @ _zscore_rows(b).T


def _check_pairs(generated_features: np.ndarray, reference_features: np.ndarray, name: str) -> None:
    if len(generated_features) != len(reference_features):
        raise ValueError(
            f"{name}: generated has {len(generated_features)} rows, reference {len(reference_features)}; expected equal N."
        )
    if len(reference_features) < 2:
        raise ValueError(f"{name}: needs at least 2 image pairs, got {len(reference_features)}.")


def two_way_identification(generated_features: np.ndarray, reference_features: np.ndarray) -> float:
    """MindEye two-way identification of features ``[N, ...]`` (rows paired by index); chance 0.5, perfect 1."""
    _check_pairs(generated_features, reference_features, "two_way_identification")
    r = correlation_matrix(reference_features, generated_features)  # r[i, j] = corr(ref_i, gen_j)
    congruent = np.diag(r)
    wins = (r < congruent[None, :]).sum(0)  # for each generated j: references i it correlates with less than its own
    return float(wins.mean() / (len(r) - 1))


def correlation_distance(generated_features: np.ndarray, reference_features: np.ndarray) -> float:
    """Mean over pairs of ``1 - Pearson(ref_i, gen_i)`` (``scipy.spatial.distance.correlation``); lower is better."""
    if len(generated_features) != len(reference_features) or len(reference_features) == 0:
        raise ValueError(
            f"correlation_distance: expected two non-empty [N, ...] arrays of equal N; got {len(generated_features)} and {len(reference_features)}."
        )
    corr = (_zscore_rows(generated_features) * _zscore_rows(reference_features)).sum(1)
    return float(np.mean(1.0 - corr))


def pairwise_identification(scores: np.ndarray, larger_is_better: bool) -> float:
    """DreamDiffusion / Mind-vis pair-wise identification from a score matrix.

    Parameters
    ----------
    scores : np.ndarray
        ``[N, N]``, ``scores[i, j] = metric(generated_i, reference_j)``.
    larger_is_better : bool
        True for PCC/SSIM, False for MSE/LPIPS.

    Returns
    -------
    float
        Mean over ``i`` of the fraction of ``j != i`` with ``scores[i, i]`` strictly better than ``scores[i, j]``.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2 or scores.shape[0] != scores.shape[1] or len(scores) < 2:
        raise ValueError(
            f"pairwise_identification: scores must be a square [N, N] matrix with N >= 2, got {scores.shape}."
        )
    own = np.diag(scores)[:, None]
    better = scores < own if larger_is_better else scores > own
    np.fill_diagonal(better, False)
    return float(better.sum(1).mean() / (len(scores) - 1))


# -- pairwise score matrices (generated rows x reference columns) ---------------------------------------------------
def mse_matrix(generated: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """``[N, M]`` mean squared error of pixel values (0..255) between every generated and reference image."""
    g = generated.reshape(len(generated), -1).astype(np.float64)
    r = reference.reshape(len(reference), -1).astype(np.float64)
    return ((g**2).sum(1)[:, None] + (r**2).sum(1)[None, :] - 2 * g @ r.T) / g.shape[1]


def ssim_matrix(
    generated: np.ndarray, reference: np.ndarray, win_size: int = 7, data_range: float = 255.0
) -> np.ndarray:
    """``[N, M]`` SSIM with ``skimage.metrics.structural_similarity`` defaults (as called by Mind-vis).

    Uniform ``win_size`` window, sample covariance, K1 = 0.01, K2 = 0.03, ``data_range=255``, mean over the valid
    (border-cropped) region and the channels (``channel_axis=-1``).
    """

    def local(x):  # [B, 3, H, W] -> windowed means over the valid region
        return F.avg_pool2d(x, win_size, stride=1)

    g = torch.from_numpy(np.ascontiguousarray(generated)).permute(0, 3, 1, 2).double()
    r = torch.from_numpy(np.ascontiguousarray(reference)).permute(0, 3, 1, 2).double()
    if g.shape[-1] < win_size or g.shape[-2] < win_size:
        raise ValueError(f"ssim_matrix: images must be at least {win_size}x{win_size}, got {tuple(g.shape[-2:])}.")
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    cov_norm = win_size**2 / (win_size**2 - 1)
    mg, mr = local(g), local(r)
    vg, vr = cov_norm * (local(g * g) - mg**2), cov_norm * (local(r * r) - mr**2)
    out = np.empty((len(g), len(r)))
    for i in range(len(g)):
        vgr = cov_norm * (local(g[i : i + 1] * r) - mg[i : i + 1] * mr)
        num = (2 * mg[i : i + 1] * mr + c1) * (2 * vgr + c2)
        den = (mg[i : i + 1] ** 2 + mr**2 + c1) * (vg[i : i + 1] + vr + c2)
        out[i] = (num / den).mean(dim=(1, 2, 3)).numpy()
    return out


@torch.no_grad()
def lpips_matrix(
    lpips: torch.nn.Module, generated: np.ndarray, reference: np.ndarray, device: torch.device, batch_size: int = 32
) -> np.ndarray:
    """``[N, M]`` LPIPS distance of every generated / reference pair, from per-image features computed once.

    LPIPS is ``sum_l mean_hw sum_c w_lc (a_lchw - b_lchw)^2`` on channel-normalised trunk features ``a``, ``b``; the
    square is expanded so that each image goes through the network once (same value as ``lpips(x, y)``).
    """
    from torchmetrics.functional.image.lpips import _normalize_tensor

    def feats(images):
        per_layer: list[list[torch.Tensor]] = []
        for start in range(0, len(images), batch_size):
            x = torch.from_numpy(np.ascontiguousarray(images[start : start + batch_size])).permute(0, 3, 1, 2).float()
            x = (x / 127.5 - 1.0).to(device)
            outs = lpips.net(lpips.scaling_layer(x))  # type: ignore[operator]
            for layer, out in enumerate(outs):
                if len(per_layer) <= layer:
                    per_layer.append([])
                per_layer[layer].append(_normalize_tensor(out).double().cpu())
        return [torch.cat(chunks) for chunks in per_layer]

    total = torch.zeros(len(generated), len(reference), dtype=torch.float64)
    lins: list[torch.nn.Module] = list(lpips.lins)  # type: ignore[arg-type]
    for a, b, lin in zip(feats(generated), feats(reference), lins):
        w = lin.model[-1].weight.detach().double().cpu().view(1, -1, 1, 1)  # type: ignore[index,union-attr]
        hw = a.shape[-1] * a.shape[-2]
        sq_a = (w * a**2).flatten(1).sum(1) / hw
        sq_b = (w * b**2).flatten(1).sum(1) / hw
        cross = (w * a).flatten(1) @ b.flatten(1).T / hw
        total += sq_a[:, None] + sq_b[None, :] - 2 * cross
    return total.numpy()


# -- feature extraction ---------------------------------------------------------------------------------------------
@torch.no_grad()
def _batched(
    fn: Callable[[torch.Tensor], dict[str, torch.Tensor]], images: np.ndarray, batch_size: int
) -> dict[str, np.ndarray]:
    out: dict[str, list[np.ndarray]] = {}
    for start in range(0, len(images), batch_size):
        for key, value in fn(to_unit_tensor(images[start : start + batch_size])).items():
            out.setdefault(key, []).append(value.float().flatten(1).cpu().numpy())
    return {k: np.concatenate(v) for k, v in out.items()}


def feature_function(
    slot: str, spec: Mapping[str, Any], device: torch.device
) -> Callable[[torch.Tensor], dict[str, torch.Tensor]]:
    """Load the backbone of ``slot`` and return ``fn(images [B, 3, H, W] in [0, 1]) -> {metric: features}``.

    Raises
    ------
    WeightsUnavailable
        Its weights are missing.
    """
    from torchvision.models.feature_extraction import create_feature_extractor

    interpolation = str(spec.get("interpolation", "bilinear"))
    if slot == "clip":
        model, mean, std = load_clip_vision(spec)
        model = model.to(device)
        size = int(spec.get("resize") or model.config.image_size)  # type: ignore[union-attr,arg-type]

        def clip_fn(x: torch.Tensor) -> dict[str, torch.Tensor]:
            from torchvision.transforms.functional import center_crop

            x = center_crop(resize_shorter(x, size, interpolation), [size, size])
            return {"clip": model(pixel_values=normalize(x, mean, std).to(device)).image_embeds}

        return clip_fn
    model = load_swav_resnet(spec) if slot == "swav" else load_torchvision(spec, f"{slot} ({spec['arch']})")[0]
    nodes: dict[str, str] = dict(spec["nodes"])
    extractor = create_feature_extractor(model, return_nodes=sorted(set(nodes.values()))).to(device).eval()
    size = int(spec["resize"])

    def fn(x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = extractor(normalize(resize_shorter(x, size, interpolation), IMAGENET_MEAN, IMAGENET_STD).to(device))
        return {metric: out[node] for metric, node in nodes.items()}

    return fn


def mindeye_metrics(
    generated: np.ndarray,
    reference: np.ndarray,
    wanted: list[str],
    specs: Mapping[str, Mapping[str, Any]],
    device: torch.device,
    batch_size: int = 32,
) -> tuple[dict[str, float], dict[str, str]]:
    """The MindEye identification / distance metrics in ``wanted`` (names of :data:`MINDEYE_METRICS`).

    Parameters
    ----------
    generated : np.ndarray
        uint8 ``[N, S, H, W, 3]``; scores are averaged over the ``S`` samples.
    reference : np.ndarray
        uint8 ``[N, H, W, 3]``.
    specs : Mapping
        Backbone configs by slot (``alexnet``, ``inception``, ``clip``, ``effnet``, ``swav``).

    Returns
    -------
    (metrics, skipped)
        ``eval/<name>`` -> value, and ``eval/<name>`` -> reason for those whose weights are missing.
    """
    from regionaldiff.evaluation.backbones import WeightsUnavailable

    generated = check_images(generated, "generated", sampled=True)
    reference = check_images(reference, "reference")
    metrics: dict[str, float] = {}
    skipped: dict[str, str] = {}
    by_slot: dict[str, list[str]] = {}
    for name in wanted:
        by_slot.setdefault(MINDEYE_METRICS[name][0], []).append(name)
    for slot, names in by_slot.items():
        try:
            fn = feature_function(slot, specs[slot], device)
        except WeightsUnavailable as err:
            skipped.update({f"eval/{name}": str(err) for name in names})
            continue
        ref = _batched(fn, reference, batch_size)
        per_sample: dict[str, list[float]] = {name: [] for name in names}
        for s in range(generated.shape[1]):
            gen = _batched(fn, generated[:, s], batch_size)
            for name in names:
                score = two_way_identification if MINDEYE_METRICS[name][1] == "two_way" else correlation_distance
                per_sample[name].append(score(gen[name], ref[name]))
        metrics.update({f"eval/{name}": float(np.mean(v)) for name, v in per_sample.items()})
    return metrics, skipped


def pairwise_metrics(
    generated: np.ndarray,
    reference: np.ndarray,
    wanted: list[str],
    resolution: int,
    lpips_spec: Mapping[str, Any] | None,
    device: torch.device,
    batch_size: int = 32,
) -> tuple[dict[str, float], dict[str, str]]:
    """DreamDiffusion pair-wise identification rates (``pairwise_mse/pcc/ssim/lpips``) at ``resolution`` pixels.

    Images are resized to ``resolution x resolution`` (Mind-vis scores 256 x 256 images); scores averaged over
    samples. ``pairwise_lpips`` is skipped with the reason when the AlexNet weights are missing.
    """
    from regionaldiff.evaluation.backbones import WeightsUnavailable

    generated = check_images(generated, "generated", sampled=True)
    reference = resize_square(check_images(reference, "reference"), resolution)
    metrics: dict[str, float] = {}
    skipped: dict[str, str] = {}
    lpips = None
    if "pairwise_lpips" in wanted:
        try:
            lpips = load_lpips(lpips_spec or {}).to(device)
        except WeightsUnavailable as err:
            skipped["eval/pairwise_lpips"] = str(err)
    table: dict[str, tuple[Callable[[np.ndarray], np.ndarray], bool]] = {
        "pairwise_mse": (lambda g: mse_matrix(g, reference), False),
        "pairwise_pcc": (lambda g: correlation_matrix(g, reference), True),
        "pairwise_ssim": (lambda g: ssim_matrix(g, reference), True),
    }
    if lpips is not None:
        table["pairwise_lpips"] = (lambda g: lpips_matrix(lpips, g, reference, device, batch_size), False)
    for name in wanted:
        if name not in table:
            continue
        fn, larger = table[name]
        scores = [
            pairwise_identification(fn(resize_square(generated[:, s], resolution)), larger)
            for s in range(generated.shape[1])
        ]
        metrics[f"eval/{name}"] = float(np.mean(scores))
    return metrics, skipped
