"""MLflow tracking for one pipeline job (see ARCHITECTURE.md, "Tracking contract").

- Tracking URI: ``logger.tracking_uri``, else ``$MLFLOW_TRACKING_URI``, else sqlite in the output root. Never
  the file store (it errors on current MLflow).
- In a multirun, every job is a child of one parent run per sweep (found by the sweep folder tag, so jobs in
  other processes, e.g. with a joblib launcher, attach to the same parent).
- Everything goes through an ``MlflowClient`` bound to one run id: no global active-run state.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

from lightning.pytorch.loggers import MLFlowLogger
from omegaconf import DictConfig, OmegaConf

from regionaldiff.errors import ConfigError

log = logging.getLogger(__name__)

SWEEP_TAG = "regionaldiff.sweep_dir"


def resolve_tracking_uri(configured: str | None, output_root: str | Path) -> str:
    """``configured``, else ``$MLFLOW_TRACKING_URI``, else ``sqlite:///<output_root>/mlflow.db``."""
    uri = configured or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        if not uri.startswith(("sqlite:", "http:", "https:", "postgresql", "mysql", "databricks")):
            raise ConfigError(
                f"MLflow tracking URI {uri!r} points at the file store, which current MLflow no longer supports. "
                "Use sqlite:///path/to/mlflow.db or a tracking server."
            )
        return uri
    root = Path(output_root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{root / 'mlflow.db'}"


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


def sweep_run_name(sweep_dir: str | Path, limit: int = 250) -> str:
    """The name of a sweep's parent run: what was swept, e.g. ``sweep: ldm=global,regional seed=0,1``.

    Read from the ``multirun.yaml`` Hydra writes in the sweep folder: the command line's overrides
    (``hydra.overrides.task``) plus the sweeper's ``params`` of an experiment config that the command line does
    not override. Falls back to ``sweep <folder name>`` when the file is not there.
    """
    path = Path(sweep_dir) / "multirun.yaml"
    try:
        cfg = OmegaConf.load(path)
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
    """

    def __init__(
        self,
        enabled: bool,
        tracking_uri: str,
        experiment_name: str,
        artifact_root: Path,
        run_name: str,
        sweep_dir: str | None = None,
    ) -> None:
        self.enabled = enabled
        self.tracking_uri = tracking_uri
        self.run_id: str | None = None
        self.parent_run_id: str | None = None
        if not enabled:
            return
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri)
        experiment = self.client.get_experiment_by_name(experiment_name)
        if experiment is None:
            artifact_root.mkdir(parents=True, exist_ok=True)
            experiment_id = self.client.create_experiment(
                experiment_name, artifact_location=artifact_root.resolve().as_uri()
            )
        else:
            experiment_id = experiment.experiment_id
        self.experiment_id = experiment_id
        tags: dict[str, str] = {}
        if sweep_dir:
            self.parent_run_id = self._parent_run(sweep_dir)
            tags["mlflow.parentRunId"] = self.parent_run_id
            tags[SWEEP_TAG] = sweep_dir
        run = self.client.create_run(experiment_id, run_name=run_name, tags=tags)
        self.run_id = run.info.run_id

    def _parent_run(self, sweep_dir: str) -> str:
        found = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`{SWEEP_TAG}` = '{sweep_dir}' and tags.`regionaldiff.role` = 'sweep'",
            max_results=1,
        )
        if found:
            return found[0].info.run_id
        run = self.client.create_run(
            self.experiment_id,
            run_name=sweep_run_name(sweep_dir),
            tags={SWEEP_TAG: sweep_dir, "regionaldiff.role": "sweep"},
        )
        return run.info.run_id

    # -- logging ------------------------------------------------------------------------------
    def log_config(self, cfg: DictConfig, output_dir: Path) -> None:
        """The resolved config as params (flattened) and as a YAML artifact."""
        # a DictConfig's container is a dict (string keys in these configs)
        resolved = cast(dict[str, Any], OmegaConf.to_container(cfg, resolve=True))
        path = output_dir / "config_resolved.yaml"
        path.write_text(OmegaConf.to_yaml(OmegaConf.create(resolved)))
        if not self.enabled:
            return
        from mlflow.entities import Param

        params = [Param(k, str(v)[:6000]) for k, v in flatten(resolved).items()]
        for start in range(0, len(params), 100):
            self.client.log_batch(self.run_id, params=params[start : start + 100])
        self.client.log_artifact(self.run_id, str(path))

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        if self.enabled and tags:
            for key, value in tags.items():
                self.client.set_tag(self.run_id, key, str(value)[:5000])

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        if not self.enabled:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [
            Metric(k, float(v), now, step or 0)
            for k, v in metrics.items()
            if v is not None and math.isfinite(float(v))
        ]
        for start in range(0, len(batch), 500):
            self.client.log_batch(self.run_id, metrics=batch[start : start + 500])

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        if self.enabled and Path(path).exists():
            self.client.log_artifact(self.run_id, str(path), artifact_path)

    def lightning_logger(self):
        """A Lightning ``MLFlowLogger`` writing into this job's run (None when disabled)."""
        if not self.enabled:
            return None
        return RunBoundMLFlowLogger(tracking_uri=self.tracking_uri, run_id=self.run_id, log_model=False)

    def finish(self, status: str = "FINISHED") -> None:
        if self.enabled and self.run_id:
            self.client.set_terminated(self.run_id, status)


class RunBoundMLFlowLogger(MLFlowLogger):
    """Lightning's MLFlowLogger writing into an existing run, left open when training ends (more steps follow)."""

    def finalize(self, status: str = "success") -> None:
        return None


def write_metrics_json(path: Path, metrics: Mapping[str, float], skipped: Mapping[str, str]) -> None:
    """``metrics.json``: flat ``name -> number``, plus ``skipped: {name: reason}``."""
    payload: dict[str, Any] = {k: float(v) for k, v in sorted(metrics.items())}
    payload["skipped"] = dict(sorted(skipped.items()))
    path.write_text(json.dumps(payload, indent=2))
