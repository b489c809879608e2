"""``regionaldiff [overrides]``: the one entrypoint (a Hydra app, ``version_base="1.3"``).

Runs ``pipeline.steps`` for one config, or a sweep with ``-m``; every job is an MLflow run (in a sweep, a child
of one parent run). ``regionaldiff --help`` lists the config groups, ``--cfg job`` prints the composed config.
Subcommands: ``regionaldiff check [overrides]`` checks every file the run would read (:mod:`regionaldiff.preflight`),
``regionaldiff evaluate GEN_DIR REF_DIR`` scores a folder of images, ``regionaldiff reconstruct RUN_DIR EEG_FILE
OUT_DIR`` reconstructs images from new EEG with a trained model.

User errors (missing files, bad data, bad config values; :mod:`regionaldiff.errors`) print one line and exit 2;
``REGIONALDIFF_DEBUG=1`` or ``HYDRA_FULL_ERROR=1`` shows their traceback. Program errors keep their traceback.

In a sweep (``-m``) one failure stops one job: every job's config is composed and checked before the first starts
(:func:`check_sweep`; a job that cannot start stops the sweep at minute 0 with exit status 2, unless
``hydra.callbacks.sweep.run_anyway=true``); a job that fails (user error, program error, out of memory, NaN loss)
ends its MLflow run FAILED with a one-line reason and the others run (:func:`run_sweep_job`); a job that finished
in an earlier run of the same command is reused. The sweep ends with a summary table and exit status 1 when a job
failed (:mod:`regionaldiff.tracking.sweep`).
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import sys
import traceback
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from regionaldiff.commands import run_command
from regionaldiff.commands.evaluate import expand_evaluate_command
from regionaldiff.config import compose_config, config_dir, register_configs
from regionaldiff.errors import EXIT_USER_ERROR, UserError, debug_enabled, exit_on_user_error, one_line
from regionaldiff.validation import validate

log = logging.getLogger("regionaldiff")


#: exit status of a sweep in which a job failed (2 stays a user error before anything ran)
EXIT_SWEEP_FAILED = 1


def _in_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def _run_job(cfg: DictConfig) -> float | None:
    """The Hydra task: one job; a user error ends it with one line on stderr and exit status 2. A job of a sweep
    never ends the process: :func:`run_sweep_job`."""
    if _in_multirun():
        return run_sweep_job(cfg)
    try:
        return _job(cfg)
    except UserError as err:
        exit_on_user_error(err)
        raise  # pragma: no cover - exit_on_user_error raises SystemExit or re-raises


def failure_reason(err: BaseException) -> str:
    """A failure in one line: a user error's message (and hint), else the exception's type and message."""
    if isinstance(err, UserError):
        text = one_line(str(err))
        return f"{text} (hint: {one_line(err.hint)})" if err.hint else text
    if isinstance(err, KeyboardInterrupt):
        return "interrupted (KeyboardInterrupt)"
    if isinstance(err, SystemExit):  # e.g. submitit's preemption/timeout handler requeueing the job
        return f"the job's process was ended (exit status {err.code}; preempted or timed out and requeued?)"
    cause = err.__cause__
    if type(err).__name__ == "InstantiationException" and cause is not None:  # Hydra's wrapper: say what failed
        found = re.search(r"full_key: (\S+)", str(err))
        where = found.group(1) if found else ""
        return one_line(f"{type(cause).__name__}: {cause}" + (f" (building {where})" if where else ""))[:1000]
    return one_line(f"{type(err).__name__}: {err}")[:1000]


def run_sweep_job(cfg: DictConfig) -> float | None:
    """One job of a sweep. A job that finished in an earlier run of the same sweep is reused (its run id and
    result). Any error (a user error, a crash, out of memory, a NaN loss) ends this job only: its MLflow run ends
    FAILED with the one-line reason (tag ``regionaldiff.failure``; a traceback in ``failure.txt``), the job writes
    its status file for the sweep's summary and returns NaN (Optuna marks such a trial failed)."""
    from regionaldiff.tracking.mlflow_run import (
        finished_attempt,
        process_rank,
        require_tracking_server,
        resolve_tracking_uri,
    )
    from regionaldiff.tracking.sweep import write_job_status

    if process_rank() != 0:  # the other ranks of a multi-GPU job: rank 0 reports the job
        return _job(cfg)
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
            earlier = finished_attempt(uri, str(cfg.logger.experiment_name), sweep_dir, overrides)
            if earlier is not None:
                where = earlier.data.tags.get("output_dir", "")
                reason = f"finished in an earlier run of this sweep ({where})" if where else "finished earlier"
                write_job_status(sweep_dir, num, status="REUSED", reason=reason, run_id=earlier.info.run_id, **status)
                log.info(
                    "job #%d (%s): %s, run %s; not run again", num, " ".join(overrides), reason, earlier.info.run_id
                )
                value = earlier.data.metrics.get("eval/recon_region_miou")
                return None if value is None else float(value)
        value = _job(cfg, state)
    except Exception as err:  # noqa: BLE001 - one job's failure must not end the sweep
        reason = failure_reason(err)
        details = None if isinstance(err, UserError) else traceback.format_exc()
        if details:
            Path(output_dir).mkdir(parents=True, exist_ok=True)
            (Path(output_dir) / "failure.txt").write_text(details)
        if debug_enabled():
            traceback.print_exc()
        tracker = state.get("tracker") or _failed_run(cfg, hc, sweep_dir)
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


