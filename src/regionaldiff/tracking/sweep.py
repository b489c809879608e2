"""Sweeps that survive their jobs (``hydra.callbacks`` in ``conf/hydra/default.yaml``; docs/sweeps.md).

A failing job ends only itself: the job catches its error (:func:`regionaldiff.cli.run_sweep_job`), ends its child
run FAILED with a one-line reason and writes its status file (``<sweep dir>/.jobs/<num>.json``); the other jobs run.

:class:`SweepCallback`

- ``on_multirun_start`` (the launching process): creates the MLflow experiment and the sweep's parent run before any
  job starts, so jobs that start at the same time (joblib, submitit) never race to create them. A rerun of the same
  command (the same set of jobs, :func:`sweep_key`) attaches to the earlier sweep's parent run instead, and its jobs
  that finished there are reused (``resume: false`` turns this off).
- ``on_job_start`` (every job, in its own process): splits the CPU threads between the jobs that run at once, so two
  jobs on two cores do not each take both (several-fold slow-downs were measured).
- ``on_multirun_end`` (the launching process; with submitit after every job has ended): the summary (job, overrides,
  status, reason, run id) is printed, written to ``<sweep dir>/summary.md`` and logged to the parent run, which ends
  FINISHED when every job finished, else FAILED with "k of n failed"; the process then exits with status 1
  (:data:`LAST_OUTCOME`, read by :func:`regionaldiff.cli.main`). Hydra skips ``on_multirun_end`` when a job raised
  (the sweeper re-raises the job's error), so the same is done at exit of the launching process when it was not
  done before.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import logging
import os
import re
import sys
from collections import Counter
from dataclasses import dataclass, field
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


JOBS_DIR = ".jobs"
#: statuses of a job that count as done (a reused job finished in an earlier run of the same sweep)
DONE = ("FINISHED", "REUSED")


def enumerate_jobs(task_overrides: list[str], sweeper: Any) -> list[list[str]] | None:
    """The overrides of every job of a sweep, in the order Hydra's basic sweeper numbers them (job ``#i`` is
    element ``i``): the sweeper's ``params`` (experiment configs), then the command line's overrides. None for
    other sweepers (Optuna chooses its trials as it goes)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    target = str((sweeper or {}).get("_target_", ""))
    if not target.endswith("BasicSweeper"):
        return None
    params = sweeper.get("params") or {}
    arguments = [f"{k}={v}" for k, v in params.items()] + [str(o) for o in task_overrides]
    parsed = OverridesParser.create().parse_overrides(arguments)
    return [list(job) for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]


def sweep_key(jobs: list[list[str]]) -> str:
    """A sweep's identity: a hash of its set of jobs (each job's overrides, sorted)."""
    from regionaldiff.tracking.mlflow_run import job_key

    text = json.dumps(sorted(job_key(job) for job in jobs))
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def write_job_status(sweep_dir: str | Path, num: int, **status: Any) -> None:
    """A job's status file, ``<sweep dir>/.jobs/<num>.json`` (written atomically)."""
    folder = Path(sweep_dir) / JOBS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{num}.json.{os.getpid()}"
    tmp.write_text(json.dumps({"num": num, **status}, indent=2, default=str))
    tmp.replace(folder / f"{num}.json")


def read_job_statuses(sweep_dir: str | Path) -> dict[int, dict[str, Any]]:
    """``job number -> status`` of every job that wrote one."""
    found: dict[int, dict[str, Any]] = {}
    for path in sorted((Path(sweep_dir) / JOBS_DIR).glob("*.json")):
        try:
            data = json.loads(path.read_text())
            found[int(data["num"])] = data
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return found


def override_tokens(overrides: str) -> list[str]:
    """A job's overrides as Hydra read them: a quoted value with spaces (``report.title='A b'``) is one token,
    quotes kept."""
    return re.findall(r"""(?:[^\s'"]+|'[^']*'|"[^"]*")+""", overrides) or overrides.split()


@dataclass
class JobOutcome:
    """One row of a sweep's summary."""

    num: int
    overrides: str
    status: str
    reason: str = ""
    run_id: str = ""


