"""The outputs of the decoding ceiling: ``<stem>.{csv,json,png,md}`` of the default world and of the presets."""

from __future__ import annotations

import csv
import datetime as dt
import json
import os
import platform
import shlex
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ceiling.probes import CLASS_L2S, CLASS_WDS, LINEAR_WDS, MLP_WDS, OFFSETS

#: test ``eval/region_miou`` of the region head at the default condition (things17, snr 1, averaged), mean of 5 seeds
#: (docs/ablation.md): calibrated (the default, encoder.calibrate_background, encoder 80 epochs) and with the
#: background bias at 0
HEAD_MIOU = 0.302

HEAD_MIOU_UNCALIBRATED = 0.267

#: heading of the hand-written part of the markdown, which a re-run keeps
READING = "## Reading"

CSV_FIELDS = (
    "kind", "montage", "snr", "averaged", "n_train", "n_val", "n_test", "ridge_lambda", "ridge_val_r2",
    "linear_miou", "linear_wd", "linear_offset_miou", "linear_wd_offset", "linear_offset",
    "mlp_miou", "mlp_wd", "mlp_offset_miou", "mlp_wd_offset", "mlp_offset",
    "ceiling_plain_miou", "ceiling_miou", "ceiling_probe", "class_top1", "class_probe", "class_wd", "seconds",
)  # fmt: skip


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
