"""The Hydra callback of every sweep (``hydra.callbacks.sweep`` in ``conf/hydra/default.yaml``; docs/sweeps.md).

:class:`SweepCallback`

- ``on_multirun_start`` (the launching process): checks that every job can start (:func:`~regionaldiff.sweeps.plan.
  check_sweep`; else exit 2 before anything runs), then creates the MLflow experiment and the sweep's parent run
  before any job starts, so jobs that start at the same time (joblib, submitit) never race to create them. A rerun of
  the same command (the same set of jobs, :func:`~regionaldiff.sweeps.plan.sweep_key`) attaches to the earlier
  sweep's parent run instead, and its jobs that finished there are reused (``resume: false`` turns this off).
- ``on_job_start`` (every job, in its own process): splits the CPU threads between the jobs that run at once, so two
  jobs on two cores do not each take both (several-fold slow-downs were measured).
- ``on_multirun_end`` (the launching process; with submitit after every job has ended): the summary (job, overrides,
  status, reason, run id) is printed, written to ``<sweep dir>/summary.md`` and logged to the parent run, which ends
  FINISHED when every job finished, else FAILED with "k of n failed" (:func:`~regionaldiff.sweeps.summary.
  finish_sweep`); the callback keeps it (:attr:`SweepCallback.outcome`) and ends the process with exit status 1 when
  a job failed. Hydra skips ``on_multirun_end`` when a job raised (the sweeper re-raises the job's error), so the
  summary is then written at exit of the launching process.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from regionaldiff.sweeps.plan import check_sweep, enumerate_jobs, sweep_key
from regionaldiff.sweeps.summary import SweepOutcome, finish_sweep

log = logging.getLogger(__name__)

try:  # Hydra >= 1.1
    from hydra.experimental.callback import Callback
except ImportError:  # pragma: no cover
    Callback = object  # type: ignore[misc,assignment]

#: exit status of a sweep in which a job failed (2 stays a user error before anything ran)
EXIT_SWEEP_FAILED = 1


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask: SLURM's ``--cpus-per-task``, ``taskset``)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        return os.cpu_count() or 1


def threads_per_job(launcher: Any, cores: int | None = None) -> int | None:
    """Threads one job may use when the launcher runs several jobs at once on this machine, else None.

    joblib: ``cores // n_jobs`` (``n_jobs`` <= 0 counts from the number of cores, as joblib does); submitit's local
    executor: ``cpus_per_task`` when set. SLURM jobs already get their own cores (their affinity mask).
    """
    if launcher is None:
        return None
    cores = cores or available_cores()
    target = str(launcher.get("_target_", ""))
    if "Joblib" in target:
        n_jobs = int(launcher.get("n_jobs") or -1)
        if n_jobs <= 0:
            n_jobs = max(1, cores + 1 + n_jobs)
        return max(1, cores // n_jobs)
    if "LocalLauncher" in target and launcher.get("cpus_per_task"):
        return max(1, min(cores, int(launcher.cpus_per_task)))
    return None


def _logger_settings(config: DictConfig) -> tuple[str, str, Path] | None:
    """(tracking URI, experiment name, artifact root) of a config, None when MLflow logging is off."""
    from regionaldiff.tracking.mlflow_run import resolve_tracking_uri

    logger_cfg = config.get("logger")
    if logger_cfg is None or not logger_cfg.get("enabled", False):
        return None
    output_root = config.paths.output_root
    uri = resolve_tracking_uri(logger_cfg.get("tracking_uri"), output_root)
    return uri, str(logger_cfg.experiment_name), Path(output_root) / "mlartifacts"


def sweep_dir_of(config: DictConfig) -> str:
    """The sweep folder as jobs tag it (absolute)."""
    return str(Path(str(config.hydra.sweep.dir)).resolve())


def _open_parent(
    config: DictConfig, uri: str, experiment_name: str, artifact_root: Path, jobs: list[list[str]] | None, resume: bool
) -> str:
    """Create the sweep's parent run (or, on a rerun of the same sweep, re-open the earlier one); its id."""
    from mlflow.tracking import MlflowClient

    from regionaldiff.tracking.mlflow_run import (
        ROLE_TAG,
        SWEEP_DIRS_TAG,
        SWEEP_KEY_TAG,
        SWEEP_TAG,
        ensure_experiment,
        find_sweep_parent,
        sweep_lock,
        sweep_run_name,
    )

    client = MlflowClient(uri)
    sweep_dir = sweep_dir_of(config)
    key = sweep_key(jobs) if jobs is not None else None
    with sweep_lock(sweep_dir):
        experiment_id = ensure_experiment(client, experiment_name, artifact_root)
        parent = find_sweep_parent(client, experiment_id, sweep_dir)
        if parent is not None:
            return str(parent.info.run_id)
        earlier = []
        if resume and key is not None:
            earlier = client.search_runs(
                [experiment_id],
                f"tags.`{SWEEP_KEY_TAG}` = '{key}' and tags.`{ROLE_TAG}` = 'sweep'",
                order_by=["attributes.start_time DESC"],
                max_results=1,
            )
        if earlier:
            run = earlier[0]
            dirs = run.data.tags.get(SWEEP_DIRS_TAG) or run.data.tags.get(SWEEP_TAG, "")
            client.set_tag(run.info.run_id, SWEEP_TAG, sweep_dir)
            client.set_tag(run.info.run_id, SWEEP_DIRS_TAG, f"{dirs},{sweep_dir}"[-5000:])
            client.update_run(run.info.run_id, status="RUNNING")
            log.info(
                "the same sweep ran before (parent run %s): its finished jobs are reused, the others run again "
                "(hydra.callbacks.sweep.resume=false runs every job again)",
                run.info.run_id,
            )
            return str(run.info.run_id)
        tags = {SWEEP_TAG: sweep_dir, ROLE_TAG: "sweep", SWEEP_DIRS_TAG: sweep_dir}
        if key is not None:
            tags[SWEEP_KEY_TAG] = key
            tags["regionaldiff.jobs"] = str(len(jobs or []))
        run = client.create_run(experiment_id, run_name=sweep_run_name(sweep_dir, config=config), tags=tags)
        return str(run.info.run_id)


