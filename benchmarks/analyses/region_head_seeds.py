"""The region head's map on the test split, per seed: calibrated (the background bias fitted on the validation
split, the default) against uncalibrated (the same network with bias 0: the head as it was before calibration),
paired by seed, against the decoding ceiling of the same condition (``docs/results/decoding_ceiling.csv``).

It reads the runs of an MLflow experiment that trained encoders (any ``pipeline.steps`` that include ``pretrain``),
loads each run's encoder (tag ``checkpoint.encoder``) and dataset (the job's ``config_resolved.yaml``), and scores the
test-split map exactly as ``eval/region_miou`` does (class-fused when the class head is trained, bilinear upsampling,
dataset-level mIoU over the object labels). One row per seed: runs that share an encoder (arms of one seed) count once.

Usage (after e.g. ``regionaldiff -m seed=0,1,2,3,4 ablation=regional_predicted pipeline.steps=[prepare,pretrain]``)::

    python benchmarks/analyses/region_head_seeds.py --tracking-uri sqlite:///outputs/mlflow.db --experiment regionaldiff \\
        --out docs/results/region_head.md
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf
from scipy import stats

from regionaldiff.components import build_encoder, instantiate
from regionaldiff.encoder.mae import EEGMaskedAutoencoder
from regionaldiff.evaluation.region import mean_iou
from regionaldiff.regions import fuse_class_into_map, upsample_prediction


@torch.no_grad()
def map_miou(encoder: EEGMaskedAutoencoder, eeg: np.ndarray, maps: np.ndarray, class_fused: bool) -> float:
    """Test-split map mIoU of ``encoder`` as ``eval/region_miou`` computes it."""
    out = encoder(torch.from_numpy(eeg))
    probs = out["region_logits"].softmax(dim=1)
    if class_fused:
        probs = fuse_class_into_map(probs, out["class_logits"].softmax(dim=-1))
    labels = upsample_prediction(probs.numpy(), maps.shape[-1])
    return mean_iou(labels, maps, encoder.num_classes + 1)


def score_run(output_dir: Path, checkpoint: Path) -> dict[str, float]:
    """Calibrated and uncalibrated test map mIoU of one run's encoder."""
    cfg = OmegaConf.load(output_dir / "config_resolved.yaml")
    dm = instantiate(cfg.dataset, "dataset")
    split = dm.get_split("test")
    truth = dm.ground_truth_region_maps()
    maps = np.stack([truth[i] for i in split.image_ids]).astype(np.int64)
    encoder = build_encoder(
        cfg.encoder.net, n_chans=dm.n_chans, n_times=dm.n_times, sfreq=dm.sfreq, num_classes=dm.num_classes
    )
    encoder.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"])
    encoder.eval()
    class_fused = bool(cfg.encoder.w_cls > 0 and cfg.ldm.get("class_fused_maps", True))
    bias = float(encoder.region_background_bias)
    calibrated = map_miou(encoder, split.eeg, maps, class_fused)
    encoder.region_background_bias.zero_()
    uncalibrated = map_miou(encoder, split.eeg, maps, class_fused)
    return {"bias": bias, "calibrated": calibrated, "uncalibrated": uncalibrated, "n_test": len(maps)}


def ceiling_of(csv_path: Path, montage: str, snr: float, averaged: bool) -> float | None:
    """The decoding ceiling's test mIoU of a condition, from ``docs/results/decoding_ceiling.csv`` (None if absent)."""
    if not csv_path.is_file():
        return None
    with csv_path.open() as f:
        for row in csv.DictReader(f):
            if not row.get("montage") or not row.get("snr"):
                continue  # the chance and grid-resolution reference rows
            row_averaged = str(row.get("averaged", "")).lower() in ("true", "1", "yes", "averaged")
            if row["montage"] == montage and float(row["snr"]) == snr and row_averaged == averaged:
                return float(row["ceiling_miou"])
    return None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tracking-uri", default="sqlite:///outputs/mlflow.db")
    p.add_argument("--experiment", required=True)
    p.add_argument(
        "--ceiling-csv", default=str(Path(__file__).resolve().parents[2] / "docs" / "results" / "decoding_ceiling.csv")
    )
    p.add_argument("--out", default=None, help="markdown file to write (printed either way)")
    args = p.parse_args()

    from mlflow.tracking import MlflowClient

    client = MlflowClient(args.tracking_uri)
    experiment = client.get_experiment_by_name(args.experiment)
    if experiment is None:
        raise SystemExit(f"No MLflow experiment {args.experiment!r} at {args.tracking_uri}.")
    by_seed: dict[int, dict[str, float]] = {}
    condition = None
    for run in client.search_runs([experiment.experiment_id], max_results=5000):
        tags, params = run.data.tags, run.data.params
        checkpoint = tags.get("checkpoint.encoder")
        if not checkpoint or not Path(checkpoint).is_file() or "seed" not in params:
            continue
        if float(params.get("encoder.w_region", 0)) <= 0:
            continue
        seed = int(params["seed"])
        if seed in by_seed:
            continue
        by_seed[seed] = score_run(Path(tags["output_dir"]), Path(checkpoint))
        condition = (
            tags.get("data.montage"),
            float(tags.get("data.snr", "nan")),
            params.get("dataset.average_repetitions"),
        )
        print(f"seed {seed}: {json.dumps(by_seed[seed])}", flush=True)
    if not by_seed:
        raise SystemExit("No run with a trained region head and its encoder checkpoint in this experiment.")

    seeds = sorted(by_seed)
    cal = np.array([by_seed[s]["calibrated"] for s in seeds])
    unc = np.array([by_seed[s]["uncalibrated"] for s in seeds])
    diff = cal - unc
    ceiling = None
    if condition is not None:
        ceiling = ceiling_of(Path(args.ceiling_csv), condition[0], condition[1], str(condition[2]).lower() != "false")
    lines = [
        f"Test-split map mIoU of the region head, {len(seeds)} seeds ({condition[0]}, snr {condition[1]:g}); "
        "uncalibrated = the same encoder with background bias 0 (the head before calibration).",
        "",
        "| seed | background bias (fitted on val) | uncalibrated | calibrated |",
        "| --- | --- | --- | --- |",
        *[
            f"| {s} | {by_seed[s]['bias']:+.2f} | {by_seed[s]['uncalibrated']:.3f} | {by_seed[s]['calibrated']:.3f} |"
            for s in seeds
        ],
        f"| mean ± std | | {unc.mean():.3f} ± {unc.std(ddof=1) if len(seeds) > 1 else 0:.3f} "
        f"| {cal.mean():.3f} ± {cal.std(ddof=1) if len(seeds) > 1 else 0:.3f} |",
        "",
    ]
    if len(seeds) > 1:
        sd = diff.std(ddof=1)
        lower = diff.mean() - stats.t.ppf(0.95, len(seeds) - 1) * sd / np.sqrt(len(seeds))
        lines.append(
            f"Paired (calibrated - uncalibrated): {diff.mean():+.3f} ± {sd:.3f}, one-sided 95% lower bound {lower:+.3f}."
        )
    if ceiling is not None:
        lines.append(
            f"Decoding ceiling of this condition (docs/results/decoding_ceiling.md): {ceiling:.3f}; calibrated head = "
            f"{cal.mean() / ceiling:.0%} of it, uncalibrated {unc.mean() / ceiling:.0%}."
        )
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
