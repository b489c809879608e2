"""MLflow tracking for one pipeline job: its run, params, metrics, tags and artifacts (docs/sweeps.md, "Tracking contract").

- Tracking URI: ``logger.tracking_uri``, else ``$MLFLOW_TRACKING_URI``, else sqlite in the output root. Never
  the file store (it errors on current MLflow).
- In a multirun, every job is a child of one parent run per sweep (found by the sweep folder tag, so jobs in
  other processes, e.g. with a joblib launcher, attach to the same parent).
- Everything goes through an ``MlflowClient`` bound to one run id: no global active-run state.
- Parallel jobs (joblib, submitit): the experiment and the sweep's parent run are created under a file lock in the
  sweep folder, so jobs that start at the same time find one parent; the parent is ended by
  :class:`regionaldiff.sweeps.callback.SweepCallback` when the sweep ends.
- The experiment is tagged ``mlflow.experimentKind=custom_model_development``: the MLflow UI opens it in its
  model-training view (not the GenAI view).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

from lightning.pytorch.loggers import MLFlowLogger
from omegaconf import DictConfig, OmegaConf

from regionaldiff.config import TRACKING_URI_SCHEMES
from regionaldiff.errors import ConfigError, UserError
from regionaldiff.tracking.outbox import (
    FOLDER as OUTBOX_FOLDER,
)
from regionaldiff.tracking.outbox import (
    JOURNAL,
    Outbox,
    batch_record,
    bound_http_retries,
    end_wait_seconds,
    is_refusal,
)

log = logging.getLogger(__name__)

SWEEP_TAG = "regionaldiff.sweep_dir"
ROLE_TAG = "regionaldiff.role"
#: a job's one-line reason for failing (its child run, and the summary)
FAILURE_TAG = "regionaldiff.failure"
#: a sweep's identity (its set of jobs): a rerun of the same command attaches to the parent with the same key
SWEEP_KEY_TAG = "regionaldiff.sweep_key"
#: every folder the sweep ran in (a rerun runs in a new one)
SWEEP_DIRS_TAG = "regionaldiff.sweep_dirs"
OVERRIDES_TAG = "regionaldiff.overrides"
#: a job's config as composed (defaults included), hashed: a rerun reuses a finished job only when it matches
CONFIG_TAG = "regionaldiff.config_hash"
#: the tag current MLflow reads to pick an experiment's view; this value opens the model-training view
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"


@contextmanager
def sweep_lock(sweep_dir: str | Path, timeout: float = 300.0) -> Iterator[None]:
    """An inter-process lock (a file in the sweep folder) held while a job looks up or creates shared runs."""
    from filelock import FileLock

    folder = Path(sweep_dir)
    folder.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder / ".mlflow.lock"), timeout=timeout):
        yield


def ensure_experiment(client: Any, experiment_name: str, artifact_root: Path) -> str:
    """The id of ``experiment_name`` (created when missing, artifacts under ``artifact_root``), tagged as a
    model-training experiment. Safe when another process creates it at the same time."""
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        artifact_root.mkdir(parents=True, exist_ok=True)
        try:
            experiment_id = client.create_experiment(
                experiment_name,
                artifact_location=artifact_root.resolve().as_uri(),
                tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND},
            )
        except Exception:  # noqa: BLE001 - created by another job in the meantime: use it
            experiment = client.get_experiment_by_name(experiment_name)
            if experiment is None:
                raise
            experiment_id = experiment.experiment_id
    else:
        experiment_id = experiment.experiment_id
    if experiment is not None and experiment.tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:
        client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    return str(experiment_id)


def process_rank() -> int:
    """This process's rank in a multi-process job (``RANK``, ``LOCAL_RANK``, ``SLURM_PROCID``); 0 when alone."""
    for var in ("RANK", "LOCAL_RANK", "SLURM_PROCID"):
        value = os.environ.get(var, "")
        if value.isdigit() and int(value) != 0:
            return int(value)
    return 0