@dataclass
class SweepOutcome:
    """A sweep's end: its jobs and its parent run."""

    jobs: list[JobOutcome] = field(default_factory=list)
    parent_run_id: str | None = None
    sweep_dir: str = ""

    @property
    def failed(self) -> list[JobOutcome]:
        return [j for j in self.jobs if j.status not in DONE]

    @property
    def status(self) -> str:
        return "FINISHED" if self.jobs and not self.failed else "FAILED"

    @property
    def headline(self) -> str:
        n, k = len(self.jobs), len(self.failed)
        reused = sum(j.status == "REUSED" for j in self.jobs)
        text = f"{k} of {n} failed" if k else f"all {n} finished"
        return text + (f" ({reused} reused from an earlier run of this sweep)" if reused else "")

    def counts(self) -> dict[str, int]:
        return dict(Counter(j.status for j in self.jobs))

    def swept(self) -> tuple[list[str], list[str]]:
        """(override keys whose values differ between jobs, the overrides every job shares)."""
        values: dict[str, set[str]] = {}
        for j in self.jobs:
            for token in override_tokens(j.overrides):
                key, _, value = token.partition("=")
                values.setdefault(key, set()).add(value)
        swept = [k for k, v in values.items() if len(v) > 1]
        common = sorted(
            {t for j in self.jobs for t in override_tokens(j.overrides) if t.partition("=")[0] not in swept}
        )
        return swept, common

    def markdown(self) -> str:
        """The summary table; the overrides column shows what differs between jobs (all of them: ``all``)."""
        swept, common = self.swept()
        lines = ["| job | overrides | status | reason | run id |", "| --- | --- | --- | --- | --- |"]
        for j in self.jobs:
            shown = " ".join(t for t in override_tokens(j.overrides) if t.partition("=")[0] in swept) or j.overrides
            reason = j.reason.replace("|", "\\|")
            lines.append(f"| #{j.num} | `{shown or '(none)'}` | {j.status} | {reason} | {j.run_id} |")
        if common and swept:
            lines.append(f"\nEvery job also had: `{' '.join(common)}`.")
        return "\n".join(lines)


#: the outcome of the last sweep this process launched (read by the CLI for its exit status)
LAST_OUTCOME: SweepOutcome | None = None

NO_REPORT = "the job ended without reporting (killed, out of memory, or its node lost?)"


def collect_outcomes(
    jobs: list[list[str]] | None, statuses: dict[int, dict[str, Any]], children: list[Any]
) -> list[JobOutcome]:
    """Each job's status: its status file, else its latest MLflow attempt, else "NOT RUN"."""
    from regionaldiff.tracking.mlflow_run import FAILURE_TAG, OVERRIDES_TAG, job_key, latest_attempts

    latest = latest_attempts(children)
    by_num: dict[int, Any] = {}
    for i, run in enumerate(sorted(latest.values(), key=lambda r: r.info.start_time or 0)):
        num = run.data.tags.get("regionaldiff.job_num", "")
        by_num.setdefault(int(num) if num.isdigit() else i, run)
    if jobs is not None:
        nums = list(range(len(jobs)))
    else:
        nums = sorted(set(statuses) | set(by_num))
    outcomes = []
    for num in nums:
        overrides = " ".join(jobs[num]) if jobs is not None else ""
        run = latest.get(job_key(overrides)) if jobs is not None else by_num.get(num)
        st = statuses.get(num)
        if st is not None:
            status, reason, run_id = str(st.get("status")), str(st.get("reason") or ""), str(st.get("run_id") or "")
            overrides = overrides or " ".join(st.get("overrides") or [])
            if status == "RUNNING":
                status, reason = "FAILED", NO_REPORT
        elif run is not None:
            status, reason, run_id = run.info.status, run.data.tags.get(FAILURE_TAG, ""), run.info.run_id
            overrides = overrides or run.data.tags.get(OVERRIDES_TAG, "")
            if status == "RUNNING":
                status, reason = "FAILED", NO_REPORT
        else:
            status, reason, run_id = "NOT RUN", "the job did not start", ""
        outcomes.append(JobOutcome(num, overrides, status, reason, run_id or (run.info.run_id if run else "")))
    return outcomes


