"""One job of a sweep: it runs the pipeline (:func:`regionaldiff.runner.run_job`) and never ends the sweep.

A job that finished in an earlier run of the same sweep is reused (:func:`finished_attempt`); any error ends this job
only: its MLflow run ends FAILED with a one-line reason and the job writes its status file for the sweep's summary
(:mod:`regionaldiff.sweeps.summary`). The state a job hands on (its tracker) is passed explicitly, never kept in a
module.
"""

from __future__ import annotations

import logging
import sys
import traceback
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from regionaldiff.errors import UserError, debug_enabled, failure_reason
from regionaldiff.sweeps.summary import write_job_status

log = logging.getLogger(__name__)

__all__ = ["failed_run", "finished_attempt", "run_sweep_job"]


def finished_attempt(
    tracking_uri: str, experiment_name: str, sweep_dir: str, overrides: list[str], fingerprint: str
) -> Any:
    """A FINISHED child of the sweep in ``sweep_dir`` (a rerun attached to an earlier sweep's parent) with the
    same overrides and the same composed config (``fingerprint``, :func:`~regionaldiff.tracking.mlflow_run.
    job_config_hash`) as this job, or None: its results are reused instead of running the job again. An attempt with
    the same overrides whose config differs (a default changed since, or a run from before the hash was tagged) is
    not this job: it runs again, and the log says why."""
    from mlflow.tracking import MlflowClient

    from regionaldiff.tracking.mlflow_run import (
        CONFIG_TAG,
        OVERRIDES_TAG,
        find_sweep_parent,
        job_key,
        sweep_children,
    )

    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        return None
    parent = find_sweep_parent(client, experiment.experiment_id, sweep_dir)
    if parent is None:
        return None
    key = job_key(overrides)
    stale = None
    for run in reversed(sweep_children(client, parent)):
        if run.info.status == "FINISHED" and job_key(run.data.tags.get(OVERRIDES_TAG, "")) == key:
            if run.data.tags.get(CONFIG_TAG) == fingerprint:
                return run
            stale = stale or run
    if stale is not None:
        log.info(
            "job (%s) finished before in run %s with another config (a default changed since): it runs again",
            " ".join(overrides) or "no overrides",
            stale.info.run_id,
        )
    return None


def run_sweep_job(cfg: DictConfig) -> float | None:
    """One job of a sweep. A job that finished in an earlier run of the same sweep is reused (its run id and
    result). Any error (a user error, a crash, out of memory, a NaN loss) ends this job only: its MLflow run ends
    FAILED with the one-line reason (tag ``regionaldiff.failure``; a traceback in ``failure.txt``), the job writes
    its status file for the sweep's summary and returns NaN (Optuna marks such a trial failed)."""
    from hydra.core.hydra_config import HydraConfig

    from regionaldiff.runner import run_job
    from regionaldiff.tracking.mlflow_run import (
        job_config_hash,
        process_rank,
        require_tracking_server,
        resolve_tracking_uri,
    )

    if process_rank() != 0:  # the other ranks of a multi-GPU job: rank 0 reports the job
        return run_job(cfg)
    hc = HydraConfig.get()
    num = int(hc.job.num)
    overrides = list(hc.overrides.task)
    sweep_dir = str(Path(hc.sweep.dir).resolve())
    output_dir = str(hc.runtime.output_dir)
    status: dict[str, Any] = {"overrides": overrides, "output_dir": output_dir}
    write_job_status(sweep_dir, num, status="RUNNING", **status)
    state: dict[str, Any] = {}
    try:
        if cfg.logger.get("enabled", False):
            uri = resolve_tracking_uri(cfg.logger.get("tracking_uri"), cfg.paths.output_root)
            require_tracking_server(uri)
            earlier = finished_attempt(
                uri, str(cfg.logger.experiment_name), sweep_dir, overrides, job_config_hash(cfg)
            )
            if earlier is not None:
                where = earlier.data.tags.get("output_dir", "")
                reason = f"finished in an earlier run of this sweep ({where})" if where else "finished earlier"
                write_job_status(sweep_dir, num, status="REUSED", reason=reason, run_id=earlier.info.run_id, **status)
                log.info(
                    "job #%d (%s): %s, run %s; not run again", num, " ".join(overrides), reason, earlier.info.run_id
                )
                value = earlier.data.metrics.get("eval/recon_region_miou")
                return None if value is None else float(value)
        value = run_job(cfg, state)
    except Exception as err:  # noqa: BLE001 - one job's failure must not end the sweep
        reason = failure_reason(err)
        details = None if isinstance(err, UserError) else traceback.format_exc()
        if details:
            Path(output_dir).mkdir(parents=True, exist_ok=True)
            (Path(output_dir) / "failure.txt").write_text(details)
        if debug_enabled():
            traceback.print_exc()
        tracker = state.get("tracker") or failed_run(cfg, hc, sweep_dir)
        run_id = ""
        if tracker is not None:
            tracker.fail(reason, details)
            run_id = tracker.run_id or ""
        write_job_status(sweep_dir, num, status="FAILED", reason=reason, run_id=run_id, **status)
        log.error("job #%d failed: %s", num, reason)
        print(f"regionaldiff: job #{num} failed: {reason}", file=sys.stderr, flush=True)
        return float("nan")
    except BaseException as err:  # KeyboardInterrupt, SystemExit (e.g. submitit requeueing it): this attempt ends
        write_job_status(sweep_dir, num, status="KILLED", reason=failure_reason(err), **status)
        raise
    tracker = state.get("tracker")
    write_job_status(
        sweep_dir, num, status="FINISHED", run_id=(tracker.run_id if tracker is not None else "") or "", **status
    )
    return value


def failed_run(cfg: DictConfig, hc: Any, sweep_dir: str) -> Any:
    """An MLflow child run for a job that failed before its own run was created (e.g. a bad value), so that the
    sweep shows it; None when logging is off or MLflow cannot be reached."""
    from regionaldiff.tracking.mlflow_run import JobTracker, resolve_tracking_uri

    try:
        if not cfg.logger.get("enabled", False):
            return None
        overrides = list(hc.overrides.task)
        tracker = JobTracker(
            enabled=True,
            tracking_uri=resolve_tracking_uri(cfg.logger.get("tracking_uri"), cfg.paths.output_root),
            experiment_name=str(cfg.logger.experiment_name),
            artifact_root=Path(cfg.paths.output_root) / "mlartifacts",
            run_name=f"#{hc.job.num} {' '.join(overrides) or 'default'}",
            sweep_dir=sweep_dir,
            system_metrics=False,
            job_dir=Path(cfg.paths.output_dir),
        )
        tracker.set_tags({"overrides": " ".join(overrides) or "(none)"})
        return tracker
    except Exception as err:  # noqa: BLE001 - the status file still records the failure
        log.warning("could not record the failed job in MLflow: %s", err)
        return None