def hydra_job_tags() -> dict[str, str]:
    """The Hydra job's number and overrides as tags (empty outside a Hydra app)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return {}
    hc = HydraConfig.get()
    tags = {"regionaldiff.overrides": " ".join(hc.overrides.task) or "(none)"}
    try:
        num = hc.job.num  # missing outside a multirun
    except Exception:  # noqa: BLE001 - omegaconf's MissingMandatoryValue
        num = None
    if num is not None:
        tags["regionaldiff.job_num"] = str(num)
    return tags


def job_config_hash(cfg: DictConfig) -> str:
    """The job's composed config (without Hydra's node, interpolations unresolved, so its output folder and the
    clock do not enter), hashed like an artifact's key: two attempts of a job with the same overrides are the same job
    only when their configs hash alike, so a rerun after a default changed (a config file edited) runs it again. The
    experiment's ``report:`` section is left out: what a report shows and claims changes no job's result."""
    from regionaldiff.artifacts import config_hash

    container = OmegaConf.to_container(cfg, resolve=False)
    assert isinstance(container, dict)
    return config_hash({str(k): v for k, v in container.items() if k not in ("hydra", "report")})


def git_commit(path: Path | None = None) -> str | None:
    """The git commit of the source tree (``-dirty`` when it has uncommitted changes), None outside a checkout."""
    import subprocess

    where = path or Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=where,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("-dirty" if dirty else "") if commit else None


def resolve_tracking_uri(configured: str | None, output_root: str | Path) -> str:
    """``configured``, else ``$MLFLOW_TRACKING_URI``, else ``sqlite:///<output_root>/mlflow.db``."""
    uri = configured or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        if not uri.startswith(TRACKING_URI_SCHEMES):
            raise ConfigError(
                f"MLflow tracking URI {uri!r} points at the file store, which current MLflow no longer supports. "
                "Use sqlite:///path/to/mlflow.db or a tracking server."
            )
        return uri
    root = Path(output_root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{root / 'mlflow.db'}"


class TrackingUnavailableError(UserError, ConnectionError):
    """The tracking server does not answer when a job starts (nothing has run yet)."""


def is_server(uri: str) -> bool:
    """True for a tracking server's URI (http, https), which can go away; a local sqlite store cannot."""
    return uri.startswith(("http://", "https://"))


def unreachable_error(uri: str, err: BaseException | str) -> TrackingUnavailableError:
    """The one-line error for a tracking server that does not answer at the start of a run."""
    from regionaldiff.errors import one_line

    return TrackingUnavailableError(
        f"the MLflow tracking server {redact(uri)} does not answer ({one_line(str(err))[:200]}); nothing was run. "
        "Start it (mlflow server ...), or run without tracking (logger=none), or log to a local store "
        "(MLFLOW_TRACKING_URI=sqlite:///outputs/mlflow.db or logger.tracking_uri=sqlite:///...).",
    )


def require_tracking_server(uri: str, timeout: float = 10.0) -> None:
    """Raise :class:`TrackingUnavailableError` when ``uri`` is a tracking server that does not answer its health
    check within ``timeout`` seconds (any HTTP answer, even 401, means it is there). Local stores pass."""
    if not is_server(uri):
        return
    import urllib.error
    import urllib.parse
    import urllib.request

    parts = urllib.parse.urlsplit(uri)
    host = parts.hostname or ""
    netloc = (f"[{host}]" if ":" in host else host) + (f":{parts.port}" if parts.port else "")
    health = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path.rstrip("/") + "/health", "", ""))
    try:
        with urllib.request.urlopen(health, timeout=timeout):
            return
    except urllib.error.HTTPError:
        return  # it answered
    except (OSError, ValueError) as err:
        raise unreachable_error(uri, getattr(err, "reason", err)) from None


def mlflow_key(name: str) -> str:
    """``name`` with every character MLflow refuses in a param or metric key replaced by ``_`` (it allows
    alphanumerics, ``_ - . : /`` and spaces), e.g. a report's variant title keyed by ``"ablation=a, seed=1"``."""
    return re.sub(r"[^A-Za-z0-9_\-. :/]", "_", name)


