"""``regionaldiff sync RUN_DIR...``: send what a job could not send to MLflow while its tracking server was away.

Every job journals its tracking records in ``<job folder>/tracking/<run id>/`` before sending them
(:mod:`regionaldiff.tracking.outbox`); a job that ended while the server was still away leaves the unsent ones
there. This command replays them, in order, into the same MLflow run (the one the journal names), and never sends
a record twice. A sweep folder syncs every job under it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mlflow.tracking import MlflowClient

from regionaldiff.errors import MissingFileError, UserError, exit_on_user_error
from regionaldiff.tracking.mlflow_run import is_server, redact, require_tracking_server
from regionaldiff.tracking.outbox import FOLDER, JOURNAL, STATE, Outbox, bound_http_retries

__all__ = ["journals", "main"]

USAGE_EPILOG = """A job whose tracking server was away when it ended prints the command to run, e.g.
  regionaldiff sync outputs/runs/2026-12-06_10-00-00
Exit status: 0 everything sent, 1 some records still unsent (the server is still away), 2 nothing to sync there.
See docs/failures.md."""


def journals(folder: Path) -> list[Path]:
    """Every journal folder (``tracking/<run id>/`` with a state file) of the job or sweep in ``folder``."""
    return sorted({p.parent for p in folder.glob(f"**/{FOLDER}/*/{STATE}")})


def main(argv: list[str] | None = None) -> int:
    """``regionaldiff sync RUN_DIR...``; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="regionaldiff sync",
        description="Send the tracking records a job kept while its MLflow server was away, into the same run.",
        epilog=USAGE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="a job folder (or a sweep folder)")
    parser.add_argument(
        "--wait", type=float, default=0.0, help="keep retrying for this many seconds while the server is away"
    )
    args = parser.parse_args(argv)
    try:
        folders = []
        for run_dir in args.run_dirs:
            path = Path(run_dir)
            if not path.is_dir():
                raise MissingFileError(
                    f"sync: {run_dir} is not a folder; give a job folder such as outputs/runs/<date>_<time>."
                )
            found = journals(path)
            if not found:
                raise MissingFileError(
                    f"sync: {run_dir} holds no tracking journal ({FOLDER}/<run id>/{JOURNAL}); give the job folder a "
                    "run printed (outputs/runs/<date>_<time>, or a sweep's job folder)."
                )
            folders += found
        left = 0
        for folder in folders:
            box = Outbox.resume(folder, None)
            if not box.pending:
                print(f"run {box.run_id}: nothing left to send ({folder})")
                continue
            if is_server(box.tracking_uri):
                bound_http_retries()
                require_tracking_server(box.tracking_uri)
            box.client = MlflowClient(box.tracking_uri)
            count = len(box.pending)
            box.flush(wait=args.wait)
            sent = count - len(box.pending)
            print(f"run {box.run_id}: sent {sent} of {count} record(s) to {redact(box.tracking_uri)} ({folder})")
            left += len(box.pending)
    except UserError as err:
        exit_on_user_error(err)
        raise  # pragma: no cover
    if left:
        print(
            f"regionaldiff sync: {left} record(s) still unsent (the server did not take them); run it again later, "
            "or with --wait SECONDS.",
            file=sys.stderr,
        )
        return 1
    return 0
