"""A sweep's plan, before any job starts: its jobs (:func:`enumerate_jobs`), its identity (:func:`sweep_key`), and the
check that every job can start (:func:`check_sweep`)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
from typing import Any

from omegaconf import DictConfig, OmegaConf

from regionaldiff.errors import EXIT_USER_ERROR, UserError, exit_on_user_error, one_line

log = logging.getLogger(__name__)

#: the override that launches a sweep whose check found jobs that cannot start
RUN_ANYWAY = "hydra.callbacks.sweep.run_anyway=true"


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


def compose_job(overrides: list[str]) -> DictConfig:
    """One job's config (without the ``hydra`` node), as the job itself will be composed: by the Hydra app that is
    running (a sweep being launched), else by Hydra's compose API."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.types import RunMode
    from omegaconf import open_dict

    from regionaldiff.config import compose_config

    hydra_app = GlobalHydra.instance().hydra if GlobalHydra.instance().is_initialized() else None
    if hydra_app is None:
        return compose_config(overrides)
    cfg = hydra_app.compose_config("config", overrides, run_mode=RunMode.RUN, from_shell=False)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


def require_tracking_server_of(cfg: DictConfig) -> None:
    """Exit with one line (status 2) when ``cfg`` logs to a tracking server (``logger.tracking_uri`` or
    ``$MLFLOW_TRACKING_URI``, http/https) that does not answer: a sweep checks it before its first job starts."""
    from regionaldiff.tracking.mlflow_run import require_tracking_server

    if not OmegaConf.select(cfg, "logger.enabled", default=False):
        return
    uri = OmegaConf.select(cfg, "logger.tracking_uri", default=None) or os.environ.get("MLFLOW_TRACKING_URI", "")
    try:
        require_tracking_server(str(uri))
    except UserError as err:
        exit_on_user_error(err)


def check_sweep(config: DictConfig) -> None:
    """Before a sweep's first job starts (``config``: the sweep's config, with its ``hydra`` node): compose every
    job's config and check it as its run would (:func:`regionaldiff.runner.startup_problems`: values, files,
    weights, metrics). When a job cannot start, list the jobs and why and exit 2 before anything runs, unless
    ``hydra.callbacks.sweep.run_anyway=true`` (then those jobs fail and the others run). Skipped for sweepers
    other than the basic one and for ranges and intervals (Optuna picks its trials as it goes)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from regionaldiff.runner import startup_problems

    task = [str(o) for o in OmegaConf.select(config, "hydra.overrides.task", default=[]) or []]
    try:
        parsed = OverridesParser.create().parse_overrides(task)
        if any(o.is_sweep_override() and not o.is_discrete_sweep() for o in parsed):
            return
        jobs = enumerate_jobs(task, OmegaConf.select(config, "hydra.sweeper"))
    except Exception:  # noqa: BLE001 - Hydra's sweeper reports a malformed override itself
        return
    if not jobs:
        return
    require_tracking_server_of(config)
    run_anyway = bool(OmegaConf.select(config, "hydra.callbacks.sweep.run_anyway", default=False))
    problems: list[tuple[int, list[str], list[str]]] = []
    for num, job in enumerate(jobs):
        try:
            found = startup_problems(compose_job(job))
        except UserError as err:
            found = [one_line(str(err))]
        except Exception as err:  # noqa: BLE001 - whatever stops this job, say it and go on
            found = [one_line(f"{type(err).__name__}: {err}")]
        if found:
            problems.append((num, job, found))
    if not problems:
        log.info("checked the %d jobs of this sweep before starting: every one can start", len(jobs))
        print(f"regionaldiff: checked the {len(jobs)} jobs of this sweep before starting: every one can start.")
        return
    lines = [f"  #{num} {' '.join(job)}: {'; '.join(found)}" for num, job, found in problems]
    if run_anyway:
        print(
            f"regionaldiff: warning: {len(problems)} of {len(jobs)} jobs of this sweep cannot start; running the "
            f"others ({RUN_ANYWAY}):\n" + "\n".join(lines),
            file=sys.stderr,
            flush=True,
        )
        return
    sys.stdout.flush()
    print(
        f"regionaldiff: error: {len(problems)} of {len(jobs)} jobs of this sweep cannot start; nothing was run:\n"
        + "\n".join(lines)
        + f"\nregionaldiff: hint: fix them (`regionaldiff check OVERRIDES` lists every file a job reads), or run the "
        f"other jobs anyway with {RUN_ANYWAY}",
        file=sys.stderr,
        flush=True,
    )
    sys.exit(EXIT_USER_ERROR)
