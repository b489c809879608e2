"""``regionaldiff report``: tables, paired comparisons and plots of a sweep's runs in MLflow
(:mod:`regionaldiff.tracking.report` builds them)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from regionaldiff.tracking.report import (
    USAGE_EPILOG,
    ReportError,
    ReportSpec,
    build_report,
    default_tracking_uri,
    load_sweep,
    spec_from_runs,
)

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """``regionaldiff report ...``; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="regionaldiff report",
        description="Tables, paired comparisons and plots of a sweep's runs in MLflow.",
        epilog=USAGE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--run-id", action="append", help="the sweep's MLflow parent run (repeat to merge sweeps)")
    which.add_argument("--sweep-dir", help="the sweep's folder (outputs/multiruns/<date>_<time>)")
    which.add_argument("--experiment", help="MLflow experiment: its latest sweep (default: regionaldiff)")
    parser.add_argument(
        "--tracking-uri", default=None, help="default: $MLFLOW_TRACKING_URI, else sqlite:///outputs/mlflow.db"
    )
    parser.add_argument("--spec", help="YAML with the report spec (or an experiment config with a report: section)")
    parser.add_argument(
        "--margin", type=float, help="non-inferiority margin of 'not worse' claims (overrides the spec)"
    )
    parser.add_argument("--out", help="output folder (default: outputs/reports/<parent run id>)")
    parser.add_argument("--name", default="report", help="file name stem (default: report)")
    parser.add_argument("--note-file", help="markdown appended at the end (how the sweep was run, reading)")
    parser.add_argument("--no-log", action="store_true", help="do not log the files to the parent run")
    args = parser.parse_args(argv)
    try:
        sweep = load_sweep(args.tracking_uri or default_tracking_uri(), args.run_id, args.sweep_dir, args.experiment)
        spec = ReportSpec.from_yaml(args.spec) if args.spec else spec_from_runs(sweep)
        if args.margin is not None:
            spec.margin = args.margin
        out = Path(args.out) if args.out else Path("outputs") / "reports" / sweep.parent_ids[0]
        note = Path(args.note_file).read_text() if args.note_file else ""
        report = build_report(sweep, spec, out, args.name, note, log_artifacts=not args.no_log)
    except ReportError as err:
        print(f"regionaldiff report: {err}", file=sys.stderr)
        return 2
    print(report.markdown)
    print("written: " + ", ".join(str(p) for p in report.files))
    return 0