def finish_sweep(
    tracking_uri: str | None, experiment_name: str, sweep_dir: str, jobs: list[list[str]] | None = None
) -> SweepOutcome:
    """End the sweep in ``sweep_dir``: each job's outcome (status files, else MLflow), the summary table in
    ``<sweep dir>/summary.md``, and (``tracking_uri`` set) the parent run: tags, the summary as its description
    and artifact, FINISHED when every job finished (or was reused), else FAILED with "k of n failed". A child
    still RUNNING (its job was killed) is ended FAILED."""
    from regionaldiff.tracking.mlflow_run import find_sweep_parent, sweep_children

    statuses = read_job_statuses(sweep_dir)
    client = parent = None
    children: list[Any] = []
    if tracking_uri:
        from mlflow.tracking import MlflowClient

        from regionaldiff.tracking.outbox import bound_http_retries

        bound_http_retries()  # a server away at the end: seconds, not MLflow's minutes of retries
        try:
            client = MlflowClient(tracking_uri)
            experiment = client.get_experiment_by_name(experiment_name)
            if experiment is not None:
                parent = find_sweep_parent(client, experiment.experiment_id, sweep_dir)
                if parent is not None:
                    children = sweep_children(client, parent)
        except Exception as err:  # noqa: BLE001 - the server is away: the summary comes from the status files
            log.warning(
                "the MLflow tracking server %s did not answer at the end of the sweep (%s): the summary comes from "
                "the jobs' status files and the parent run was not updated",
                tracking_uri,
                " ".join(str(err).split())[:300],
            )
            client = parent = None
            children = []
    outcome = SweepOutcome(collect_outcomes(jobs, statuses, children), parent.info.run_id if parent else None)
    outcome.sweep_dir = sweep_dir
    text = f"Sweep {sweep_dir}: {outcome.headline}.\n\n{outcome.markdown()}\n"
    folder = Path(sweep_dir)
    if folder.is_dir():
        (folder / "summary.md").write_text(text)
    if client is not None and parent is not None:
        try:
            _end_parent(client, parent, children, outcome, text)
        except Exception as err:  # noqa: BLE001 - the server went away: the summary is in the sweep folder
            log.warning("could not end the sweep's parent run in MLflow (%s); its summary is in %s", err, folder)
    return outcome


def _end_parent(client: Any, parent: Any, children: list[Any], outcome: SweepOutcome, text: str) -> None:
    """End a sweep's parent run with its outcome, and its children left RUNNING by killed jobs."""
    from regionaldiff.tracking.mlflow_run import FAILURE_TAG

    run_id = parent.info.run_id
    stale = {o.run_id for o in outcome.jobs if o.reason == NO_REPORT}
    latest = {o.run_id for o in outcome.jobs}
    for child in children:
        if child.info.status != "RUNNING":
            continue
        if child.info.run_id in stale:
            client.set_tag(child.info.run_id, FAILURE_TAG, NO_REPORT)
            client.set_terminated(child.info.run_id, "FAILED")
        elif child.info.run_id not in latest:  # an attempt killed without a word (e.g. preempted), run again
            client.set_tag(child.info.run_id, FAILURE_TAG, "interrupted; the job ran again in a later attempt")
            client.set_terminated(child.info.run_id, "KILLED")
    counts = outcome.counts()
    for key in ("FINISHED", "REUSED", "FAILED", "RUNNING", "KILLED"):
        client.set_tag(run_id, f"regionaldiff.children.{key}", str(counts.get(key, 0)))
    client.set_tag(run_id, "regionaldiff.children", str(len(outcome.jobs)))
    client.set_tag(run_id, "regionaldiff.failed", f"{len(outcome.failed)} of {len(outcome.jobs)} failed")
    client.set_tag(run_id, "mlflow.note.content", text[:5000])
    client.log_text(run_id, text, "summary.md")
    client.set_terminated(run_id, outcome.status)


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
        others run); read by the CLI (:func:`regionaldiff.cli.check_sweep`).
    """

    def __init__(self, split_threads: bool = True, resume: bool = True, run_anyway: bool = False) -> None:
        self.split_threads = split_threads
        self.resume = resume
        self.run_anyway = run_anyway
        self._pending: tuple[str | None, str, str, list[list[str]] | None] | None = None

    # -- launching process --------------------------------------------------------------------
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        global LAST_OUTCOME
        LAST_OUTCOME = None
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
        self._finish_pending()

    def _finish_pending(self) -> None:
        global LAST_OUTCOME
        if self._pending is None:
            return
        pending, self._pending = self._pending, None
        try:
            outcome = finish_sweep(*pending)
        except Exception as err:  # noqa: BLE001 - never hide the sweep's own outcome behind this
            log.warning("could not end the sweep: %s", err)
            return
        LAST_OUTCOME = outcome
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