class SweepCallback(Callback):
    """Prepares MLflow before a sweep's jobs start, splits threads between parallel jobs, ends the sweep with its
    summary.

    Parameters
    ----------
    split_threads : bool
        Set ``torch``'s threads (and ``OMP_NUM_THREADS``) in each job to its share of the cores when the launcher
        runs several jobs at once (:func:`threads_per_job`). ``trainer.num_threads``, when set, still wins.
    resume : bool
        A rerun of the same sweep (same jobs, same MLflow experiment) attaches to the earlier sweep's parent run
        and reuses its finished jobs; false: a new parent run, every job runs.
    run_anyway : bool
        Launch the sweep even when the check before launching finds jobs that cannot start (they fail, the
        others run; :func:`regionaldiff.sweeps.plan.check_sweep`).

    Attributes
    ----------
    outcome : SweepOutcome or None
        The sweep's end, once it ended (its summary).
    """

    def __init__(self, split_threads: bool = True, resume: bool = True, run_anyway: bool = False) -> None:
        self.split_threads = split_threads
        self.resume = resume
        self.run_anyway = run_anyway
        self._pending: tuple[str | None, str, str, list[list[str]] | None] | None = None
        self.outcome: SweepOutcome | None = None

    # -- launching process --------------------------------------------------------------------
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.outcome = None
        check_sweep(config)  # every job can start, or the sweep stops here (exit 2) before anything is created
        sweep_dir = sweep_dir_of(config)
        try:
            jobs = enumerate_jobs(list(config.hydra.overrides.task), OmegaConf.select(config, "hydra.sweeper"))
        except Exception as err:  # noqa: BLE001 - the sweeper reports bad sweep overrides itself
            log.warning("could not list the sweep's jobs: %s", err)
            jobs = None
        settings = _logger_settings(config)
        uri = None
        if settings is not None:
            uri, experiment_name, artifact_root = settings
            _open_parent(config, uri, experiment_name, artifact_root, jobs, self.resume)
        else:
            experiment_name = ""
        self._pending = (uri, experiment_name, sweep_dir, jobs)
        atexit.register(self._finish_pending)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        """End the sweep; a sweep in which a job failed ends the launching process with exit status
        :data:`EXIT_SWEEP_FAILED`, after its summary."""
        self._finish_pending()
        if self.outcome is not None and self.outcome.failed:
            sys.exit(EXIT_SWEEP_FAILED)

    def _finish_pending(self) -> None:
        if self._pending is None:
            return
        pending, self._pending = self._pending, None
        try:
            outcome = finish_sweep(*pending)
        except Exception as err:  # noqa: BLE001 - never hide the sweep's own outcome behind this
            log.warning("could not end the sweep: %s", err)
            return
        self.outcome = outcome
        where = f"; MLflow parent run {outcome.parent_run_id} {outcome.status}" if outcome.parent_run_id else ""
        print(
            f"\nSweep summary: {outcome.headline}{where}\n{outcome.markdown()}\n"
            f"(also in {Path(outcome.sweep_dir) / 'summary.md'})",
            flush=True,
        )
        if outcome.failed:
            print(
                f"regionaldiff: {outcome.headline}; run the same command again to run only the jobs that did not "
                "finish.",
                file=sys.stderr,
                flush=True,
            )

    # -- each job -----------------------------------------------------------------------------
    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        if not self.split_threads:
            return
        launcher = OmegaConf.select(config, "hydra.launcher")
        threads = threads_per_job(launcher)
        if threads is None:
            return
        import torch

        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(threads)
        torch.set_num_threads(threads)
        log.info("%d thread(s) for this job (%d cores shared by parallel jobs)", threads, available_cores())
