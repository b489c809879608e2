"""Decoding ceiling of the synthetic benchmark: how much object location and class the simulated EEG carries.

Independent of our region head, probes read the coarse 8x8 region map (``[K+1, 8, 8]`` label probabilities) and the
scene's class from the simulated EEG of :class:`~regionaldiff.data.synthetic.SyntheticDataModule`, for each montage,
SNR and single-trial / averaged EEG, with far more training images than the default run. Maps are scored exactly as
``eval/region_miou`` (:func:`~regionaldiff.regions.upsample_prediction` to 32 px, then
:func:`~regionaldiff.evaluation.region.mean_iou` over the foreground labels); the ceiling of a condition is the test
mIoU of the probe (and its weight decay and decision offset) that is best on the validation split.

Data. Per montage, one :meth:`SyntheticDataModule.generate_components` (``dataset=synthetic`` composed with the
montage, seed, sizes and ``n_repetitions``) gives the scenes, their noise-free signal and the noise of every
repetition; every condition is then mixed as the datamodule mixes it,
:func:`~regionaldiff.data.synthetic.datamodule.noisy_eeg` (``snr * signal + noise``; ``tests/test_decoding_ceiling.py``
checks this against a direct ``generate_arrays``), at the cost of one generation instead of ten. *Averaged* EEG is the
mean of the ``n_repetitions`` repetitions (``average_repetitions=True``); *single-trial* EEG is repetition 0 of each
image, so train, validation and test sizes are the same in both. The map labels, the scene classes and the coarse grid
(the region head's ``encoder.net.region_grid``) come from the composed config too.

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

Code: this script runs the benchmark; the package ``ceiling/`` beside it holds the worlds' data
(``ceiling/world.py``), the probes (``ceiling/probes.py``) and the outputs (``ceiling/report.py``).

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
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ceiling.probes import evaluate_condition, reference_rows
from ceiling.report import (
    CSV_FIELDS,
    HEAD_MIOU,
    PRESET_CSV_FIELDS,
    PRESET_HEAD_MIOU,
    read_saved,
    run_meta,
    write_outputs,
    write_preset_outputs,
)
from ceiling.world import ROOT, Components, PresetWorld, Splits, compose, condition_eeg, simulate, simulate_preset
from regionaldiff.data.synthetic.forward import MONTAGES

__all__ = [
    "CSV_FIELDS", "PRESET_CSV_FIELDS", "Components", "PresetWorld", "Splits", "condition_eeg", "main", "run",
    "run_preset", "simulate", "simulate_preset",
]  # fmt: skip

SNRS = (0.25, 0.5, 1.0, 2.0)
#: the realistic presets of the synthetic benchmark (conf/dataset/<preset>.yaml)
PRESETS = ("synthetic_things", "synthetic_imagenet")


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
            rows.extend(reference_rows(comp, seed))
        conditions = [("snr0", 0.0, True)]
        conditions += [("condition", snr, averaged) for snr in snrs for averaged in (False, True)]
        conditions += [("noise_free", noise_free_snr, True)]
        for kind, snr, averaged in conditions:
            eeg = condition_eeg(comp, snr, averaged)
            row = {"kind": kind, "montage": montage, "snr": snr, "averaged": averaged}
            row.update({"n_train": splits.n_train, "n_val": splits.n_val, "n_test": splits.n_test})
            row.update(evaluate_condition(eeg, comp, pca_dim, hidden, epochs, batch_size))
            rows.append(row)
            print(
                f"[{montage}] snr {snr:g} {'averaged' if averaged else 'single'}: linear {row['linear_miou']:.3f} "
                f"(+offset {row['linear_offset_miou']:.3f}), MLP {row['mlp_miou']:.3f} "
                f"(+offset {row['mlp_offset_miou']:.3f}), ceiling {row['ceiling_miou']:.3f} "
                f"[{row['ceiling_probe']}], class top-1 {row['class_top1']:.3f} ({row['seconds']:.0f} s)",
                flush=True,
            )
    return rows


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
        for r in reference_rows(world, 0)
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
        row.update(evaluate_condition(eeg, data, **probe))
        rows.append(row)
        print(
            f"[{preset}] {condition}: ceiling {row['ceiling_miou']:.3f} [{row['ceiling_probe']}], class top-1 "
            f"{row['class_top1']:.3f} ({row['seconds']:.0f} s)",
            flush=True,
        )
    return rows


def main(argv: Sequence[str] | None = None) -> dict[str, Path]:
    """Command line: run the benchmark and write its outputs (see the module docstring)."""
    dataset = compose([]).dataset  # the default world: its repetitions and seed are the defaults here
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--montages", nargs="+", default=list(MONTAGES), choices=MONTAGES)
    p.add_argument("--snrs", nargs="*", type=float, default=list(SNRS))
    p.add_argument("--noise-free-snr", type=float, default=1000.0)
    p.add_argument("--n-train", type=int, default=8000)
    p.add_argument("--n-val", type=int, default=1000)
    p.add_argument("--n-test", type=int, default=1000)
    p.add_argument("--n-repetitions", type=int, default=int(dataset.n_repetitions))
    p.add_argument("--seed", type=int, default=int(dataset.seed))
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
