"""Summarise the region-awareness ablation from MLflow: a table (mean and spread over seeds), paired comparisons
with confidence bounds, and a figure.

Run the ablation first (one multirun: 4 arms x 3 seeds on the synthetic benchmark)::

    regionaldiff experiment=ablation_regions            # or with overrides, e.g. dataset.n_train=500
    python benchmarks/ablation_summary.py                # -> docs/ablation.md, docs/ablation.png

The latest sweep of the experiment is used unless ``--sweep-run-id`` names another parent run.

All arms of one seed share the dataset (the same test scenes), so the comparisons are *paired by seed*: for each
seed, the difference between two arms; then the mean difference and its one-sided 95% lower confidence bound
(Student t over seeds). A claim "A beats B" is shown when that lower bound is above 0; "A is not worse than B"
when it is above ``-margin``.
"""

from __future__ import annotations

import argparse
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import stats

ARMS = (
    "global_mae",
    "global_cls",
    "regional_predicted",
    "regional_oracle",
    "regional_predicted_mixed",
    "regional_oracle_mixed",
)
ARM_TITLES = {
    "global_mae": "global-only (MAE codes)",
    "global_cls": "+ classification",
    "regional_predicted": "+ predicted region maps (the method)",
    "regional_oracle": "+ oracle region maps (upper bound, analysis only)",
    "regional_predicted_mixed": "+ predicted region maps, ControlNet trained on mixed maps",
    "regional_oracle_mixed": "+ oracle region maps, ControlNet trained on mixed maps (analysis only)",
}
METRICS = (
    ("eval/recon_class_acc", "class acc. of reconstructions"),
    ("eval/recon_region_miou", "region IoU of reconstructions"),
    ("eval/ssim", "SSIM"),
    ("eval/pixcorr", "PixCorr"),
    ("eval/eeg_top1", "EEG class top-1"),
    ("eval/region_miou", "EEG-predicted map mIoU"),
)
METRIC_TITLES = dict(METRICS)


def _claims(method: str, oracle: str) -> tuple[tuple[str, str, str, str], ...]:
    region, acc = "eval/recon_region_miou", "eval/recon_class_acc"
    versus_global = tuple(
        (method, base, metric, kind)
        for metric, kind in ((region, "better"), (acc, "not_worse"))
        for base in ("global_mae", "global_cls")
    )
    return versus_global + ((oracle, method, region, "better"), (oracle, method, acc, "not_worse"))


#: (arm A, arm B, metric, kind): the claims the issue asks the ablation to show (those whose two arms were run).
#: ``better``: A > B; ``not_worse``: A > B - margin.
#: The last two: true maps given to the model trained to use them (mixed maps) bound the method from above.
CLAIMS = (
    _claims("regional_predicted", "regional_oracle")
    + _claims("regional_predicted_mixed", "regional_oracle_mixed")
    + (
        ("regional_oracle_mixed", "regional_predicted", "eval/recon_region_miou", "better"),
        ("regional_oracle_mixed", "regional_predicted", "eval/recon_class_acc", "not_worse"),
    )
)

RunsByArm = dict[str, dict[int, dict[str, float]]]  # arm -> seed -> metrics


def summarise(runs_by_arm: RunsByArm) -> dict[str, dict[str, tuple[float, float, int]]]:
    """``arm -> metric -> (mean, sample std, n)`` over the runs (seeds) of each arm."""
    table: dict[str, dict[str, tuple[float, float, int]]] = {}
    for arm, runs in runs_by_arm.items():
        table[arm] = {}
        for key, _ in METRICS:
            values = np.array([r[key] for r in runs.values() if key in r], dtype=float)
            if len(values):
                std = float(values.std(ddof=1)) if len(values) > 1 else 0.0
                table[arm][key] = (float(values.mean()), std, len(values))
    return table


