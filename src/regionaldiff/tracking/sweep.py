"""Hydra callbacks for sweeps (``hydra.callbacks`` in ``conf/hydra/default.yaml``).

:class:`SweepCallback`

- ``on_multirun_start`` (the launching process): creates the MLflow experiment before any job starts, so jobs that
  start at the same time (joblib, submitit) never race to create the store or the experiment.
- ``on_job_start`` (every job, in its own process): splits the CPU threads between the jobs that run at once, so two
  jobs on two cores do not each take both (several-fold slow-downs were measured).
- ``on_multirun_end`` (the launching process; with submitit after every job has ended): ends the sweep's parent run:
  FINISHED when every child finished, else FAILED, with the count of each status as tags
  (``regionaldiff.children.FINISHED`` ...). Hydra skips ``on_multirun_end`` when a job failed (the sweeper re-raises
  the job's error), so the same is done at exit of the launching process when it was not done before.
"""

from __future__ import annotations

import atexit
import logging
import os
from collections import Counter
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

try:  # Hydra >= 1.1
    from hydra.experimental.callback import Callback
except ImportError:  # pragma: no cover
    Callback = object  # type: ignore[misc,assignment]


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


def finish_sweep(tracking_uri: str, experiment_name: str, sweep_dir: str) -> dict[str, Any] | None:
    """End the parent run of the sweep in ``sweep_dir``: FINISHED when all its children finished, else FAILED.

    Returns ``{"run_id", "status", "children": {status: count}}``, or None when the sweep has no parent run (no job
    got as far as MLflow).
    """
    from mlflow.tracking import MlflowClient

    from regionaldiff.tracking.mlflow_run import ROLE_TAG, SWEEP_TAG

    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        return None
    escaped = sweep_dir.replace("'", "\\'")
    parents = client.search_runs(
        [experiment.experiment_id], f"tags.`{SWEEP_TAG}` = '{escaped}' and tags.`{ROLE_TAG}` = 'sweep'"
    )
    if not parents:
        return None
    parent = parents[0]
    children = client.search_runs(
        [experiment.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'", max_results=5000
    )
    counts = Counter(run.info.status for run in children)
    status = "FINISHED" if children and set(counts) == {"FINISHED"} else "FAILED"
    for key in ("FINISHED", "FAILED", "RUNNING", "KILLED"):
        client.set_tag(parent.info.run_id, f"regionaldiff.children.{key}", str(counts.get(key, 0)))
    client.set_tag(parent.info.run_id, "regionaldiff.children", str(len(children)))
    client.set_terminated(parent.info.run_id, status)
    summary = ", ".join(f"{n} {s.lower()}" for s, n in sorted(counts.items())) or "no children"
    log.info("sweep parent run %s ended %s (%s)", parent.info.run_id, status, summary)
    return {"run_id": parent.info.run_id, "status": status, "children": dict(counts)}


class SweepCallback(Callback):
    """Prepares MLflow before a sweep's jobs start, splits threads between parallel jobs, ends the parent run.

    Parameters
    ----------
    split_threads : bool
        Set ``torch``'s threads (and ``OMP_NUM_THREADS``) in each job to its share of the cores when the launcher
        runs several jobs at once (:func:`threads_per_job`). ``trainer.num_threads``, when set, still wins.
    """

    def __init__(self, split_threads: bool = True) -> None:
        self.split_threads = split_threads
        self._pending: tuple[str, str, str] | None = None

    # -- launching process --------------------------------------------------------------------
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        settings = _logger_settings(config)
        if settings is None:
            return
        from mlflow.tracking import MlflowClient

        from regionaldiff.tracking.mlflow_run import ensure_experiment, sweep_lock

        uri, experiment_name, artifact_root = settings
        sweep_dir = sweep_dir_of(config)
        with sweep_lock(sweep_dir):
            ensure_experiment(MlflowClient(uri), experiment_name, artifact_root)
        self._pending = (uri, experiment_name, sweep_dir)
        atexit.register(self._finish_pending)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._finish_pending()

    def _finish_pending(self) -> None:
        if self._pending is None:
            return
        pending, self._pending = self._pending, None
        try:
            finish_sweep(*pending)
        except Exception as err:  # noqa: BLE001 - never hide the sweep's own outcome behind this
            log.warning("could not end the sweep's parent run: %s", err)

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
