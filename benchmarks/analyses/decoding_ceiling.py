"""Decoding ceiling of the synthetic benchmark: how much object location and class the simulated EEG carries.

Independent of our region head, probes read the coarse 8x8 region map (``[K+1, 8, 8]`` label probabilities) and the
scene's class from the simulated EEG of :class:`~regionaldiff.data.synthetic.SyntheticDataModule`, for each montage,
SNR and single-trial / averaged EEG, with far more training images than the default run. Maps are scored exactly as
``eval/region_miou`` (:func:`~regionaldiff.regions.upsample_prediction` to 32 px, then
:func:`~regionaldiff.evaluation.region.mean_iou` over the foreground labels); the ceiling of a condition is the test
mIoU of the probe (and its weight decay and decision offset) that is best on the validation split.

Data. Per montage, :meth:`SyntheticDataModule.generate_arrays` runs twice with the same seed and sizes: once at
``snr=0`` with ``n_repetitions`` repetitions (the noise of every repetition) and once at ``snr=1`` with one
repetition. The generator draws the scenes first and the noise of repetition 0 next, so both calls share the scenes
and repetition 0's noise, and the difference of their repetition 0 is the noise-free signal. Every condition is then
``snr * signal + noise`` exactly as ``generate_arrays`` would make it (``tests/test_decoding_ceiling.py`` checks
this against a direct call), at the cost of two calls instead of ten. *Averaged* EEG is the mean of the
``n_repetitions`` repetitions (``average_repetitions=True``); *single-trial* EEG is repetition 0 of each image, so
train, validation and test sizes are the same in both.

Features and probes (all fitted on the training split only):

1. the EEG ``[C, T]`` is averaged in time bins of ``--time-bin`` samples (4 = 40 ms, ``T`` 100 -> 25), flattened
   and standardised;
2. ridge regression maps it to the soft coarse target ``coarse_region_target(maps, K+1, 8)`` (384 outputs), the
   ridge penalty chosen on the validation MSE; the training images get their exact leave-one-out predictions (so the
   next stage trains on features as noisy as those of unseen images);
3. the 384 predictions are reduced by PCA (fitted on train) to ``--pca-dim`` whitened components. The simulated EEG
   is linear in 41 latent quantities (36 retinotopic cell coverages, 5 class shares), so these components keep what
   any decoder could use; they are the probes' input;
4. probes, trained with AdamW (one-cycle learning rate, mini-batches) on the cross-entropy against the soft target,
   weight decay chosen on validation: a *linear* probe (overall a linear map of the EEG) and an *MLP* probe (one
   hidden layer). Each is scored with its own probabilities (argmax, as the head is) and with a background offset
   (subtract ``b`` from the background log-probability, ``b`` chosen on validation, which trades background for
   foreground recall, which mIoU rewards). The scene label's top-1 comes from the validation-best of a linear class
   probe on the same features and a multinomial logistic regression (L-BFGS) on the binned, standardised EEG.

References: the per-cell majority label of the training maps (the prior), a random training map per test image, the
true coarse 8x8 target itself (the best any 8x8 prediction can score), a probe at ``snr=0`` and a noise-free probe
(``--noise-free-snr``, averaged) per montage.

The realistic presets (``--preset synthetic_things synthetic_imagenet``): the same features and probes on each
preset's own data (``conf/dataset/<preset>.yaml``: its sizes, repetitions and region labels, one
``generate_arrays`` at ``snr=0`` for the noise of every repetition and ``simulate_signal`` on the same scenes for the
signal), in the conditions: the preset as the pipeline reads it (training and validation repetitions averaged, the
test EEG averaged over all its repetitions), a single test repetition, ``--images-factor`` times the training
images, no signal, and noise-free; the region head's own test mIoU on the preset stands beside them. The zero-shot
preset has no class probe (its test concepts are unseen). Outputs: ``decoding_ceiling_presets.{csv,json,png,md}``.

Usage::

    python benchmarks/analyses/decoding_ceiling.py                # the full benchmark, docs/results/decoding_ceiling.{csv,json,png,md}
    python benchmarks/analyses/decoding_ceiling.py --preset synthetic_things synthetic_imagenet   # the presets
    python benchmarks/analyses/decoding_ceiling.py --montages things17 --snrs 1.0 --n-train 2000 --out-dir /tmp/ceiling
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import platform
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from regionaldiff.data.synthetic import SyntheticDataModule
from regionaldiff.evaluation.region import mean_iou
from regionaldiff.regions import coarse_region_target, upsample_prediction

ROOT = Path(__file__).resolve().parents[2]
MONTAGES = ("things17", "things63", "biosemi128")
SNRS = (0.25, 0.5, 1.0, 2.0)
#: test ``eval/region_miou`` of the region head at the default condition (things17, snr 1, averaged), mean of 5 seeds
#: (docs/ablation.md): calibrated (the default, encoder.calibrate_background, encoder 80 epochs) and with the
#: background bias at 0
HEAD_MIOU = 0.302
HEAD_MIOU_UNCALIBRATED = 0.267
N_CLASSES, IMAGE_SIZE, GRID = 5, 32, 8
N_LABELS = N_CLASSES + 1
#: dataset settings of conf/dataset/synthetic.yaml that the benchmark keeps
DATASET = dict(
    n_classes=N_CLASSES, image_size=IMAGE_SIZE, min_objects=1, max_objects=3, sfreq=100.0, tmin=-0.2, tmax=0.8
)
RIDGE_LAMBDAS = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0)  # times the number of training images
LINEAR_WDS = (0.01, 0.1, 1.0)
MLP_WDS = (0.1, 1.0, 3.0)
CLASS_WDS = (0.01, 0.1, 1.0)
CLASS_L2S = (1e-4, 1e-3, 1e-2)  # L2 penalty (on the mean cross-entropy) of the logistic regression on the EEG
OFFSETS = (0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0)
#: heading of the hand-written part of the markdown, which a re-run keeps
READING = "## Reading"
CSV_FIELDS = (
    "kind", "montage", "snr", "averaged", "n_train", "n_val", "n_test", "ridge_lambda", "ridge_val_r2",
    "linear_miou", "linear_wd", "linear_offset_miou", "linear_wd_offset", "linear_offset",
    "mlp_miou", "mlp_wd", "mlp_offset_miou", "mlp_wd_offset", "mlp_offset",
    "ceiling_plain_miou", "ceiling_miou", "ceiling_probe", "class_top1", "class_probe", "class_wd", "seconds",
)  # fmt: skip


@dataclass
class Components:
    """Binned noise-free signal and noise of one montage's dataset.

    Attributes
    ----------
    signal : np.ndarray
        float32 ``[N, C, T']``: the EEG at ``snr=1`` without noise (``T'`` time bins).
    noise : np.ndarray
        float32 ``[N, R, C, T']``: the noise of each of the ``R`` repetitions.
    maps : np.ndarray
        uint8 ``[N, S, S]`` true region maps (0 = background, ``c + 1`` = class ``c``).
    labels : np.ndarray
        int64 ``[N]`` scene labels (the class covering the most pixels).
    """

    signal: np.ndarray
    noise: np.ndarray
    maps: np.ndarray
    labels: np.ndarray


@dataclass
class Splits:
    """Sizes of the train, validation and test splits (images, in this order in every array)."""

    n_train: int
    n_val: int
    n_test: int

    @property
    def val(self) -> slice:
        return slice(self.n_train, self.n_train + self.n_val)

    @property
    def test(self) -> slice:
        return slice(self.n_train + self.n_val, self.n_train + self.n_val + self.n_test)


def bin_time(eeg: np.ndarray, width: int) -> np.ndarray:
    """Average ``eeg [..., T]`` in consecutive bins of ``width`` samples (a remainder at the end is dropped)."""
    if width <= 1:
        return eeg
    n_bins = eeg.shape[-1] // width
    return eeg[..., : n_bins * width].reshape(*eeg.shape[:-1], n_bins, width).mean(-1)


def simulate(
    montage: str, splits: Splits, seed: int = 0, n_repetitions: int = 4, time_bin: int = 4, verbose: bool = True
) -> Components:
    """Signal and per-repetition noise of ``montage``'s dataset from two :meth:`SyntheticDataModule.generate_arrays`.

    Parameters
    ----------
    montage : str
        ``things17``, ``things63`` or ``biosemi128``.
    splits : Splits
        Images per split (the dataset's ``n_train``, ``n_val``, ``n_test``).
    seed : int
        Dataset seed.
    n_repetitions : int
        Repetitions per image.
    time_bin : int
        Samples per time bin (:func:`bin_time`; binning is linear, so it commutes with scaling and averaging).
    verbose : bool
        Print the generation time.

    Returns
    -------
    Components
        Binned signal and noise, maps and labels.
    """
    t0 = time.perf_counter()
    common = dict(
        DATASET, seed=seed, n_train=splits.n_train, n_val=splits.n_val, n_test=splits.n_test, montage=montage,
        average_repetitions=False, cache_dir=None,
    )  # fmt: skip
    noisy = SyntheticDataModule(snr=0.0, n_repetitions=n_repetitions, **common).generate_arrays()
    clean = SyntheticDataModule(snr=1.0, n_repetitions=1, **common).generate_arrays()
    if not np.array_equal(noisy["maps"], clean["maps"]):
        raise RuntimeError("The two generate_arrays calls drew different scenes; the generator's order changed.")
    signal = bin_time(clean["eeg"][:, 0] - noisy["eeg"][:, 0], time_bin)
    noise = bin_time(noisy["eeg"], time_bin)
    if verbose:
        print(f"[{montage}] generated {len(signal)} images x {n_repetitions} reps in {time.perf_counter() - t0:.0f} s")
    return Components(signal.astype(np.float32), noise.astype(np.float32), noisy["maps"], noisy["labels"])


def condition_eeg(components: Components, snr: float, averaged: bool) -> np.ndarray:
    """The EEG ``[N, C, T']`` of one condition: averaged repetitions or repetition 0 (single trial)."""
    noise = components.noise.mean(axis=1) if averaged else components.noise[:, 0]
    return (np.float32(snr) * components.signal + noise).astype(np.float32)


def soft_targets(maps: np.ndarray, n_labels: int = N_LABELS) -> torch.Tensor:
    """Soft coarse targets ``[N, L, 8, 8]`` (the region head's training target; ``L`` labels, background 0)."""
    return coarse_region_target(torch.from_numpy(maps.astype(np.int64)), n_labels, GRID)


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


def map_miou(logits: torch.Tensor, maps: np.ndarray, offset: float = 0.0, n_labels: int = N_LABELS) -> float:
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
    eeg: np.ndarray,
    maps: np.ndarray,
    labels: np.ndarray,
    splits: Splits,
    pca_dim: int = 64,
    hidden: int = 256,
    epochs: int = 40,
    batch_size: int = 512,
    n_labels: int = N_LABELS,
    n_classes: int | None = N_CLASSES,
) -> dict[str, Any]:
    """Fit every probe on one condition's EEG; validation-selected test scores (a row of the results).

    Parameters
    ----------
    eeg : np.ndarray
        ``[N, C, T']`` EEG of all splits (train, validation, test).
    maps : np.ndarray
        ``[N, S, S]`` true region maps.
    labels : np.ndarray
        ``[N]`` scene labels.
    splits : Splits
        Split sizes.
    pca_dim, hidden, epochs, batch_size
        Feature dimension, MLP hidden units, training epochs and batch size of every probe.
    n_labels : int
        Labels of the maps, background (0) included.
    n_classes : int or None
        Scene classes the class probes choose from; None skips them (zero-shot: the test concepts are unseen) and
        leaves ``class_top1`` NaN.

    Returns
    -------
    dict
        The ``CSV_FIELDS`` scores of the condition (without its description).
    """
    t0 = time.perf_counter()
    targets = soft_targets(maps, n_labels)
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
                n_labels * GRID * GRID,
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


def reference_rows(
    maps: np.ndarray,
    labels: np.ndarray,
    splits: Splits,
    seed: int = 0,
    n_labels: int = N_LABELS,
    n_classes: int | None = N_CLASSES,
) -> list[dict[str, Any]]:
    """Scores that need no EEG: the training prior's per-cell majority label, a random training map, the 8x8 oracle.

    Parameters
    ----------
    maps, labels : np.ndarray
        Region maps and scene labels of all splits.
    splits : Splits
        Split sizes.
    seed : int
        Seed of the random map draw.
    n_labels, n_classes
        As in :func:`evaluate_condition` (``n_classes`` None: no class references, ``class_top1`` NaN).

    Returns
    -------
    list of dict
        Rows with ``kind``, ``ceiling_miou`` (the reference's test mIoU) and ``class_top1`` (the majority class).
    """
    n = splits.n_train
    test_maps = maps[splits.test].astype(np.int64)
    targets = soft_targets(maps, n_labels)
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


def run(
    montages: Sequence[str],
    snrs: Sequence[float],
    splits: Splits,
    noise_free_snr: float = 1000.0,
    seed: int = 0,
    n_repetitions: int = 4,
    time_bin: int = 4,
    pca_dim: int = 64,
    hidden: int = 256,
    epochs: int = 40,
    batch_size: int = 512,
) -> list[dict[str, Any]]:
    """Every condition of every montage (plus its ``snr=0`` and noise-free references) and the EEG-free references.

    Parameters
    ----------
    montages : sequence of str
        Montages to simulate.
    snrs : sequence of float
        SNRs of one repetition; each runs single-trial and averaged.
    splits : Splits
        Images per split.
    noise_free_snr : float
        SNR of the noise-free reference (averaged).
    seed, n_repetitions, time_bin
        Dataset seed, repetitions per image, samples per time bin.
    pca_dim, hidden, epochs, batch_size
        Probe settings (:func:`evaluate_condition`).

    Returns
    -------
    list of dict
        One row per condition and reference (``CSV_FIELDS``).
    """
    rows: list[dict[str, Any]] = []
    for montage in montages:
        comp = simulate(montage, splits, seed, n_repetitions, time_bin)
        if not rows:
            rows.extend(reference_rows(comp.maps, comp.labels, splits, seed))
        conditions = [("snr0", 0.0, True)]
        conditions += [("condition", snr, averaged) for snr in snrs for averaged in (False, True)]
        conditions += [("noise_free", noise_free_snr, True)]
        for kind, snr, averaged in conditions:
            eeg = condition_eeg(comp, snr, averaged)
            row = {"kind": kind, "montage": montage, "snr": snr, "averaged": averaged}
            row.update({"n_train": splits.n_train, "n_val": splits.n_val, "n_test": splits.n_test})
            row.update(evaluate_condition(eeg, comp.maps, comp.labels, splits, pca_dim, hidden, epochs, batch_size))
            rows.append(row)
            print(
                f"[{montage}] snr {snr:g} {'averaged' if averaged else 'single'}: linear {row['linear_miou']:.3f} "
                f"(+offset {row['linear_offset_miou']:.3f}), MLP {row['mlp_miou']:.3f} "
                f"(+offset {row['mlp_offset_miou']:.3f}), ceiling {row['ceiling_miou']:.3f} "
                f"[{row['ceiling_probe']}], class top-1 {row['class_top1']:.3f} ({row['seconds']:.0f} s)",
                flush=True,
            )
    return rows


def plot(rows: Sequence[dict[str, Any]], path: Path) -> None:
    """Ceiling mIoU and class top-1 against SNR: one colour per montage, solid averaged, dashed single-trial."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, NullLocator, ScalarFormatter

    refs = {r["kind"]: r for r in rows if not r.get("montage")}
    fig, axes = plt.subplots(1, 2, figsize=(11, 5))
    montages = list(dict.fromkeys(r["montage"] for r in rows if r.get("montage")))
    snrs = sorted({r["snr"] for r in rows if r["kind"] == "condition"})
    for i, montage in enumerate(montages):
        colour = f"C{i}"
        for averaged, style in ((True, "-"), (False, "--")):
            pts = sorted(
                (r["snr"], r["ceiling_miou"], r["class_top1"])
                for r in rows
                if r.get("montage") == montage and r["kind"] == "condition" and r["averaged"] == averaged
            )
            if pts:
                snr, miou, top1 = zip(*pts)
                label = f"{montage}, {'averaged' if averaged else 'single trial'}"
                axes[0].plot(snr, miou, style, color=colour, marker="o", label=label)
                axes[1].plot(snr, top1, style, color=colour, marker="o")
        for r in rows:
            if r.get("montage") == montage and r["kind"] == "noise_free":
                axes[0].axhline(r["ceiling_miou"], color=colour, ls=":", lw=1.2)
                axes[1].axhline(r["class_top1"], color=colour, ls=":", lw=1.2)
    zero = [r for r in rows if r["kind"] == "snr0"]
    axes[0].axhline(HEAD_MIOU, color="k", lw=1.2, label=f"region head, calibrated ({HEAD_MIOU})")
    axes[0].axhline(
        HEAD_MIOU_UNCALIBRATED,
        color="k",
        ls="--",
        lw=1,
        label=f"region head, uncalibrated ({HEAD_MIOU_UNCALIBRATED:.3f})",
    )
    if "oracle_true_coarse_8x8" in refs:
        oracle = refs["oracle_true_coarse_8x8"]["ceiling_miou"]
        axes[0].axhline(oracle, color="grey", lw=1, label=f"true 8x8 map ({oracle:.2f})")
    if zero:
        level = float(np.mean([r["ceiling_miou"] for r in zero]))
        axes[0].axhline(level, color="grey", ls="-.", lw=1, label=f"probes at SNR 0 ({level:.3f})")
        level = float(np.mean([r["class_top1"] for r in zero]))
        axes[1].axhline(level, color="grey", ls="-.", lw=1, label=f"probes at SNR 0 ({level:.2f})")
    axes[0].plot([], [], "k:", lw=1.2, label="noise-free (colour: montage)")
    for ax, ylabel, top in ((axes[0], "map mIoU (eval/region_miou)", 0.75), (axes[1], "class top-1", 1.02)):
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(FixedLocator(snrs))
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_locator(NullLocator())
        ax.axvline(1.0, color="k", lw=0.5, alpha=0.4)
        ax.set(xlabel="SNR of one repetition (1 = default)", ylabel=ylabel, ylim=(0, top))
        ax.grid(alpha=0.3)
    axes[0].set_title("map: ceiling (best probe on val)", fontsize=10)
    axes[1].set_title("scene class: best class probe on val", fontsize=10)
    axes[1].legend(fontsize=8, loc="lower right")
    fig.legend(*axes[0].get_legend_handles_labels(), loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.17, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def cpu_name() -> str:
    """The CPU's model name (Linux ``/proc/cpuinfo``), else the platform's machine type."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _fmt(value: Any, digits: int = 3) -> str:
    if isinstance(value, float):
        return "" if np.isnan(value) else f"{value:.{digits}f}"
    return "" if value is None else str(value)


def markdown(rows: Sequence[dict[str, Any]], meta: dict[str, Any]) -> str:
    """The generated part of ``docs/results/decoding_ceiling.md``: settings, results table, references."""
    lines = [
        "# Decoding ceiling of the synthetic benchmark",
        "",
        "How much object location and class the simulated EEG carries, read by probes independent of the region",
        "head (method: the docstring of `benchmarks/analyses/decoding_ceiling.py`). Map mIoU is `eval/region_miou` exactly",
        "(coarse 8x8 probabilities, bilinear upsampling to 32 px, argmax, dataset-level mIoU over the 5 foreground",
        "labels) on the test split; everything (ridge penalty, weight decay, probe, background offset) is chosen on",
        "the validation split. *Linear* / *MLP*: each probe's own probabilities (argmax, as the head is scored);",
        "*+offset*: with a background offset chosen on validation. *Ceiling*: the test score of the validation-best",
        "of the four; *ceiling, no offset*: of the two plain ones. Class top-1 (the scene label): the",
        "validation-best of a linear probe on the probe features (*features*) and a multinomial logistic regression",
        "on the binned EEG (*eeg*).",
        "",
        f"- Command: `{meta['command']}`",
        f"- Machine: {meta['machine']}",
        f"- Wall time: {meta['wall_time']} ({meta['date']})",
        f"- Data: {meta['n_train']} train / {meta['n_val']} val / {meta['n_test']} test images per condition,"
        f" dataset seed {meta['seed']}, {meta['n_repetitions']} repetitions; single trial = repetition 0 of each"
        " image, averaged = mean of the repetitions.",
        f"- Features: {meta['time_bin']}-sample time bins ({meta['time_bin'] * 10} ms), standardised; ridge to the"
        f" soft 8x8 target (leave-one-out on train); PCA to {meta['pca_dim']} whitened dims (same for every"
        f" montage). Probes: linear, MLP with {meta['hidden']} hidden units; AdamW, {meta['epochs']} epochs, batch"
        f" {meta['batch_size']}; weight decay from {list(LINEAR_WDS)} (linear), {list(MLP_WDS)} (MLP),"
        f" {list(CLASS_WDS)} (class); background offsets {list(OFFSETS)}. Class logistic regression: L-BFGS, L2"
        f" penalty from {list(CLASS_L2S)}.",
        "",
        "| montage | SNR | averaged? | linear mIoU | linear +offset | MLP mIoU | MLP +offset | ceiling, no offset"
        " | **ceiling mIoU** | best probe | class top-1 | class probe |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        if not r.get("montage"):
            continue
        snr = {"noise_free": f"{r['snr']:g} (noise-free)", "snr0": "0 (no signal)"}.get(r["kind"], f"{r['snr']:g}")
        default = r["kind"] == "condition" and r["montage"] == "things17" and r["snr"] == 1.0 and r["averaged"]
        ceiling = f"**{_fmt(r['ceiling_miou'])}**"
        lines.append(
            f"| {r['montage']} | {snr}{' (default)' if default else ''} | {'yes' if r['averaged'] else 'no'} | "
            f"{_fmt(r['linear_miou'])} | {_fmt(r['linear_offset_miou'])} | {_fmt(r['mlp_miou'])} | "
            f"{_fmt(r['mlp_offset_miou'])} | {_fmt(r['ceiling_plain_miou'])} | {ceiling} | {r['ceiling_probe']} | "
            f"{_fmt(r['class_top1'])} | {r.get('class_probe', '')} |"
        )
    names = {
        "chance_prior_majority": "per-cell majority label of the training maps (prior), all test images",
        "chance_random_train_map": "a random training image's true map per test image (class: a uniform guess)",
        "oracle_true_coarse_8x8": "the true coarse 8x8 target, upsampled (about the best an 8x8 prediction can do)",
    }
    lines += [
        "",
        "References without EEG (test split):",
        "",
        "| reference | map mIoU | class top-1 |",
        "| --- | --- | --- |",
    ]
    for r in rows:
        if r["kind"] in names:
            lines.append(f"| {names[r['kind']]} | {_fmt(r['ceiling_miou'])} | {_fmt(r['class_top1'])} |")
    lines += [
        "",
        "The region head's test `eval/region_miou` at the default condition (things17, SNR 1, averaged, 1000 training"
        f" images; 5 seeds, `docs/ablation.md`): {HEAD_MIOU:.3f} calibrated (the default: encoder 80 epochs),"
        f" {HEAD_MIOU_UNCALIBRATED:.3f} with the background bias at 0. The first head (40 epochs, no calibration) was"
        " at 0.230; the 0.238 below is its seed-0 value.",
        "",
        "![decoding ceiling](decoding_ceiling.png)",
        "",
    ]
    return "\n".join(lines)


def write_outputs(rows: Sequence[dict[str, Any]], meta: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    """Write ``decoding_ceiling.{csv,json,png,md}`` into ``out_dir``; returns the paths by suffix."""
    return write_files(rows, meta, out_dir / "decoding_ceiling", CSV_FIELDS, plot, markdown)


def write_files(
    rows: Sequence[dict[str, Any]],
    meta: dict[str, Any],
    stem: Path,
    fields: Sequence[str],
    plot_to: Callable[[Sequence[dict[str, Any]], Path], None],
    markdown_of: Callable[[Sequence[dict[str, Any]], dict[str, Any]], str],
) -> dict[str, Path]:
    """Write ``<stem>.{csv,json,png,md}``: the ``fields`` of every row, rows and meta, the plot, the markdown (a
    hand-written reading of an earlier run, from :data:`READING` on, is kept); returns the paths by suffix."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = {ext: stem.with_name(f"{stem.name}.{ext}") for ext in ("csv", "json", "png", "md")}
    with paths["csv"].open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for r in rows:
            writer.writerow({k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in r.items() if k in fields})
    clean = [{k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in r.items()} for r in rows]
    paths["json"].write_text(json.dumps({"meta": meta, "rows": clean}, indent=1) + "\n")
    plot_to(rows, paths["png"])
    text = markdown_of(rows, meta)
    old = paths["md"].read_text() if paths["md"].is_file() else ""
    if READING in old:  # keep the hand-written reading of an earlier run
        text += old[old.index(READING) :]
    paths["md"].write_text(text)
    return paths


# -- the realistic presets ----------------------------------------------------------------------------------------
#: the realistic presets of the synthetic benchmark (conf/dataset/<preset>.yaml)
PRESETS = ("synthetic_things", "synthetic_imagenet")
#: test ``eval/region_miou`` of the region head on each preset as ``regionaldiff dataset=<preset>`` trains it (the
#: method's arm of the paired claims, mean of 5 seeds; docs/realistic.md)
PRESET_HEAD_MIOU = {"synthetic_things": 0.506, "synthetic_imagenet": 0.008}
PRESET_CSV_FIELDS = ("preset", "condition", "n_labels") + CSV_FIELDS[1:]
PRESET_CONDITIONS = {
    "preset": "the preset as the pipeline reads it",
    "single_test_trial": "test EEG one repetition (training as the preset)",
    "more_training_images": "{factor}x the training images per concept",
    "snr0": "no signal (snr 0)",
    "noise_free": "noise-free (snr {snr:g})",
}


@dataclass
class PresetWorld:
    """A realistic preset's data split into noise-free signal and per-repetition noise (one subject).

    Attributes
    ----------
    signal : np.ndarray
        float32 ``[N, C, T']``: the binned EEG at ``snr=1`` without noise, train, validation and test images in order.
    noise : dict
        split -> float32 ``[n, R, C, T']``, the noise of each of the split's ``R`` repetitions.
    maps : np.ndarray
        ``[N, S, S]`` region maps in the labels the pipeline scores (object / background layouts, or classes).
    labels : np.ndarray
        int64 ``[N]`` the concept (class) of each image.
    splits : Splits
        Images per split.
    snr : float
        The preset's ``dataset.snr``.
    n_labels : int
        Map labels, background included (``num_region_labels``).
    n_classes : int or None
        Classes of the closed set; None for a zero-shot preset (no class probe: its test concepts are unseen).
    """

    signal: np.ndarray
    noise: dict[str, np.ndarray]
    maps: np.ndarray
    labels: np.ndarray
    splits: Splits
    snr: float
    n_labels: int
    n_classes: int | None

    def eeg(self, snr: float, test_repetitions: int | None = None) -> np.ndarray:
        """``[N, C, T']``: ``snr * signal`` plus each split's noise averaged over its repetitions, as the pipeline
        reads the preset (``test_repetitions``: average only the first ones of the test split)."""
        noise = [
            self.noise[split][:, :test_repetitions].mean(axis=1) if split == "test" else self.noise[split].mean(axis=1)
            for split in ("train", "val", "test")
        ]
        return (np.float32(snr) * self.signal + np.concatenate(noise)).astype(np.float32)


def simulate_preset(
    preset: str, overrides: Sequence[str] = (), images_factor: int = 1, time_bin: int = 4, verbose: bool = True
) -> PresetWorld:
    """The preset's data (``regionaldiff dataset=<preset> <overrides>``) as signal and noise, from one
    :meth:`~regionaldiff.data.synthetic.concept_world.ConceptWorldDataModule.generate_arrays` at ``snr=0`` (the
    noise, every repetition kept) and its ``simulate_signal`` on the same scenes.

    Parameters
    ----------
    preset : str
        ``synthetic_things`` or ``synthetic_imagenet``.
    overrides : sequence of str
        Hydra overrides of the dataset (``dataset.KEY=VALUE``), e.g. smaller sizes in tests.
    images_factor : int
        Training images per concept multiplied by this (more data than the preset; other scenes are drawn).
    time_bin, verbose
        Samples per time bin (:func:`bin_time`), and print the generation time.

    Returns
    -------
    PresetWorld
    """
    import hydra

    from regionaldiff.config import compose_config

    t0 = time.perf_counter()
    cfg = compose_config([f"paths.root_dir={ROOT}", f"dataset={preset}", *overrides])
    if cfg.dataset.n_subjects != 1:
        raise ValueError(f"--preset reads one subject; dataset.n_subjects is {cfg.dataset.n_subjects}.")
    images = int(cfg.dataset.images_per_concept) * images_factor
    dm = hydra.utils.instantiate(
        cfg.dataset, snr=0.0, average_repetitions=False, images_per_concept=images, cache_dir=None
    )
    arrays = dm.generate_arrays()
    splits = Splits(*(len(arrays[f"{s}_labels"]) for s in ("train", "val", "test")))
    maps = np.concatenate([arrays[f"{s}_maps"] for s in ("train", "val", "test")])
    signal = bin_time(dm.simulate_signal(maps, dm.head_model(0)), time_bin)
    noise = {s: bin_time(arrays[f"{s}_eeg_s0"], time_bin).astype(np.float32) for s in ("train", "val", "test")}
    if verbose:
        print(f"[{preset}] generated {len(maps)} images in {time.perf_counter() - t0:.0f} s", flush=True)
    return PresetWorld(
        signal=signal.astype(np.float32),
        noise=noise,
        maps=dm.region_labels.relabel(maps).astype(np.int64),
        labels=np.concatenate([arrays[f"{s}_labels"] for s in ("train", "val", "test")]).astype(np.int64),
        splits=splits,
        snr=float(cfg.dataset.snr),
        n_labels=dm.num_region_labels,
        n_classes=None if cfg.dataset.protocol == "zero_shot" else dm.num_classes,
    )


def run_preset(
    preset: str,
    overrides: Sequence[str] = (),
    images_factor: int = 4,
    noise_free_snr: float = 1000.0,
    time_bin: int = 4,
    **probe: Any,
) -> list[dict[str, Any]]:
    """The preset's conditions (:data:`PRESET_CONDITIONS`) and its EEG-free references.

    Parameters
    ----------
    preset, overrides
        As in :func:`simulate_preset`.
    images_factor : int
        Training images per concept of the ``more_training_images`` condition, as a multiple of the preset's.
    noise_free_snr : float
        SNR of the noise-free reference.
    time_bin : int
        Samples per time bin.
    **probe
        ``pca_dim``, ``hidden``, ``epochs``, ``batch_size`` of :func:`evaluate_condition`.

    Returns
    -------
    list of dict
        One row per condition and reference (``PRESET_CSV_FIELDS``).
    """
    world = simulate_preset(preset, overrides, 1, time_bin)
    rows = [
        {"preset": preset, "condition": r.pop("kind"), "n_labels": world.n_labels, **r}
        for r in reference_rows(world.maps, world.labels, world.splits, 0, world.n_labels, world.n_classes)
    ]
    conditions: list[tuple[str, PresetWorld, float, int | None]] = [("preset", world, world.snr, None)]
    if world.noise["test"].shape[1] > 1:
        conditions.append(("single_test_trial", world, world.snr, 1))
    if images_factor > 1:
        conditions.append(
            ("more_training_images", simulate_preset(preset, overrides, images_factor, time_bin), world.snr, None)
        )
    conditions += [("snr0", world, 0.0, None), ("noise_free", world, noise_free_snr, None)]
    for condition, data, snr, test_reps in conditions:
        eeg = data.eeg(snr, test_reps)
        row: dict[str, Any] = {"preset": preset, "condition": condition, "n_labels": data.n_labels}
        row.update({"snr": snr, "averaged": test_reps != 1, "n_train": data.splits.n_train})
        row.update({"n_val": data.splits.n_val, "n_test": data.splits.n_test})
        row.update(
            evaluate_condition(
                eeg, data.maps, data.labels, data.splits, n_labels=data.n_labels, n_classes=data.n_classes, **probe
            )
        )
        rows.append(row)
        print(
            f"[{preset}] {condition}: ceiling {row['ceiling_miou']:.3f} [{row['ceiling_probe']}], class top-1 "
            f"{row['class_top1']:.3f} ({row['seconds']:.0f} s)",
            flush=True,
        )
    return rows


def plot_presets(rows: Sequence[dict[str, Any]], meta: dict[str, Any], path: Path) -> None:
    """Ceiling map mIoU of every condition per preset, beside the region head and the EEG-free references."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    presets = list(dict.fromkeys(r["preset"] for r in rows))
    fig, axes = plt.subplots(1, len(presets), figsize=(6 * len(presets), 4), squeeze=False)
    for ax, preset in zip(axes[0], presets):
        mine = [r for r in rows if r["preset"] == preset and r["condition"] in PRESET_CONDITIONS]
        names = [condition_title(r, meta) for r in mine]
        ax.barh(range(len(mine)), [r["ceiling_miou"] for r in mine], color="C0")
        ax.set_yticks(range(len(mine)), names, fontsize=8)
        ax.invert_yaxis()
        head = PRESET_HEAD_MIOU.get(preset)
        if head is not None:
            ax.axvline(head, color="k", lw=1.2, label=f"region head ({head:.3f})")
        refs = {r["condition"]: r["ceiling_miou"] for r in rows if r["preset"] == preset}
        for key, style, title in (
            ("chance_prior_majority", "-.", "prior"),
            ("oracle_true_coarse_8x8", ":", "true 8x8"),
        ):
            if key in refs:
                ax.axvline(refs[key], color="grey", ls=style, lw=1, label=f"{title} ({refs[key]:.3f})")
        ax.set(xlabel="map mIoU (eval/region_miou, test)", xlim=(0, 1), title=preset)
        ax.legend(fontsize=8, loc="lower right")
        ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def condition_title(row: dict[str, Any], meta: dict[str, Any]) -> str:
    """The condition's description for tables and plots."""
    return PRESET_CONDITIONS[row["condition"]].format(factor=meta.get("images_factor", ""), snr=row["snr"])


def markdown_presets(rows: Sequence[dict[str, Any]], meta: dict[str, Any]) -> str:
    """The generated part of ``docs/results/decoding_ceiling_presets.md``."""
    lines = [
        "# Decoding ceiling of the realistic presets",
        "",
        "How much of the region map (and, on the closed set, of the class) the EEG of each realistic preset carries,",
        "read by the probes of `benchmarks/analyses/decoding_ceiling.py` (its docstring has the method) on the preset's",
        "own data: its sizes, its repetitions, its region labels (object / background layouts on `synthetic_things`,",
        "41 labels on `synthetic_imagenet`), scored exactly as `eval/region_miou` (dataset-level mIoU over the",
        "foreground labels, test split). Everything is chosen on the validation split. *Ceiling*: the test score of",
        "the validation-best of the linear and MLP probes, each with and without a background offset.",
        "",
        f"- Command: `{meta['command']}`",
        f"- Machine: {meta['machine']}",
        f"- Wall time: {meta['wall_time']} ({meta['date']})",
        f"- Features: {meta['time_bin']}-sample time bins, ridge to the soft 8x8 target, PCA to {meta['pca_dim']}"
        f" dims; MLP with {meta['hidden']} hidden units; {meta['epochs']} epochs, batch {meta['batch_size']}.",
        "",
    ]
    for preset in dict.fromkeys(r["preset"] for r in rows):
        mine = [r for r in rows if r["preset"] == preset]
        head = PRESET_HEAD_MIOU.get(preset)
        lines += [
            f"## `{preset}`",
            "",
            "| condition | SNR | train / val / test images | linear | MLP | **ceiling mIoU** | best probe | class top-1 |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for r in mine:
            if r["condition"] not in PRESET_CONDITIONS:
                continue
            lines.append(
                f"| {condition_title(r, meta)} | {r['snr']:g} | {r['n_train']} / {r['n_val']} / {r['n_test']} | "
                f"{_fmt(r['linear_miou'])} | {_fmt(r['mlp_miou'])} | **{_fmt(r['ceiling_miou'])}** | "
                f"{r['ceiling_probe']} | {_fmt(r['class_top1'])} |"
            )
        names = {
            "chance_prior_majority": "per-cell majority label of the training maps (prior)",
            "chance_random_train_map": "a random training image's true map",
            "oracle_true_coarse_8x8": "the true coarse 8x8 map, upsampled",
        }
        lines += ["", "| reference (no EEG) | map mIoU | class top-1 |", "| --- | --- | --- |"]
        lines += [
            f"| {names[r['condition']]} | {_fmt(r['ceiling_miou'])} | {_fmt(r['class_top1'])} |"
            for r in mine
            if r["condition"] in names
        ]
        if head is not None:
            lines += ["", f"The region head on this preset (test `eval/region_miou`, 5 seeds): {head:.3f}."]
        lines.append("")
    lines += ["![decoding ceiling of the presets](decoding_ceiling_presets.png)", ""]
    return "\n".join(lines)


def write_preset_outputs(rows: Sequence[dict[str, Any]], meta: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    """Write ``decoding_ceiling_presets.{csv,json,png,md}`` into ``out_dir``; returns the paths by suffix."""
    stem = out_dir / "decoding_ceiling_presets"
    return write_files(
        rows, meta, stem, PRESET_CSV_FIELDS, lambda r, path: plot_presets(r, meta, path), markdown_presets
    )


def read_saved(path: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Rows (``None`` scores back to NaN) and meta of a results JSON, for ``--render-only``."""
    saved = json.loads(path.read_text())
    rows = [{k: (float("nan") if v is None else v) for k, v in r.items()} for r in saved["rows"]]
    return rows, saved["meta"]


def run_meta(shown: Sequence[str], threads: int, wall: float) -> dict[str, Any]:
    """The command, machine, wall time and date every results file records."""
    return {
        "command": shlex.join(["python", "benchmarks/analyses/decoding_ceiling.py", *shown]),
        "machine": f"{os.cpu_count()}-core CPU ({cpu_name()}), {threads} torch thread(s), torch {torch.__version__}",
        "wall_time": f"{wall / 60:.1f} min",
        "wall_seconds": round(wall, 1),
        "date": dt.date.today().isoformat(),
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Path]:
    """Command line: run the benchmark and write its outputs (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--montages", nargs="+", default=list(MONTAGES), choices=MONTAGES)
    p.add_argument("--snrs", nargs="*", type=float, default=list(SNRS))
    p.add_argument("--noise-free-snr", type=float, default=1000.0)
    p.add_argument("--n-train", type=int, default=8000)
    p.add_argument("--n-val", type=int, default=1000)
    p.add_argument("--n-test", type=int, default=1000)
    p.add_argument("--n-repetitions", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--time-bin", type=int, default=4, help="samples per time bin (4 = 40 ms at 100 Hz)")
    p.add_argument("--pca-dim", type=int, default=64)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out-dir", default=str(ROOT / "docs" / "results"))
    p.add_argument(
        "--render-only", action="store_true", help="rewrite the csv, png and md from OUT_DIR/decoding_ceiling.json"
    )
    p.add_argument(
        "--preset", nargs="+", choices=PRESETS, help="run on these realistic presets' own data instead (see above)"
    )
    p.add_argument(
        "--preset-overrides",
        nargs="*",
        default=[],
        metavar="dataset.KEY=VALUE",
        help="with --preset: dataset overrides",
    )
    p.add_argument("--images-factor", type=int, default=4, help="with --preset: training images of the more-data row")
    args = p.parse_args(argv)
    if args.images_factor < 1:
        p.error(
            f"--images-factor must be >= 1 (training images of the more-data row, as a multiple); got {args.images_factor}"
        )
    if args.preset:
        return main_presets(args, sys.argv[1:] if argv is None else list(argv))
    if args.render_only:
        return write_outputs(*read_saved(Path(args.out_dir) / "decoding_ceiling.json"), Path(args.out_dir))
    torch.set_num_threads(args.threads)
    splits = Splits(args.n_train, args.n_val, args.n_test)
    t0 = time.perf_counter()
    rows = run(
        args.montages, args.snrs, splits, args.noise_free_snr, args.seed, args.n_repetitions, args.time_bin,
        args.pca_dim, args.hidden, args.epochs, args.batch_size,
    )  # fmt: skip
    wall = time.perf_counter() - t0
    shown = sys.argv[1:] if argv is None else list(argv)
    meta = {
        **run_meta(shown, args.threads, wall),
        "head_miou": HEAD_MIOU,
        **{k: getattr(args, k) for k in ("n_train", "n_val", "n_test", "n_repetitions", "seed", "time_bin")},
        **{k: getattr(args, k) for k in ("pca_dim", "hidden", "epochs", "batch_size", "noise_free_snr")},
    }
    paths = write_outputs(rows, meta, Path(args.out_dir))
    print(f"wall time {wall / 60:.1f} min; wrote {', '.join(str(p) for p in paths.values())}")
    return paths


def main_presets(args: argparse.Namespace, shown: Sequence[str]) -> dict[str, Path]:
    """``--preset``: run (or, with ``--render-only``, re-render) the presets' ceilings."""
    out_dir = Path(args.out_dir)
    if args.render_only:
        return write_preset_outputs(*read_saved(out_dir / "decoding_ceiling_presets.json"), out_dir)
    torch.set_num_threads(args.threads)
    probe = {k: getattr(args, k) for k in ("pca_dim", "hidden", "epochs", "batch_size")}
    t0 = time.perf_counter()
    rows = [
        row
        for preset in args.preset
        for row in run_preset(
            preset, args.preset_overrides, args.images_factor, args.noise_free_snr, args.time_bin, **probe
        )
    ]
    wall = time.perf_counter() - t0
    meta = {
        **run_meta(shown, args.threads, wall),
        "presets": list(args.preset),
        "preset_overrides": list(args.preset_overrides),
        "head_miou": {p: PRESET_HEAD_MIOU.get(p) for p in args.preset},
        "images_factor": args.images_factor,
        "time_bin": args.time_bin,
        "noise_free_snr": args.noise_free_snr,
        **probe,
    }
    paths = write_preset_outputs(rows, meta, out_dir)
    print(f"wall time {wall / 60:.1f} min; wrote {', '.join(str(p) for p in paths.values())}")
    return paths


if __name__ == "__main__":
    main()
