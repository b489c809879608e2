"""The probes of the decoding ceiling: ridge features, linear / MLP / class probes, the EEG-free references.

Maps are scored exactly as ``eval/region_miou``: :func:`~regionaldiff.regions.upsample_prediction`
of the coarse probabilities to the image size, then :func:`~regionaldiff.evaluation.region.mean_iou` over the
foreground labels. Every choice (ridge penalty, weight decay, probe, background offset) is made on validation.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ceiling.world import Scenes, Splits
from regionaldiff.evaluation.region import mean_iou
from regionaldiff.regions import coarse_region_target, upsample_prediction

RIDGE_LAMBDAS = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0)  # times the number of training images

LINEAR_WDS = (0.01, 0.1, 1.0)

MLP_WDS = (0.1, 1.0, 3.0)

CLASS_WDS = (0.01, 0.1, 1.0)

CLASS_L2S = (1e-4, 1e-3, 1e-2)  # L2 penalty (on the mean cross-entropy) of the logistic regression on the EEG

OFFSETS = (0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0)


def soft_targets(maps: np.ndarray, n_labels: int, grid: int) -> torch.Tensor:
    """Soft coarse targets ``[N, L, grid, grid]`` (the region head's training target; ``L`` labels, background 0)."""
    return coarse_region_target(torch.from_numpy(maps.astype(np.int64)), n_labels, grid)


def ridge_features(
    eeg: np.ndarray, targets: torch.Tensor, splits: Splits, pca_dim: int, lambdas: Sequence[float] = RIDGE_LAMBDAS
) -> tuple[torch.Tensor, dict[str, float]]:
    """Ridge predictions of the soft targets, leave-one-out on train, reduced by PCA to ``pca_dim`` whitened dims.

    Parameters
    ----------
    eeg : np.ndarray
        ``[N, C, T']`` EEG of all splits (train first).
    targets : torch.Tensor
        ``[N, K+1, g, g]`` soft coarse targets.
    splits : Splits
        Split sizes.
    pca_dim : int
        Components kept.
    lambdas : sequence of float
        Ridge penalties to try, in units of the number of training images (on standardised features).

    Returns
    -------
    features : torch.Tensor
        float32 ``[N, pca_dim]`` (unit variance on train).
    info : dict
        ``ridge_lambda`` (chosen on the validation MSE) and ``ridge_val_r2``.
    """
    n = splits.n_train
    x = torch.from_numpy(eeg.reshape(len(eeg), -1)).float()
    x = (x - x[:n].mean(0)) / (x[:n].std(0) + 1e-6)
    y = targets.reshape(len(targets), -1).float()
    y = y - y[:n].mean(0)
    gram = (x[:n].T @ x[:n]).double()
    cross = (x[:n].T @ y[:n]).double()
    eye = torch.eye(gram.shape[0], dtype=torch.float64)
    best: tuple[float, float, torch.Tensor, torch.Tensor] | None = None
    for lam in lambdas:
        chol = torch.linalg.cholesky(gram + lam * n * eye)
        weights = torch.cholesky_solve(cross, chol).float()
        mse = float(((x[splits.val] @ weights - y[splits.val]) ** 2).mean())
        if best is None or mse < best[0]:
            best = (mse, lam, chol, weights)
    assert best is not None
    mse, lam, chol, weights = best
    pred = x @ weights
    # exact leave-one-out predictions of ridge on train: y - e / (1 - h), h the leverage x A^-1 x^T
    leverage = ((x[:n] @ torch.cholesky_inverse(chol).float()) * x[:n]).sum(1, keepdim=True)
    pred[:n] = y[:n] - (y[:n] - pred[:n]) / (1 - leverage)
    centre = pred[:n].mean(0)
    _, _, v = torch.linalg.svd(pred[:n] - centre, full_matrices=False)
    features = (pred - centre) @ v[:pca_dim].T
    features = features / (features[:n].std(0) + 1e-6)
    r2 = 1 - mse / float((y[splits.val] ** 2).mean())
    return features, {"ridge_lambda": lam, "ridge_val_r2": r2}


def train_probe(
    features: torch.Tensor,
    target: torch.Tensor,
    n_train: int,
    n_out: int,
    hidden: int = 0,
    weight_decay: float = 0.1,
    epochs: int = 40,
    lr: float = 1e-2,
    batch_size: int = 512,
    seed: int = 0,
) -> torch.Tensor:
    """Fit a linear (``hidden=0``) or one-hidden-layer MLP probe with cross-entropy; logits of the held-out images.

    Parameters
    ----------
    features : torch.Tensor
        ``[N, D]`` inputs of all splits (train first).
    target : torch.Tensor
        Soft targets ``[N, K+1, g, g]`` (``n_out = (K+1) g g``) or class indices ``[N]`` (``n_out`` classes).
    n_train : int
        The first ``n_train`` rows train.
    n_out : int
        Output units.
    hidden : int
        Hidden units of the MLP (GELU); 0 gives the linear probe.
    weight_decay, epochs, lr, batch_size, seed
        AdamW with a one-cycle learning-rate schedule.

    Returns
    -------
    torch.Tensor
        Logits of rows ``n_train:``, shaped like ``target``'s rows.
    """
    torch.manual_seed(seed)
    d = features.shape[1]
    if hidden:
        net: torch.nn.Module = torch.nn.Sequential(
            torch.nn.Linear(d, hidden), torch.nn.GELU(), torch.nn.Linear(hidden, n_out)
        )
    else:
        net = torch.nn.Linear(d, n_out)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
    steps_per_epoch = -(-n_train // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * steps_per_epoch)
    shape = target.shape[1:]
    for _ in range(epochs):
        perm = torch.randperm(n_train)
        for i in range(0, n_train, batch_size):
            idx = perm[i : i + batch_size]
            logits = net(features[idx]).reshape(len(idx), *shape) if shape else net(features[idx])
            loss = F.cross_entropy(logits, target[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    with torch.no_grad():
        out = net(features[n_train:])
    return out.reshape(len(out), *shape) if shape else out


def logistic_regression(eeg: np.ndarray, labels: torch.Tensor, n_train: int, l2: float) -> torch.Tensor:
    """Multinomial logistic regression on the standardised EEG (full-batch L-BFGS); logits of the held-out rows.

    Parameters
    ----------
    eeg : np.ndarray
        ``[N, C, T']`` EEG of all splits (train first).
    labels : torch.Tensor
        ``[N]`` class indices.
    n_train : int
        The first ``n_train`` rows train.
    l2 : float
        Penalty ``l2 * ||W||^2`` added to the mean cross-entropy.

    Returns
    -------
    torch.Tensor
        ``[N - n_train, K]`` logits.
    """
    x = torch.from_numpy(eeg.reshape(len(eeg), -1)).float()
    x = (x - x[:n_train].mean(0)) / (x[:n_train].std(0) + 1e-6)
    n_classes = int(labels.max()) + 1
    weight = torch.zeros(x.shape[1], n_classes, requires_grad=True)
    bias = torch.zeros(n_classes, requires_grad=True)
    opt = torch.optim.LBFGS([weight, bias], max_iter=300, history_size=20, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(x[:n_train] @ weight + bias, labels[:n_train]) + l2 * weight.square().sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return x[n_train:] @ weight + bias


def map_miou(logits: torch.Tensor, maps: np.ndarray, offset: float, n_labels: int) -> float:
    """``eval/region_miou`` of coarse logits ``[N, L, g, g]``: background log-probability lowered by ``offset``."""
    logp = logits.float().log_softmax(1).clone()
    logp[:, 0] -= offset
    pred = upsample_prediction(logp.softmax(1).numpy(), maps.shape[-1])
    return mean_iou(pred, maps.astype(np.int64), n_labels)


def select(scores: dict[Any, tuple[float, float]]) -> tuple[Any, float, float]:
    """The key with the best validation score (first on ties): ``(key, val, test)`` of ``{key: (val, test)}``."""
    key = max(scores, key=lambda k: scores[k][0])
    return key, *scores[key]


def evaluate_condition(
    eeg: np.ndarray, world: Scenes, pca_dim: int = 64, hidden: int = 256, epochs: int = 40, batch_size: int = 512
) -> dict[str, Any]:
    """Fit every probe on one condition's EEG; validation-selected test scores (a row of the results).

    Parameters
    ----------
    eeg : np.ndarray
        ``[N, C, T']`` EEG of all splits (train, validation, test).
    world : Scenes
        The true maps and scene labels, the splits, the map labels (background 0 included), and the scene classes
        the class probes choose from (None skips them, zero-shot: the test concepts are unseen, and leaves
        ``class_top1`` NaN).
    pca_dim, hidden, epochs, batch_size
        Feature dimension, MLP hidden units, training epochs and batch size of every probe.

    Returns
    -------
    dict
        The ``CSV_FIELDS`` scores of the condition (without its description).
    """
    t0 = time.perf_counter()
    maps, labels, splits, n_labels, n_classes = world.maps, world.labels, world.splits, world.n_labels, world.n_classes
    targets = soft_targets(maps, n_labels, world.grid)
    features, row = ridge_features(eeg, targets, splits, pca_dim)
    n, n_val = splits.n_train, splits.n_val
    val_maps, test_maps = maps[splits.val], maps[splits.test]
    held_out: dict[str, dict[float, torch.Tensor]] = {"linear": {}, "mlp": {}}
    for probe, width, wds in (("linear", 0, LINEAR_WDS), ("mlp", hidden, MLP_WDS)):
        for wd in wds:
            held_out[probe][wd] = train_probe(
                features,
                targets,
                n,
                n_labels * world.grid * world.grid,
                hidden=width,
                weight_decay=wd,
                epochs=epochs,
                batch_size=batch_size,
            )
    choices: dict[str, tuple[float, float]] = {}
    for probe, runs in held_out.items():
        scores = {
            (wd, b): (map_miou(out[:n_val], val_maps, b, n_labels), map_miou(out[n_val:], test_maps, b, n_labels))
            for wd, out in runs.items()
            for b in OFFSETS
        }
        (wd, _), val, test = select({k: v for k, v in scores.items() if k[1] == 0.0})
        row.update({f"{probe}_miou": test, f"{probe}_wd": wd})
        choices[probe] = (val, test)
        (wd, b), val, test = select(scores)
        row.update({f"{probe}_offset_miou": test, f"{probe}_wd_offset": wd, f"{probe}_offset": b})
        choices[f"{probe}+offset"] = (val, test)
    row["ceiling_plain_miou"] = select({k: choices[k] for k in ("linear", "mlp")})[2]
    row["ceiling_probe"], _, row["ceiling_miou"] = select(choices)
    if n_classes is None:
        row.update(class_top1=float("nan"), class_probe="", class_wd="", seconds=time.perf_counter() - t0)
        return row
    y = torch.from_numpy(labels.astype(np.int64))
    class_logits = {
        ("features", wd): train_probe(features, y, n, n_classes, weight_decay=wd, epochs=epochs, batch_size=batch_size)
        for wd in CLASS_WDS
    }
    class_logits.update({("eeg", l2): logistic_regression(eeg, y, n, l2) for l2 in CLASS_L2S})
    class_scores = {}
    for key, logits in class_logits.items():
        pred = logits.argmax(1).numpy()
        class_scores[key] = (
            float((pred[:n_val] == labels[splits.val]).mean()),
            float((pred[n_val:] == labels[splits.test]).mean()),
        )
    (row["class_probe"], row["class_wd"]), _, row["class_top1"] = select(class_scores)
    row["seconds"] = time.perf_counter() - t0
    return row


def reference_rows(world: Scenes, seed: int = 0) -> list[dict[str, Any]]:
    """Scores that need no EEG: the training prior's per-cell majority label, a random training map, the 8x8 oracle.

    Parameters
    ----------
    world : Scenes
        Region maps and scene labels of all splits, as in :func:`evaluate_condition` (``n_classes`` None: no class
        references, ``class_top1`` NaN).
    seed : int
        Seed of the random map draw.

    Returns
    -------
    list of dict
        Rows with ``kind``, ``ceiling_miou`` (the reference's test mIoU) and ``class_top1`` (the majority class).
    """
    maps, labels, splits, n_labels, n_classes = world.maps, world.labels, world.splits, world.n_labels, world.n_classes
    n = splits.n_train
    test_maps = maps[splits.test].astype(np.int64)
    targets = soft_targets(maps, n_labels, world.grid)
    prior = targets[:n].mean(0, keepdim=True).expand(splits.n_test, -1, -1, -1).numpy()
    majority_top1 = random_top1 = float("nan")
    if n_classes is not None:
        majority_class = np.bincount(labels[:n], minlength=n_classes).argmax()
        majority_top1, random_top1 = float((labels[splits.test] == majority_class).mean()), 1.0 / n_classes
    size = maps.shape[-1]
    random_maps = maps[np.random.default_rng(seed).integers(0, n, splits.n_test)].astype(np.int64)
    oracle = targets[splits.test].numpy()
    return [
        {"kind": kind, "ceiling_miou": mean_iou(pred, test_maps, n_labels), "class_top1": top1}
        for kind, pred, top1 in (
            ("chance_prior_majority", upsample_prediction(prior, size), majority_top1),
            ("chance_random_train_map", random_maps, random_top1),
            ("oracle_true_coarse_8x8", upsample_prediction(oracle, size), float("nan")),
        )
    ]