@dataclass(frozen=True)
class PairedDifference:
    """``A - B`` paired by seed: mean, sample std, number of seeds, one-sided 95% lower bound, one-sided p-value."""

    mean: float
    std: float
    n: int
    lower95: float
    p_greater: float

    @classmethod
    def of(
        cls, runs_by_arm: RunsByArm, arm_a: str, arm_b: str, metric: str, margin: float = 0.0
    ) -> PairedDifference | None:
        """None when fewer than two seeds have ``metric`` in both arms (no spread, no bound)."""
        a, b = runs_by_arm.get(arm_a, {}), runs_by_arm.get(arm_b, {})
        seeds = sorted(s for s in a.keys() & b.keys() if metric in a[s] and metric in b[s])
        if len(seeds) < 2:
            return None
        diff = np.array([a[s][metric] - b[s][metric] for s in seeds], dtype=float)
        mean, std, n = float(diff.mean()), float(diff.std(ddof=1)), len(diff)
        sem = std / np.sqrt(n)
        lower = mean - float(stats.t.ppf(0.95, n - 1)) * sem
        if sem > 0:
            p = float(stats.t.sf((mean + margin) / sem, n - 1))
        else:
            p = 0.0 if mean + margin > 0 else 1.0
        return cls(mean, std, n, lower, p)


