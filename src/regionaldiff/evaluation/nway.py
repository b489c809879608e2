"""n-way top-k classification accuracy of reconstructions (Mind-vis, Chen et al. 2023; DreamDiffusion, Bai et al. 2023).

Definition (``get_n_way_top_k_acc`` / ``n_way_top_k_acc`` of the Mind-vis code, reused by DreamDiffusion):

1. An ImageNet classifier (torchvision ViT-H/14, SWAG end-to-end weights, with its own preprocessing transform)
   labels the **ground-truth** image: its class is the argmax of the classifier's softmax.
2. The classifier's softmax on the **generated** image is read at the true class and at ``n - 1`` distractor classes
   drawn uniformly without replacement from the other ``C - 1`` classes.
3. The trial is correct when the true class is among the top ``k`` of those ``n`` scores. The reference code puts
   the true class first and ranks with ``torch.topk``/``argmax``, so ties go to the true class: here a trial is
   correct when fewer than ``k`` distractors score *strictly* higher.
4. The accuracy of an image is the mean over ``trials`` draws; the metric is the mean over images.

With ``S`` samples per EEG trial, ``eval/nway_top{k}`` is the mean over images and samples and
``eval/nway_top{k}_max`` the mean over images of the best sample's accuracy. Distractors are drawn from
``numpy.random.default_rng([seed, image_index])``: the same draws for every sample of an image, and the same
number on every run. Published settings: n = 50, k = 1, 50 trials (Mind-vis, DreamDiffusion).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from regionaldiff.evaluation.backbones import check_images, load_torchvision


def nway_topk_accuracy(
    probs: np.ndarray, true_class: np.ndarray, n_way: int, top_k: int = 1, trials: int = 50, seed: int = 0
) -> np.ndarray:
    """Per-image, per-sample n-way top-k accuracy from classifier scores.

    Parameters
    ----------
    probs : np.ndarray
        float ``[N, C]`` or ``[N, S, C]``: classifier scores (softmax or logits; only their order matters) of the
        generated images, ``S`` samples per image.
    true_class : np.ndarray
        int ``[N]``: class of each ground-truth image, in ``[0, C)``.
    n_way : int
        Number of candidate classes (true class + ``n_way - 1`` distractors), ``2 <= n_way <= C``.
    top_k : int
        Correct when the true class ranks within the top ``top_k`` of the ``n_way`` candidates.
    trials : int
        Distractor draws per image.
    seed : int
        Seed of the distractor draws.

    Returns
    -------
    np.ndarray
        float ``[N, S]`` (``S = 1`` for 2-D ``probs``): accuracy averaged over trials.
    """
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim == 2:
        probs = probs[:, None]
    if probs.ndim != 3:
        raise ValueError(f"nway_topk_accuracy: probs must be [N, C] or [N, S, C], got shape {probs.shape}.")
    n, _, num_classes = probs.shape
    true_class = np.asarray(true_class).astype(np.int64).ravel()
    if true_class.shape != (n,):
        raise ValueError(f"nway_topk_accuracy: true_class must be [N] = [{n}], got shape {true_class.shape}.")
    if n and (true_class.min() < 0 or true_class.max() >= num_classes):
        raise ValueError(f"nway_topk_accuracy: true_class must be in [0, {num_classes}).")
    if not 2 <= n_way <= num_classes:
        raise ValueError(f"nway_topk_accuracy: n_way must be in [2, {num_classes}] (number of classes), got {n_way}.")
    if not 1 <= top_k <= n_way:
        raise ValueError(f"nway_topk_accuracy: top_k must be in [1, n_way={n_way}], got {top_k}.")
    if trials < 1:
        raise ValueError(f"nway_topk_accuracy: trials must be >= 1, got {trials}.")
    out = np.empty(probs.shape[:2])
    for i in range(n):
        rng = np.random.default_rng([int(seed), i])
        others = np.delete(np.arange(num_classes), true_class[i])
        picks = np.stack([rng.choice(others, n_way - 1, replace=False) for _ in range(trials)])  # [trials, n-1]
        true_score = probs[i, :, true_class[i]]  # [S]
        higher = (probs[i][:, picks] > true_score[:, None, None]).sum(-1)  # [S, trials]
        out[i] = (higher < top_k).mean(-1)
    return out


@torch.no_grad()
def classifier_probs(
    model: torch.nn.Module, transform: Any, images: np.ndarray, device: torch.device, batch_size: int = 32
) -> np.ndarray:
    """Softmax ``[N, C]`` of a torchvision classifier on uint8 ``[N, H, W, 3]`` images, with ``transform`` applied."""
    out = []
    for start in range(0, len(images), batch_size):
        x = torch.from_numpy(np.ascontiguousarray(images[start : start + batch_size])).permute(0, 3, 1, 2)
        x = transform(x).to(device)
        out.append(model(x).float().softmax(-1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0))


def nway_metrics(
    generated: np.ndarray,
    reference: np.ndarray,
    spec: Mapping[str, Any],
    nway_cfg: Mapping[str, Any],
    device: torch.device | None = None,
    batch_size: int = 32,
) -> dict[str, float]:
    """``eval/nway_top{k}`` and ``eval/nway_top{k}_max`` with the configured classifier (see module docstring).

    Parameters
    ----------
    generated : np.ndarray
        uint8 ``[N, S, H, W, 3]``.
    reference : np.ndarray
        uint8 ``[N, H, W, 3]``.
    spec : Mapping
        The classifier backbone config (:func:`~regionaldiff.evaluation.backbones.backbone_config`).
    nway_cfg : Mapping
        ``n`` (default 50), ``k`` (int or list, default 1), ``trials`` (default 50), ``seed`` (default 0).

    Raises
    ------
    WeightsUnavailable
        The classifier's weights are missing.
    """
    generated = check_images(generated, "generated", sampled=True)
    reference = check_images(reference, "reference")
    device = device or torch.device("cpu")
    model, weights = load_torchvision(spec, f"n-way classifier {spec['arch']}")
    model = model.to(device)
    transform = weights.transforms()
    true_class = classifier_probs(model, transform, reference, device, batch_size).argmax(-1)
    n, s = generated.shape[:2]
    probs = classifier_probs(model, transform, generated.reshape(n * s, *generated.shape[2:]), device, batch_size)
    probs = probs.reshape(n, s, -1)
    ks = nway_cfg["k"]
    metrics = {}
    for k in [ks] if isinstance(ks, int) else list(ks):
        acc = nway_topk_accuracy(
            probs, true_class, int(nway_cfg["n"]), int(k), int(nway_cfg["trials"]), int(nway_cfg["seed"])
        )
        metrics[f"eval/nway_top{k}"] = float(acc.mean())
        metrics[f"eval/nway_top{k}_max"] = float(acc.max(1).mean())
    return metrics


__all__ = ["classifier_probs", "nway_metrics", "nway_topk_accuracy"]
