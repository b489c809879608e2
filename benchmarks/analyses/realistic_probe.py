"""Linear probes of the realistic synthetic presets: how much of what real EEG decoding reports their EEG carries.

For a preset (``conf/dataset/synthetic_things.yaml`` or ``synthetic_imagenet.yaml``) and a list of SNRs, the data are
generated (cached under ``--cache-dir``) and read by simple linear decoders fitted on the training split, scored
on the test split against the bands of real EEG (``../shared/REFERENCE.md``, "Real EEG decoding"):

- zero-shot retrieval (zero-shot presets): ridge regression from the binned EEG to the 8x8 pixel embedding the
  pipeline aligns to (``encoder/align=pixels``), then 200-way retrieval by cosine, the test EEG averaged over 1, 5,
  10, 20 and 80 repetitions;
- class top-1 (closed-set presets): multinomial logistic regression on the binned EEG;
- location: upper vs lower half of the named object's centre, logistic regression on single training trials.

These are guides for the calibration sweep; the calibrated level is then checked with the pipeline's own decoders
(``regionaldiff dataset=<preset>``; docs/realistic.md). Features: EEG averaged in bins of 40 ms, standardised on the
training split; penalties chosen on the validation split.

Usage::

    python benchmarks/analyses/realistic_probe.py --preset synthetic_things --snrs 0.05 0.1 0.2
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import hydra
import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

from regionaldiff.config import compose_config
from regionaldiff.data.synthetic.concept_world import ConceptWorldDataModule
from regionaldiff.encoder.alignment import PixelImageEmbedder
from regionaldiff.evaluation.retrieval import candidates_and_targets, retrieval_topk

ROOT = Path(__file__).resolve().parents[2]
TIME_BIN = 4
REPETITIONS = (1, 5, 10, 20, 80)


def features(eeg: np.ndarray) -> np.ndarray:
    n, c, t = eeg.shape
    t = t - t % TIME_BIN
    return eeg[:, :, :t].reshape(n, c, t // TIME_BIN, TIME_BIN).mean(-1).reshape(n, -1)


def preset_datamodule(preset: str, overrides: dict, cache_dir: str) -> ConceptWorldDataModule:
    """The preset's datamodule as ``regionaldiff dataset=<preset> dataset.KEY=VALUE ...`` builds it."""
    dataset = {**overrides, "cache_dir": cache_dir}
    cfg = compose_config(
        [f"paths.root_dir={ROOT}", f"dataset={preset}", *(f"dataset.{k}={v}" for k, v in dataset.items())]
    )
    return hydra.utils.instantiate(cfg.dataset)


def pixel_embedding(split) -> tuple[list[str], np.ndarray]:
    ids = split.unique_image_ids()
    images = torch.stack([torch.from_numpy(split.images[i]).permute(2, 0, 1).float() / 127.5 - 1 for i in ids])
    return ids, PixelImageEmbedder()(images).numpy()


def ridge(x: np.ndarray, y: np.ndarray, alpha: float) -> np.ndarray:
    x1 = np.hstack([x, np.ones((len(x), 1))])
    reg = alpha * np.eye(x1.shape[1])
    reg[-1, -1] = 0
    return np.linalg.solve(x1.T @ x1 + reg, x1.T @ y)


def apply(w: np.ndarray, x: np.ndarray) -> np.ndarray:
    return np.hstack([x, np.ones((len(x), 1))]) @ w


def probe(dm: ConceptWorldDataModule) -> dict[str, float]:
    train, val, test = (dm.get_split(s) for s in ("train", "val", "test"))
    xt = features(train.eeg)
    mu, sd = xt.mean(0), xt.std(0) + 1e-8
    norm = lambda e: (features(e) - mu) / sd  # noqa: E731
    xt, xv = norm(train.eeg), norm(val.eeg)
    out: dict[str, float] = {}
    # location: upper vs lower half of the named object's centre (single training trials, cross-validated on val)
    up_t, up_v = train.extras["centroid"][:, 0] < 0.5, val.extras["centroid"][:, 0] < 0.5
    best = max(
        (LogisticRegression(C=c, max_iter=2000).fit(xt, up_t) for c in (1e-3, 1e-2, 1e-1)),
        key=lambda m: m.score(xv, up_v),
    )
    up_test = test.extras["centroid"][:, 0] < 0.5
    single = dm.averaged_split("test", 1)
    out["location_updown_1rep"] = float(best.score(norm(single.eeg), up_test))
    if dm.config["protocol"] == "closed_set":
        best = max(
            (LogisticRegression(C=c, max_iter=3000).fit(xt, train.labels) for c in (1e-4, 1e-3, 1e-2, 1e-1)),
            key=lambda m: m.score(xv, val.labels),
        )
        out["class_top1"] = float(best.score(norm(test.eeg), test.labels))
        out["chance"] = 1.0 / dm.config["n_concepts"]
        return out
    ids_t, emb_t = pixel_embedding(train)
    row = {i: k for k, i in enumerate(ids_t)}
    yt = emb_t[[row[i] for i in train.image_ids]]
    ids_v, emb_v = pixel_embedding(val)
    _, tv = candidates_and_targets(val.image_ids)
    alphas = [10.0**p for p in range(0, 6)]
    scores = {a: retrieval_topk(apply(ridge(xt, yt, a), xv), emb_v, tv, ks=(1,))[1] for a in alphas}
    w = ridge(xt, yt, max(scores, key=scores.get))
    for n in REPETITIONS:
        if n > dm.config["test_repetitions"]:
            continue
        averaged = dm.averaged_split("test", n)
        candidates, targets = candidates_and_targets(averaged.image_ids)
        _, emb = pixel_embedding(averaged)
        top = retrieval_topk(apply(w, norm(averaged.eeg)), emb, targets, ks=(1, 5))
        out[f"retrieval_top1_reps{n}"], out[f"retrieval_top5_reps{n}"] = top[1], top[5]
    out["chance"] = 1.0 / len(candidates)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="synthetic_things")
    parser.add_argument("--snrs", type=float, nargs="+", default=[0.1])
    parser.add_argument("--set", nargs="*", default=[], help="KEY=VALUE dataset overrides (as dataset.KEY=VALUE)")
    parser.add_argument("--cache-dir", default=str(ROOT / "outputs" / "cache"))
    parser.add_argument("--out", default=None, help="JSON file of the results")
    args = parser.parse_args()
    overrides = dict(s.split("=", 1) for s in args.set)
    results = []
    for snr in args.snrs:
        dm = preset_datamodule(args.preset, {**overrides, "snr": snr}, args.cache_dir)
        row = {"preset": args.preset, "snr": snr, **overrides, **probe(dm)}
        print(json.dumps(row), flush=True)
        results.append(row)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