def _failed_run(cfg: DictConfig, hc: Any, sweep_dir: str) -> Any:
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


def _job(cfg: DictConfig, state: dict[str, Any] | None = None) -> float | None:
    from regionaldiff.runner import run_pipeline
    from regionaldiff.tracking.mlflow_run import (
        JobTracker,
        dashboard_url,
        require_tracking_server,
        resolve_tracking_uri,
    )

    # every range check runs before anything is created (no MLflow run, no folder) on a bad config
    validate(cfg)
    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    overrides = list(hc.overrides.task)
    uri = resolve_tracking_uri(cfg.logger.tracking_uri, cfg.paths.output_root)
    if cfg.logger.enabled:
        require_tracking_server(uri)  # a server that is not there at the start: one line, before any work
    run_name = " ".join(overrides) or "default"
    tracker = JobTracker(
        enabled=bool(cfg.logger.enabled),
        tracking_uri=uri,
        experiment_name=str(cfg.logger.experiment_name),
        artifact_root=Path(cfg.paths.output_root) / "mlartifacts",
        run_name=run_name if not multirun else f"#{hc.job.num} {run_name}",
        sweep_dir=str(Path(hc.sweep.dir).resolve()) if multirun else None,
        job_dir=Path(cfg.paths.output_dir),
    )
    if state is not None:
        state["tracker"] = tracker
    tracker.set_tags({"overrides": " ".join(overrides) or "(none)", "output_dir": str(cfg.paths.output_dir)})
    try:
        metrics = run_pipeline(cfg, tracker)
    except BaseException as err:
        if state is None:  # a single run: its reason goes on the run; a sweep's job records its failure itself
            tracker.fail(failure_reason(err), status="KILLED" if isinstance(err, KeyboardInterrupt) else "FAILED")
        elif isinstance(err, KeyboardInterrupt | SystemExit):
            tracker.fail(failure_reason(err), status="KILLED")
        raise
    tracker.finish("FINISHED")
    out = Path(cfg.paths.output_dir)
    lines = [f"Done. Results in {out}"]
    if (out / "metrics.json").is_file():
        lines.append(f"  metrics:         {out / 'metrics.json'}")
    if (out / "reconstructions.png").is_file():
        lines.append(f"  reconstructions: {out / 'reconstructions.png'}")
    if tracker.enabled:
        local = not uri.startswith(("http://", "https://"))
        lines.append(f"  MLflow run {tracker.run_id}" + (": start the dashboard with" if local else ""))
        if local:
            lines.append(f"    mlflow ui --backend-store-uri {uri}")
        lines.append(f"  then open the runs: {dashboard_url(uri, tracker.experiment_id)}")
        lines.append(f"         or this run: {dashboard_url(uri, tracker.experiment_id, tracker.run_id)}")
    print("\n".join(lines), flush=True)
    return metrics.get("eval/recon_region_miou")


def _precheck_overrides(args: list[str]) -> None:
    """Compose a single run's overrides first, so that a bad one is a one-line error (Hydra prints several lines).
    Skipped with Hydra flags (``--help``, ``--cfg``, ``-m``...), ``hydra.*`` overrides and sweep overrides
    (``seed=0,1`` with a config that sets ``hydra.mode: MULTIRUN``), which Hydra handles."""
    if not args or any(a.startswith("-") or a.lstrip("+~").startswith("hydra") for a in args):
        return
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        if any(o.is_sweep_override() for o in OverridesParser.create().parse_overrides(args)):
            return
    except Exception:  # noqa: BLE001 - a malformed override: composing below reports it
        pass
    try:
        compose_config(args)
    except UserError as err:
        exit_on_user_error(err)


RUN_ANYWAY = "hydra.callbacks.sweep.run_anyway=true"


