"""Zero-shot retrieval of THINGS-EEG2 (Gifford et al. 2022) as reported by NICE (Song et al. 2024) and ATM (Li et al. 2024).

Each test EEG embedding (usually the average over the test repetitions of one image) is compared by cosine
similarity with the embeddings of all candidate images (the 200 test concepts of THINGS-EEG2, one image each);
top-k accuracy is the fraction of EEG trials whose own image is among the ``k`` most similar candidates
(200-way top-1 and top-5; chance 0.5 % and 2.5 %). Ties count in favour of the true image (fewer than ``k``
candidates must be strictly more similar), as ``torch.topk`` on the true-first candidate list does.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np


def retrieval_topk(
    eeg_embeddings: np.ndarray,
    image_embeddings: np.ndarray,
    targets: np.ndarray | None = None,
    ks: Iterable[int] = (1, 5),
) -> dict[int, float]:
    """Top-k retrieval accuracy of EEG embeddings against candidate image embeddings.

    Parameters
    ----------
    eeg_embeddings : np.ndarray
        float ``[N, D]``.
    image_embeddings : np.ndarray
        float ``[M, D]``: the candidate images (M = 200 for THINGS-EEG2).
    targets : np.ndarray, optional
        int ``[N]``: row of ``image_embeddings`` that belongs to each EEG; default ``arange(N)`` (requires N = M).
    ks : iterable of int
        The ``k`` values.

    Returns
    -------
    dict
        ``k -> accuracy`` in [0, 1].
    """
    eeg, img, targets = _normalised(eeg_embeddings, image_embeddings, targets)
    sim = eeg @ img.T
    own = sim[np.arange(len(eeg)), targets]
    higher = (sim > own[:, None]).sum(1)
    out = {}
    for k in ks:
        if not 1 <= int(k) <= len(img):
            raise ValueError(f"retrieval_topk: k must be in [1, {len(img)}], got {k}.")
        out[int(k)] = float((higher < int(k)).mean())
    return out


def two_way_accuracy(
    eeg_embeddings: np.ndarray, image_embeddings: np.ndarray, targets: np.ndarray | None = None
) -> float:
    """Pair-wise (2-way) identification: for each EEG and each other candidate, whether the EEG is more similar to
    its own image than to that candidate (ties count half), averaged over all pairs. Chance 0.5.

    Same inputs as :func:`retrieval_topk`.
    """
    eeg, img, targets = _normalised(eeg_embeddings, image_embeddings, targets)
    if len(img) < 2:
        raise ValueError("two_way_accuracy needs at least 2 candidate images.")
    sim = eeg @ img.T
    own = sim[np.arange(len(eeg)), targets][:, None]
    wins = (own > sim).sum(1) + 0.5 * ((own == sim).sum(1) - 1)
    return float((wins / (len(img) - 1)).mean())


def _normalised(
    eeg_embeddings: np.ndarray, image_embeddings: np.ndarray, targets: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Checked, L2-normalised float64 embeddings and the target rows (default ``arange(N)``)."""
    eeg = np.asarray(eeg_embeddings, dtype=np.float64)
    img = np.asarray(image_embeddings, dtype=np.float64)
    if eeg.ndim != 2 or img.ndim != 2 or eeg.shape[1] != img.shape[1]:
        raise ValueError(
            f"retrieval: expected eeg_embeddings [N, D] and image_embeddings [M, D], got {eeg.shape} and {img.shape}."
        )
    if targets is None:
        if len(eeg) != len(img):
            raise ValueError(f"retrieval: without targets, N ({len(eeg)}) must equal M ({len(img)}).")
        targets = np.arange(len(eeg))
    targets = np.asarray(targets).astype(np.int64).ravel()
    if targets.shape != (len(eeg),) or (len(targets) and (targets.min() < 0 or targets.max() >= len(img))):
        raise ValueError(f"retrieval: targets must be [N] = [{len(eeg)}] with values in [0, {len(img)}).")
    eeg = eeg / np.maximum(np.linalg.norm(eeg, axis=1, keepdims=True), 1e-12)
    img = img / np.maximum(np.linalg.norm(img, axis=1, keepdims=True), 1e-12)
    return eeg, img, targets


def chance_band(n_candidates: int, n_trials: int, k: int = 1, z: float = 1.96) -> tuple[float, float, float]:
    """Chance top-``k`` accuracy of ``n_candidates``-way retrieval over ``n_trials`` independent trials, with its
    normal-approximation band ``(chance, low, high)``: a score above ``high`` is above chance at about 95 %."""
    p = min(1.0, k / n_candidates)
    half = z * float(np.sqrt(p * (1 - p) / max(1, n_trials)))
    return p, max(0.0, p - half), min(1.0, p + half)


def retrieval_scores(
    eeg_embeddings: np.ndarray, image_embeddings: np.ndarray, targets: np.ndarray | None, ks: Iterable[int]
) -> dict[str, float]:
    """``eval/retrieval_top{k}`` for each ``k`` (those above the candidate count are left out) and
    ``eval/retrieval_2way``."""
    n_candidates = len(image_embeddings)
    topk = retrieval_topk(eeg_embeddings, image_embeddings, targets, [k for k in ks if int(k) <= n_candidates])
    out = {f"eval/retrieval_top{k}": v for k, v in topk.items()}
    out["eval/retrieval_2way"] = two_way_accuracy(eeg_embeddings, image_embeddings, targets)
    return out


def embed_trials(encoder: Any, loader: Any, device: Any = "cpu") -> tuple[np.ndarray, list[str]]:
    """The aligned EEG embedding of every trial a loader yields ``[N, D]``, and each trial's stimulus id."""
    import torch

    embeddings, ids = [], []
    encoder.eval()
    with torch.no_grad():
        for batch in loader:
            subject = batch.get("subject")
            codes = encoder.encode(batch["eeg"].to(device), None if subject is None else subject.to(device))
            embeddings.append(encoder.embed(codes).float().cpu().numpy())
            ids += [str(i) for i in batch["image_id"]]
    return np.concatenate(embeddings), ids


def candidates_and_targets(trial_ids: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """The distinct stimuli of a split (first-seen order), the candidates, and each trial's row among them."""
    candidates = list(dict.fromkeys(trial_ids))
    row = {c: k for k, c in enumerate(candidates)}
    return candidates, np.asarray([row[i] for i in trial_ids], dtype=np.int64)


def split_retrieval(
    encoder: Any, loader: Any, image_embeddings: Any, ks: Iterable[int] = (1, 5), device: Any = "cpu"
) -> dict[str, float]:
    """Zero-shot retrieval on one split: each trial's EEG embedding ranks the split's distinct images (their
    embeddings looked up in ``image_embeddings``, an :class:`~regionaldiff.encoder.alignment.ImageEmbeddings`)."""
    eeg, ids = embed_trials(encoder, loader, device)
    candidates, targets = candidates_and_targets(ids)
    return retrieval_scores(eeg, image_embeddings.lookup(candidates).numpy(), targets, ks)