def claims_markdown(
    runs_by_arm: RunsByArm, margin: float
) -> tuple[str, list[tuple[tuple[str, str, str, str], bool | None]]]:
    """A table of the paired comparisons in :data:`CLAIMS` whose two arms were run, and for each claim whether it
    is shown (None: fewer than two seeds)."""
    lines = [
        "| claim | seeds | mean difference (A - B) ± std | one-sided 95% lower bound | p | shown? |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    verdicts: list[tuple[tuple[str, str, str, str], bool | None]] = []
    for arm_a, arm_b, metric, kind in CLAIMS:
        if arm_a not in runs_by_arm or arm_b not in runs_by_arm:
            continue
        threshold = 0.0 if kind == "better" else -margin
        words = "beats" if kind == "better" else f"is not worse (margin {margin:g}) than"
        claim = f"{ARM_TITLES[arm_a]} {words} {ARM_TITLES[arm_b]} on {METRIC_TITLES[metric]}"
        diff = PairedDifference.of(runs_by_arm, arm_a, arm_b, metric, margin=0.0 if kind == "better" else margin)
        if diff is None:
            verdicts.append(((arm_a, arm_b, metric, kind), None))
            lines.append(f"| {claim} | <2 | n/a | n/a | n/a | not enough seeds |")
            continue
        shown = bool(diff.lower95 > threshold)
        verdicts.append(((arm_a, arm_b, metric, kind), shown))
        lines.append(
            f"| {claim} | {diff.n} | {diff.mean:+.3f} ± {diff.std:.3f} | {diff.lower95:+.3f} (needs > {threshold:+.3f}) "
            f"| {diff.p_greater:.3f} | {'yes' if shown else 'no'} |"
        )
    return "\n".join(lines), verdicts


def to_markdown(table: dict[str, dict[str, tuple[float, float, int]]]) -> str:
    header = "| arm | seeds | " + " | ".join(title for _, title in METRICS) + " |"
    lines = [header, "|" + " --- |" * (len(METRICS) + 2)]
    for arm in [a for a in ARMS if a in table] + [a for a in table if a not in ARMS]:
        cells = []
        n = max((v[2] for v in table[arm].values()), default=0)
        for key, _ in METRICS:
            if key in table[arm]:
                mean, std, _ = table[arm][key]
                cells.append(f"{mean:.3f} ± {std:.3f}")
            else:
                cells.append("n/a")
        lines.append(f"| {ARM_TITLES.get(arm, arm)} | {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(runs_by_arm: RunsByArm, path: Path) -> Path:
    """Per arm, the mean (bar) and each seed (dot) of class accuracy, region IoU and PixCorr of reconstructions."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = [a for a in ARMS if a in runs_by_arm]
    panels = ("eval/recon_class_acc", "eval/recon_region_miou", "eval/pixcorr")
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6))
    colours = ("#9e9e9e", "#607d8b", "#1976d2", "#90caf9", "#2e7d32", "#a5d6a7")
    for ax, metric in zip(axes, panels):
        for i, arm in enumerate(arms):
            values = [r[metric] for r in runs_by_arm[arm].values() if metric in r]
            if not values:
                continue
            ax.bar(i, np.mean(values), color=colours[i % len(colours)], alpha=0.8)
            ax.scatter(
                np.full(len(values), i) + np.linspace(-0.15, 0.15, len(values)), values, color="k", s=12, zorder=3
            )
        ax.set_xticks(range(len(arms)), [a.replace("_", "\n") for a in arms], fontsize=8)
        ax.set_title(METRIC_TITLES[metric], fontsize=10)
    fig.suptitle("Region ablation (synthetic benchmark): bars = mean, dots = seeds", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def load_runs(
    tracking_uri: str, experiment: str, sweep_run_ids: list[str] | None
) -> tuple[list[str], RunsByArm, dict[str, str]]:
    """The finished child runs of some sweeps (default: the latest), as ``arm -> seed -> metrics``, and the params of
    one of them. An arm and seed found in two sweeps is an error (which one would count?)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise SystemExit(
            f"No MLflow experiment {experiment!r} at {tracking_uri}: run `regionaldiff experiment=ablation_regions` first."
        )
    if not sweep_run_ids:
        parents = client.search_runs(
            [exp.experiment_id],
            "tags.`regionaldiff.role` = 'sweep'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        if not parents:
            raise SystemExit(f"No sweep parent run in experiment {experiment!r}.")
        sweep_run_ids = [parents[0].info.run_id]
    grouped: RunsByArm = defaultdict(dict)
    params: dict[str, str] = {}
    for sweep_run_id in sweep_run_ids:
        for run in client.search_runs(
            [exp.experiment_id], f"tags.`mlflow.parentRunId` = '{sweep_run_id}'", max_results=1000
        ):
            if run.info.status != "FINISHED":
                continue
            arm = run.data.tags.get("regionaldiff.ablation_arm", run.data.params.get("ablation_arm", "?"))
            seed = int(run.data.params["seed"])
            if seed in grouped[arm]:
                raise SystemExit(
                    f"Arm {arm!r}, seed {seed} is in more than one of the sweeps {sweep_run_ids}: name sweeps that do not overlap."
                )
            grouped[arm][seed] = run.data.metrics
            params = params or dict(run.data.params)
    return list(sweep_run_ids), dict(grouped), params


def setup_line(params: dict[str, str]) -> str:
    keys = (
        "dataset.n_train",
        "dataset.n_val",
        "dataset.n_test",
        "dataset.snr",
        "dataset.montage",
        "encoder.max_epochs",
        "ldm.max_epochs",
    )
    return "Setup (from the runs' params): " + ", ".join(f"{k}={params[k]}" for k in keys if k in params) + "."


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--tracking-uri",
        default=os.environ.get("MLFLOW_TRACKING_URI", f"sqlite:///{Path('outputs/mlflow.db').resolve()}"),
    )
    parser.add_argument("--experiment", default="ablation_regions")
    parser.add_argument(
        "--sweep-run-id",
        action="append",
        default=None,
        help="MLflow parent run of a sweep (repeat to merge sweeps); default: the latest",
    )
    parser.add_argument("--out", default="docs/ablation.md")
    parser.add_argument(
        "--margin", type=float, default=0.05, help="non-inferiority margin for 'not worse' claims (absolute)"
    )
    parser.add_argument("--note", default="", help="text added at the end (machine, wall time, reading)")
    args = parser.parse_args()
    sweeps, grouped, params = load_runs(args.tracking_uri, args.experiment, args.sweep_run_id)
    table = to_markdown(summarise(grouped))
    claims, _ = claims_markdown(grouped, args.margin)
    out = Path(args.out)
    figure = plot(grouped, out.with_suffix(".png"))
    text = (
        "# Region-awareness ablation (synthetic benchmark)\n\n"
        "Produced by `regionaldiff experiment=ablation_regions` then `python benchmarks/ablation_summary.py` "
        f"(MLflow sweep runs {', '.join(f'`{s}`' for s in sweeps)}). Mean ± sample standard deviation over seeds.\n\n{table}\n\n"
        f"{setup_line(params)}\n\n"
        f"![ablation]({figure.name})\n\n"
        "## Paired comparisons\n\n"
        "All arms of one seed share the dataset and its test scenes, so each claim is tested on the per-seed "
        "differences A - B: mean ± std over seeds, the one-sided 95% lower confidence bound (Student t), and the "
        "one-sided p-value. A claim is shown when the lower bound clears the threshold.\n\n"
        f"{claims}\n"
    )
    if args.note:
        text += f"\n{args.note}\n"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