def redact(text: str) -> str:
    """``text`` with the credentials of any URL in it hidden (``http://user:secret@host`` -> ``http://***@host``),
    so that a tracking URI with a password never reaches the logged params. Pass credentials to a tracking server
    as ``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD`` instead (docs/sweeps.md)."""
    return re.sub(r"([A-Za-z][A-Za-z0-9+.-]*://)[^/@\s]+@", r"\1***@", text)


#: where ``mlflow ui`` serves a local store by default (``make dashboard``)
LOCAL_DASHBOARD = "http://127.0.0.1:5000"
#: MLflow 3 opens an experiment in its GenAI layout unless the link asks for the model-training view; the sidebar's
#: switch lives in the browser's localStorage and ignores the experiment's tag (mlflow/mlflow#24498)
MODEL_TRAINING_VIEW = "workflowType=machine_learning"


def dashboard_url(tracking_uri: str, experiment_id: str, run_id: str | None = None) -> str:
    """The dashboard link of an experiment (its Runs table) or of one run, in the model-training view.

    A tracking server's links are on that server (credentials hidden); a local store's are on ``mlflow ui``'s
    default address, :data:`LOCAL_DASHBOARD`.
    """
    remote = tracking_uri.startswith(("http://", "https://"))
    base = redact(tracking_uri.rstrip("/")) if remote else LOCAL_DASHBOARD
    page = f"#/experiments/{experiment_id}" + (f"/runs/{run_id}" if run_id else "")
    return f"{base}/{page}?{MODEL_TRAINING_VIEW}"


def dashboard_links(tracking_uri: str) -> list[str]:
    """``<experiment name>: <link>`` for every experiment with runs in the store, model-training view."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    return [
        f"{experiment.name}: {dashboard_url(tracking_uri, experiment.experiment_id)}"
        for experiment in client.search_experiments()
        if client.search_runs([experiment.experiment_id], max_results=1)
    ]


def job_key(overrides: str | list[str]) -> str:
    """A job's identity within its sweep: its overrides, sorted (``"seed=1 ldm=global"`` -> ``"ldm=global seed=1"``)."""
    tokens = overrides.split() if isinstance(overrides, str) else [str(o) for o in overrides]
    return " ".join(sorted(t for t in tokens if t and t != "(none)"))


def latest_attempts(runs: list[Any]) -> dict[str, Any]:
    """The latest run of each job (by its overrides) among a sweep's children. A rerun makes a new attempt only for
    a job that did not finish or whose config changed since (a finished job of the same config is reused, with no new
    run: :func:`regionaldiff.sweeps.job.finished_attempt`), so the latest attempt is the job as it stands: it replaces
    a failed one, and a finished one of an earlier config."""
    latest: dict[str, Any] = {}
    for run in sorted(runs, key=lambda r: r.info.start_time or 0):
        latest[job_key(run.data.tags.get(OVERRIDES_TAG, "") or run.info.run_id)] = run
    return latest