def require_tracking_server_of(cfg: DictConfig) -> None:
    """Exit with one line (status 2) when ``cfg`` logs to a tracking server (``logger.tracking_uri`` or
    ``$MLFLOW_TRACKING_URI``, http/https) that does not answer: a sweep checks it before its first job starts."""
    import os

    from omegaconf import OmegaConf

    from regionaldiff.tracking.mlflow_run import require_tracking_server

    if not OmegaConf.select(cfg, "logger.enabled", default=False):
        return
    uri = OmegaConf.select(cfg, "logger.tracking_uri", default=None) or os.environ.get("MLFLOW_TRACKING_URI", "")
    try:
        require_tracking_server(str(uri))
    except UserError as err:
        exit_on_user_error(err)


def check_sweep(args: list[str]) -> None:
    """Before a sweep starts (``-m``, or a config with ``hydra.mode: MULTIRUN``): compose every job's config and
    check it as its run would (:func:`regionaldiff.runner.startup_problems`: values, files, weights, metrics).
    When a job cannot start, list the jobs and why and exit 2 before anything runs, unless
    ``hydra.callbacks.sweep.run_anyway=true`` (then those jobs fail and the others run). Skipped with other Hydra
    flags (``--cfg``, ``--help``...) and sweepers other than the basic one (Optuna picks its trials as it goes)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    from regionaldiff.runner import startup_problems
    from regionaldiff.tracking.sweep import enumerate_jobs

    flags = [a for a in args if a.startswith("-")]
    if any(f not in ("-m", "--multirun") for f in flags):
        return
    try:
        parsed = OverridesParser.create().parse_overrides([a for a in args if not a.startswith("-")])
        if any(o.is_sweep_override() and not o.is_discrete_sweep() for o in parsed):
            return
    except Exception:  # noqa: BLE001 - Hydra reports a malformed override itself
        return

    def is_hydra(o: Any) -> bool:
        return bool(o.get_key_element().lstrip("+~").startswith("hydra"))

    task = [str(o.input_line) for o in parsed if not is_hydra(o)]
    hydra_overrides = [str(o.input_line) for o in parsed if is_hydra(o)]
    # one job's values for the sweep's own settings (launcher, sweeper, mode)
    first = [
        f"{o.get_key_element()}={next(iter(o.sweep_string_iterator()))}"
        if o.is_sweep_override()
        else str(o.input_line)
        for o in parsed
        if not is_hydra(o)
    ]
    register_configs()
    GlobalHydra.instance().clear()
    problems: list[tuple[int, list[str], list[str]]] = []
    try:
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            try:
                base = compose("config", overrides=first + hydra_overrides, return_hydra_config=True)
            except Exception:  # noqa: BLE001 - Hydra reports a bad override itself
                return
            if not flags and not str(OmegaConf.select(base, "hydra.mode")).endswith("MULTIRUN"):
                return
            jobs = enumerate_jobs(task, OmegaConf.select(base, "hydra.sweeper"))
            if not jobs:
                return
            require_tracking_server_of(base)
            run_anyway = bool(OmegaConf.select(base, "hydra.callbacks.sweep.run_anyway", default=False))
            for num, job in enumerate(jobs):
                try:
                    found = startup_problems(compose("config", overrides=job))
                except UserError as err:
                    found = [one_line(str(err))]
                except Exception as err:  # noqa: BLE001 - whatever stops this job, say it and go on
                    found = [one_line(f"{type(err).__name__}: {err}")]
                if found:
                    problems.append((num, job, found))
    finally:
        GlobalHydra.instance().clear()
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


def hide_schemas(help_text: str) -> str:
    """Hydra's ``--help`` with the ``schema`` entries (the typed base each group's YAML lists first, not an option a
    user picks) taken out of the config-group lines."""
    lines = []
    for line in help_text.splitlines():
        group, sep, options = line.partition(": ")
        if sep and re.fullmatch(r"[\w/]+", group) and "schema" in options.split(", "):
            line = f"{group}: {', '.join(o for o in options.split(', ') if o != 'schema')}"
        lines.append(line)
    return "\n".join(lines)


def main() -> None:
    """Console entrypoint."""
    status = run_command(sys.argv[1:])
    if status is not None:
        sys.exit(status)
    sys.argv[1:] = expand_evaluate_command(sys.argv[1:])
    _precheck_overrides(sys.argv[1:])
    check_sweep(sys.argv[1:])
    register_configs()
    # Lightning prints through its own handlers; stop a second copy going to Hydra's root handler
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).propagate = False
    app = hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="config")(_run_job)
    if "--help" in sys.argv[1:] or "-h" in sys.argv[1:]:
        buffer = io.StringIO()
        try:
            with contextlib.redirect_stdout(buffer):
                app()
        finally:  # Hydra ends its help with sys.exit(0)
            print(hide_schemas(buffer.getvalue()), end="")
    app()
    from regionaldiff.tracking import sweep

    if sweep.LAST_OUTCOME is not None and sweep.LAST_OUTCOME.failed:
        sys.exit(EXIT_SWEEP_FAILED)


if __name__ == "__main__":  # pragma: no cover
    main()
