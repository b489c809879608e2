"""Summarise the region-awareness ablation from MLflow into a Markdown table (mean and spread over seeds).

Run the ablation first (one multirun: 4 arms x 3 seeds on the synthetic benchmark)::

    regionaldiff experiment=ablation_regions            # or with overrides, e.g. dataset.n_train=500
    python benchmarks/ablation_summary.py                # -> docs/ablation.md

The latest sweep of the experiment is used unless ``--sweep-run-id`` names another parent run.
"""

from __future__ import annotations

import argparse
import os
from collections import defaultdict
from pathlib import Path

import numpy as np

ARMS = ("global_mae", "global_cls", "regional_predicted", "regional_oracle")
ARM_TITLES = {
    "global_mae": "global-only (MAE codes)",
    "global_cls": "+ classification",
    "regional_predicted": "+ predicted region maps (the method)",
    "regional_oracle": "+ oracle region maps (upper bound, analysis only)",
}
METRICS = (
    ("eval/recon_class_acc", "class acc. of reconstructions"),
    ("eval/recon_region_miou", "region IoU of reconstructions"),
    ("eval/ssim", "SSIM"),
    ("eval/pixcorr", "PixCorr"),
    ("eval/eeg_top1", "EEG class top-1"),
    ("eval/region_miou", "EEG-predicted map mIoU"),
)


def summarise(runs_by_arm: dict[str, list[dict[str, float]]]) -> dict[str, dict[str, tuple[float, float, int]]]:
    """``arm -> metric -> (mean, sample std, n)`` over the runs (seeds) of each arm."""
    table: dict[str, dict[str, tuple[float, float, int]]] = {}
    for arm, runs in runs_by_arm.items():
        table[arm] = {}
        for key, _ in METRICS:
            values = np.array([r[key] for r in runs if key in r], dtype=float)
            if len(values):
                std = float(values.std(ddof=1)) if len(values) > 1 else 0.0
                table[arm][key] = (float(values.mean()), std, len(values))
    return table


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


def load_runs(tracking_uri: str, experiment: str, sweep_run_id: str | None) -> tuple[str, dict[str, list[dict[str, float]]]]:
    """The child runs of one sweep, grouped by ``regionaldiff.ablation_arm``."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise SystemExit(f"No MLflow experiment {experiment!r} at {tracking_uri}: run `regionaldiff experiment=ablation_regions` first.")
    if sweep_run_id is None:
        parents = client.search_runs([exp.experiment_id], "tags.`regionaldiff.role` = 'sweep'", order_by=["attributes.start_time DESC"], max_results=1)
        if not parents:
            raise SystemExit(f"No sweep parent run in experiment {experiment!r}.")
        sweep_run_id = parents[0].info.run_id
    children = client.search_runs([exp.experiment_id], f"tags.`mlflow.parentRunId` = '{sweep_run_id}'", max_results=1000)
    grouped: dict[str, list[dict[str, float]]] = defaultdict(list)
    for run in children:
        if run.info.status != "FINISHED":
            continue
        grouped[run.data.tags.get("regionaldiff.ablation_arm", run.data.params.get("ablation_arm", "?"))].append(run.data.metrics)
    return sweep_run_id, dict(grouped)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI", f"sqlite:///{Path('outputs/mlflow.db').resolve()}"))
    parser.add_argument("--experiment", default="ablation_regions")
    parser.add_argument("--sweep-run-id", default=None)
    parser.add_argument("--out", default="docs/ablation.md")
    parser.add_argument("--note", default="", help="text added under the table (setup, machine, wall time)")
    args = parser.parse_args()
    sweep, grouped = load_runs(args.tracking_uri, args.experiment, args.sweep_run_id)
    table = to_markdown(summarise(grouped))
    text = (
        "# Region-awareness ablation (synthetic benchmark)\n\n"
        "Produced by `regionaldiff experiment=ablation_regions` then `python benchmarks/ablation_summary.py` "
        f"(MLflow sweep run `{sweep}`). Mean ± sample standard deviation over seeds.\n\n{table}\n"
    )
    if args.note:
        text += f"\n{args.note}\n"
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