def find_sweep_parent(client: Any, experiment_id: str, sweep_dir: str) -> Any:
    """The parent run of the sweep in ``sweep_dir``, or None."""
    escaped = sweep_dir.replace("'", "\\'")
    found = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{SWEEP_TAG}` = '{escaped}' and tags.`{ROLE_TAG}` = 'sweep'",
        max_results=1,
    )
    return found[0] if found else None


def sweep_children(client: Any, parent: Any) -> list[Any]:
    """Every child run of a sweep's parent run, oldest first."""
    return list(
        client.search_runs(
            [parent.info.experiment_id],
            f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'",
            max_results=5000,
            order_by=["attributes.start_time ASC"],
        )
    )


def flatten(cfg: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mapping -> ``{"a.b.c": value}`` (lists as strings), for MLflow params."""
    flat: dict[str, Any] = {}
    for key, value in cfg.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def sweep_run_name(sweep_dir: str | Path, limit: int = 250, config: Any = None) -> str:
    """The name of a sweep's parent run: what was swept, e.g. ``sweep: ldm=global,regional seed=0,1``.

    Read from ``config`` (the sweep's config, with its ``hydra`` node) or else the ``multirun.yaml`` Hydra writes in
    the sweep folder: the command line's overrides (``hydra.overrides.task``) plus the sweeper's ``params`` of an
    experiment config that the command line does not override. Falls back to ``sweep <folder name>`` when neither
    is there.
    """
    path = Path(sweep_dir) / "multirun.yaml"
    try:
        cfg = config if config is not None else OmegaConf.load(path)
        task = [str(o) for o in OmegaConf.select(cfg, "hydra.overrides.task", default=[]) or []]
        node = OmegaConf.select(cfg, "hydra.sweeper.params", default=None)
        params = {str(k): str(v) for k, v in (node.items() if isinstance(node, DictConfig) else [])}
    except (OSError, ValueError, AttributeError, TypeError):
        return f"sweep {Path(sweep_dir).name}"
    keys = {o.split("=", 1)[0].lstrip("+~") for o in task}
    parts = task + [f"{k}={v}" for k, v in params.items() if k not in keys]
    if not parts:
        return f"sweep {Path(sweep_dir).name}"
    name = "sweep: " + " ".join(parts)
    return name if len(name) <= limit else name[: limit - 3] + "..."


class JobTracker:
    """The MLflow run of one pipeline job, or a no-op when ``logger.enabled`` is false.

    Parameters
    ----------
    enabled : bool
        Log to MLflow at all.
    tracking_uri : str
        Resolved tracking URI.
    experiment_name : str
        MLflow experiment.
    artifact_root : Path
        Where a newly created experiment stores its artifacts.
    run_name : str
        Name of this job's run.
    sweep_dir : str or None
        The multirun's folder: jobs of one sweep become children of one parent run.
    system_metrics : bool
        Log CPU/GPU memory and utilisation (``system/...``) while the job runs, when ``psutil`` is installed
        (GPU metrics need ``nvidia-ml-py``). Off with ``REGIONALDIFF_SYSTEM_METRICS=0``.
    job_dir : Path, optional
        The job folder: every record is journaled in ``job_dir/tracking/<run id>/`` before it is sent, so that a
        tracking server away for a while costs nothing (:mod:`regionaldiff.tracking.outbox`; ``regionaldiff sync``
        sends what is left). None: records wait in memory only.
    tags : mapping, optional
        More tags of the run (the job's :data:`CONFIG_TAG`).

    Once the run exists, no logging call raises because the server is away: records are queued and retried.
    Creating the run does need the server: :class:`TrackingUnavailableError` (one line naming the URI) otherwise.
    """

    def __init__(
        self,
        enabled: bool,
        tracking_uri: str,
        experiment_name: str,
        artifact_root: Path,
        run_name: str,
        sweep_dir: str | None = None,
        system_metrics: bool = True,
        job_dir: Path | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> None:
        # several ranks of one job (SLURM tasks, DDP processes): only rank 0 logs
        self.enabled = enabled and process_rank() == 0
        self.tracking_uri = tracking_uri
        self.run_id: str | None = None
        self.parent_run_id: str | None = None
        self._monitor: Any = None
        self.outbox: Outbox | None = None
        if not self.enabled:
            return
        from mlflow.tracking import MlflowClient

        if is_server(tracking_uri):
            bound_http_retries()
        self.client = MlflowClient(tracking_uri)
        run_tags: dict[str, str] = {}
        commit = git_commit()
        if commit:
            run_tags["regionaldiff.git_commit"] = commit
        run_tags.update(hydra_job_tags())
        run_tags.update(tags or {})
        try:
            if sweep_dir:
                # jobs of one sweep may start at the same time (joblib, submitit): one creates, the others find
                with sweep_lock(sweep_dir):
                    self.experiment_id = ensure_experiment(self.client, experiment_name, artifact_root)
                    self.parent_run_id = self._parent_run(sweep_dir)
                run_tags["mlflow.parentRunId"] = self.parent_run_id
                run_tags[SWEEP_TAG] = sweep_dir
            else:
                self.experiment_id = ensure_experiment(self.client, experiment_name, artifact_root)
            run = self.client.create_run(self.experiment_id, run_name=run_name, tags=run_tags)
        except Exception as err:
            if is_server(tracking_uri) and not is_refusal(err):
                raise unreachable_error(tracking_uri, err) from err
            raise
        self.run_id = run.info.run_id
        folder = Path(job_dir) / OUTBOX_FOLDER / self.run_id if job_dir is not None else None
        self.outbox = Outbox(self.client, self.run_id, tracking_uri, folder)
        if system_metrics and os.environ.get("REGIONALDIFF_SYSTEM_METRICS", "1") != "0":
            self._monitor = _start_system_metrics(self.run_id, tracking_uri)

    def _parent_run(self, sweep_dir: str) -> str:
        found = find_sweep_parent(self.client, self.experiment_id, sweep_dir)
        if found is not None:
            return str(found.info.run_id)
        run = self.client.create_run(
            self.experiment_id,
            run_name=sweep_run_name(sweep_dir),
            tags={SWEEP_TAG: sweep_dir, "regionaldiff.role": "sweep"},
        )
        return run.info.run_id

    # -- logging ------------------------------------------------------------------------------
    # every call below is journaled and queued (:class:`~regionaldiff.tracking.outbox.Outbox`): none raises because
    # the tracking server is away
    def log_config(self, cfg: DictConfig, output_dir: Path) -> None:
        """The resolved config as params (flattened) and as a YAML artifact."""
        # a DictConfig's container is a dict (string keys in these configs)
        resolved = cast(dict[str, Any], OmegaConf.to_container(cfg, resolve=True))
        path = output_dir / "config_resolved.yaml"
        path.write_text(redact(OmegaConf.to_yaml(OmegaConf.create(resolved))))
        if self.outbox is None:
            return
        import torch

        self.set_tags({"regionaldiff.torch_threads": torch.get_num_threads()})
        params = [(mlflow_key(k), redact(str(v))[:6000]) for k, v in flatten(resolved).items()]
        for start in range(0, len(params), 100):
            self.outbox.put(batch_record(params=params[start : start + 100]))
        self.log_artifact(path)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        if self.outbox is not None and tags:
            self.outbox.put(batch_record(tags=[(key, str(value)[:5000]) for key, value in tags.items()]))

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        if self.outbox is None:
            return
        now = int(time.time() * 1000)
        batch = [
            (k, float(v), now, step or 0) for k, v in metrics.items() if v is not None and math.isfinite(float(v))
        ]
        for start in range(0, len(batch), 500):
            self.outbox.put(batch_record(metrics=batch[start : start + 500]))

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        if self.outbox is not None and Path(path).exists():
            self.outbox.put({"op": "artifact", "path": str(Path(path).resolve()), "artifact_path": artifact_path})

    def log_text(self, text: str, name: str) -> None:
        """``text`` as the artifact ``name``: written into the journal's folder first (sent from there)."""
        if self.outbox is None:
            return
        if self.outbox.folder is None:
            self.client.log_text(self.run_id, text, name)
            return
        folder = self.outbox.folder / "texts"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
        self.log_artifact(folder / name)

    def lightning_logger(self):
        """A Lightning ``MLFlowLogger`` writing into this job's run through its queue (None when disabled)."""
        if self.outbox is None:
            return None
        return RunBoundMLFlowLogger(self)

    def fail(self, reason: str, details: str | None = None, status: str = "FAILED") -> None:
        """End the run ``status`` (FAILED, or KILLED) with its one-line ``reason`` as the tag
        ``regionaldiff.failure`` and ``details`` (e.g. a traceback) as the artifact ``failure.txt``."""
        if self.outbox is not None:
            try:
                self.set_tags({FAILURE_TAG: reason})
                if details:
                    self.log_text(details, "failure.txt")
            except Exception as err:  # noqa: BLE001 - the status below matters more than the tag
                log.warning("could not record the failure in MLflow: %s", err)
        self.finish(status)

    def finish(self, status: str = "FINISHED") -> bool:
        """End the run ``status``; give queued records a last chance (``REGIONALDIFF_TRACKING_WAIT`` seconds when the
        server is away). False, with a warning naming the journal and ``regionaldiff sync``, when some are left."""
        if self._monitor is not None:
            try:
                self._monitor.finish()
            except Exception as err:  # noqa: BLE001 - system metrics are best effort
                log.warning("system metrics monitor did not stop cleanly: %s", err)
            self._monitor = None
        if self.outbox is None:
            return True
        self.outbox.put({"op": "terminated", "status": status, "end_time": int(time.time() * 1000)})
        # a job stopped by hand (KILLED) does not wait for the server: its records stay in the journal for sync
        wait = end_wait_seconds() if self.outbox.away and status != "KILLED" else 0.0
        if self.outbox.flush(wait=wait):
            return True
        folder = self.outbox.folder
        where = (
            f"they are kept in {folder / JOURNAL}; send them with `regionaldiff sync {folder.parent.parent}` once it "
            "is back"
            if folder is not None
            else "they are lost (no job folder)"
        )
        message = (
            f"regionaldiff: warning: the MLflow tracking server {redact(self.tracking_uri)} did not take "
            f"{len(self.outbox.pending)} record(s) of run {self.run_id}; {where}. The job's results are in its folder."
        )
        log.warning(message)
        print(message, file=sys.stderr, flush=True)
        return False


def _start_system_metrics(run_id: str, tracking_uri: str) -> Any:
    """MLflow's system metrics monitor (CPU/GPU memory and utilisation as ``system/...``) for ``run_id``, or None
    when ``psutil`` is missing."""
    try:
        import psutil  # noqa: F401
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor
    except ImportError:
        log.info("system metrics not logged: psutil is not installed")
        return None
    interval = float(os.environ.get("REGIONALDIFF_SYSTEM_METRICS_INTERVAL", "10"))
    monitor = SystemMetricsMonitor(run_id, sampling_interval=interval, tracking_uri=tracking_uri)
    monitor.start()
    return monitor


class _QueuedClient:
    """The part of ``MlflowClient`` Lightning's ``MLFlowLogger`` calls, sending through a job's queue."""

    def __init__(self, tracker: JobTracker) -> None:
        self.tracker = tracker

    def log_batch(self, run_id: str, metrics: Any = (), params: Any = (), tags: Any = (), **_: Any) -> None:
        if self.tracker.outbox is None:
            return
        self.tracker.outbox.put(
            batch_record(
                metrics=[(m.key, float(m.value), int(m.timestamp), int(m.step)) for m in metrics],
                params=[(p.key, str(p.value)) for p in params],
                tags=[(t.key, str(t.value)) for t in tags],
            )
        )


class RunBoundMLFlowLogger(MLFlowLogger):
    """Lightning's MLFlowLogger writing into the job's existing run through its queue (so that a tracking server
    away for a while never stops training), left open when training ends (more steps follow). Lightning's own key
    and param handling is kept: only the client it calls is replaced."""

    def __init__(self, tracker: JobTracker) -> None:
        super().__init__(tracking_uri=tracker.tracking_uri, run_id=tracker.run_id, log_model=False)
        self._tracker = tracker
        self._experiment_id = getattr(tracker, "experiment_id", None)
        self._initialized = True

    @property
    def experiment(self) -> Any:
        return _QueuedClient(self._tracker)

    @property
    def run_id(self) -> str | None:
        return self._tracker.run_id

    @property
    def experiment_id(self) -> str | None:
        return self._experiment_id

    def finalize(self, status: str = "success") -> None:
        return None


def write_metrics_json(path: Path, metrics: Mapping[str, float], skipped: Mapping[str, str]) -> None:
    """``metrics.json``: flat ``name -> number``, plus ``skipped: {name: reason}``."""
    payload: dict[str, Any] = {k: float(v) for k, v in sorted(metrics.items())}
    payload["skipped"] = dict(sorted(skipped.items()))
    path.write_text(json.dumps(payload, indent=2))
