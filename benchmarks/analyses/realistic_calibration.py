"""Calibration of the realistic synthetic presets with the pipeline's own decoders.

For a preset and a grid of dataset overrides (e.g. ``dataset.snr``), each point runs the pipeline's ``prepare`` and
``pretrain`` steps exactly as ``regionaldiff dataset=<preset>`` does (same config, same artifacts: a later full run
reuses the encoder), then scores the test split with the pipeline's own functions:

- zero-shot presets: ``eval/retrieval_top1`` / ``top5`` (200-way, the 80 test repetitions averaged) and the curve
  over 1, 5, 10, 20 and 80 averaged repetitions (:func:`regionaldiff.steps.evaluate.zero_shot_retrieval`);
- closed-set presets: the classification head's top-1 on the single test trials (``eval/eeg_top1``), and on the
  validation trials (``val_eeg_top1``, to choose an encoder setting by: ``--grid encoder.max_epochs=40,80,160``);
- every preset: the region head's calibrated map mIoU on the validation split (``pretrain/val_region_miou``) and on
  the test split (``region_miou``, scored as ``eval/region_miou`` is, without the LDM).

The bands to land in (``../shared/REFERENCE.md``, "Real EEG decoding") are printed beside each point; docs/realistic.md
records the chosen levels. No reconstruction is made (``finetune`` / ``generate`` are not needed to decode).

Usage::

    python benchmarks/analyses/realistic_calibration.py --preset synthetic_things --grid dataset.snr=0.1,0.2,0.3
    python benchmarks/analyses/realistic_calibration.py --preset synthetic_imagenet --grid dataset.snr=0.05,0.1 \
        --set dataset.category_weight=0.5 --out docs/results/realistic_calibration_imagenet.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import time
from pathlib import Path

import torch

from regionaldiff.config import compose_config
from regionaldiff.encoder.calibration import map_miou
from regionaldiff.evaluation.retrieval import retrieval_scores
from regionaldiff.runner import build_context
from regionaldiff.steps.evaluate import zero_shot_retrieval
from regionaldiff.steps.prepare import prepare
from regionaldiff.steps.pretrain import load_encoder, pretrain
from regionaldiff.tracking.mlflow_run import JobTracker
from regionaldiff.validation import validate

ROOT = Path(__file__).resolve().parents[2]
#: the real bands (../shared/REFERENCE.md): THINGS-EEG2 200-way zero-shot, NICE (low) to UBP (high); 40-way single
#: trials in a randomized design, "marginally above chance" (read here as chance to 4x chance)
BANDS = {
    "retrieval_top1_reps1": (0.02, 0.04),
    "retrieval_top1_reps80": (0.137, 0.509),
    "eeg_top1": (0.025, 0.10),
}


def compose_cfg(overrides: list[str], root: Path = ROOT):
    """The config ``regionaldiff dataset=<preset> ...`` would run from ``root``, its outputs under
    ``root/outputs/calibration`` (caches and artifacts where the pipeline keeps them, so a full run reuses them)."""
    paths = [f"paths.root_dir={root}", f"paths.output_dir={root}/outputs/calibration", "logger=none"]
    return compose_config([*paths, *overrides])


def head_top1(ctx, encoder, split: str = "test") -> float:
    """The classification head's top-1 on ``split``'s trials (on the test split: ``eval/eeg_top1``)."""
    hits, total = 0, 0
    with torch.no_grad():
        for batch in ctx.datamodule.loader(split, False):
            logits = encoder(batch["eeg"].to(ctx.device))["class_logits"]
            hits += int((logits.argmax(-1).cpu() == batch["label"]).sum())
            total += len(batch["label"])
    return hits / total


def calibrate_point(overrides: list[str], root: Path = ROOT) -> dict[str, float]:
    """One point of the grid: ``prepare`` + ``pretrain`` of ``regionaldiff OVERRIDES`` run from ``root``, then the
    test split scored (see the module docstring)."""
    cfg = compose_cfg(overrides, root)
    tracker = JobTracker(False, "", "", root, "")
    ctx = build_context(cfg, validate(cfg), tracker)
    start = time.perf_counter()
    prepare(ctx, True)
    pretrain(ctx, True)
    out: dict[str, float] = {"pretrain_s": round(time.perf_counter() - start, 1)}
    done = json.loads((ctx.slots["pretrain"].path / "DONE").read_text())
    for key in ("pretrain/val_region_miou", "pretrain/val_retrieval_top1"):
        if key in done:
            out[key.split("/")[1]] = float(done[key])
    if "retrieval" in list(cfg.eval.metrics):
        inputs, curve, skipped = zero_shot_retrieval(ctx, "test", ctx.typed.eval)
        if skipped:
            raise RuntimeError(f"retrieval skipped: {skipped}")
        scores = retrieval_scores(
            inputs["eeg_embeddings"], inputs["image_embeddings"], inputs["retrieval_targets"], [1, 5]
        )
        out.update({k.removeprefix("eval/"): v for k, v in {**scores, **curve}.items()})
        out["chance"] = 1.0 / len(inputs["image_embeddings"])
    encoder = load_encoder(ctx).to(ctx.device)
    if encoder.region_grid > 0 and ctx.datamodule.has_region_maps:
        # the region head's map on the test split, calibrated and class-fused as the LDM is conditioned on it
        out["region_miou"] = map_miou(encoder, ctx.datamodule.loader("test", False), class_fused=cfg.encoder.w_cls > 0)
    if "retrieval" not in list(cfg.eval.metrics):
        out["eeg_top1"] = head_top1(ctx, encoder, "test")
        out["val_eeg_top1"] = head_top1(ctx, encoder, "val")  # for choices made on the validation split
        out["chance"] = 1.0 / ctx.datamodule.num_classes
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="synthetic_things")
    parser.add_argument("--grid", nargs="+", default=["dataset.snr=0.2"], help="KEY=V1,V2,... (the product is run)")
    parser.add_argument("--set", nargs="*", default=[], help="fixed overrides KEY=VALUE")
    parser.add_argument("--out", default=None, help="JSON file the results are appended to")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    axes = [(k, v.split(",")) for k, v in (g.split("=", 1) for g in args.grid)]
    rows = []
    for values in itertools.product(*(v for _, v in axes)):
        point = [f"{k}={v}" for (k, _), v in zip(axes, values, strict=True)]
        overrides = [f"dataset={args.preset}", *args.set, *point]
        row = {"preset": args.preset, "overrides": [*args.set, *point], **calibrate_point(overrides)}
        inside = {k: lo <= row[k] <= hi for k, (lo, hi) in BANDS.items() if k in row}
        row["inside_bands"] = inside
        print(json.dumps(row), flush=True)
        rows.append(row)
    if args.out:
        path = Path(args.out)
        previous = json.loads(path.read_text()) if path.is_file() else []
        path.write_text(json.dumps(previous + rows, indent=2))


if __name__ == "__main__":
    main()
