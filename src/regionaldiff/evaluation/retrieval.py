"""Zero-shot retrieval of THINGS-EEG2 (Gifford et al. 2022) as reported by NICE (Song et al. 2024) and ATM (Li et al. 2024).

Each test EEG embedding (usually the average over the test repetitions of one image) is compared by cosine
similarity with the embeddings of all candidate images (the 200 test concepts of THINGS-EEG2, one image each);
top-k accuracy is the fraction of EEG trials whose own image is among the ``k`` most similar candidates
(200-way top-1 and top-5; chance 0.5 % and 2.5 %). Ties count in favour of the true image (fewer than ``k``
candidates must be strictly more similar), as ``torch.topk`` on the true-first candidate list does.
"""

from __future__ import annotations

from collections.abc import Iterable

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
    eeg = np.asarray(eeg_embeddings, dtype=np.float64)
    img = np.asarray(image_embeddings, dtype=np.float64)
    if eeg.ndim != 2 or img.ndim != 2 or eeg.shape[1] != img.shape[1]:
        raise ValueError(
            f"retrieval_topk: expected eeg_embeddings [N, D] and image_embeddings [M, D], got {eeg.shape} and {img.shape}."
        )
    if targets is None:
        if len(eeg) != len(img):
            raise ValueError(f"retrieval_topk: without targets, N ({len(eeg)}) must equal M ({len(img)}).")
        targets = np.arange(len(eeg))
    targets = np.asarray(targets).astype(np.int64).ravel()
    if targets.shape != (len(eeg),) or (len(targets) and (targets.min() < 0 or targets.max() >= len(img))):
        raise ValueError(f"retrieval_topk: targets must be [N] = [{len(eeg)}] with values in [0, {len(img)}).")
    eeg = eeg / np.maximum(np.linalg.norm(eeg, axis=1, keepdims=True), 1e-12)
    img = img / np.maximum(np.linalg.norm(img, axis=1, keepdims=True), 1e-12)
    sim = eeg @ img.T
    own = sim[np.arange(len(eeg)), targets]
    higher = (sim > own[:, None]).sum(1)
    out = {}
    for k in ks:
        if not 1 <= int(k) <= len(img):
            raise ValueError(f"retrieval_topk: k must be in [1, {len(img)}], got {k}.")
        out[int(k)] = float((higher < int(k)).mean())
    return out
