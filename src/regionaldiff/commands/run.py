"""``regionaldiff [overrides]``: one run of the pipeline, or a sweep (``-m``, or a config with ``hydra.mode: MULTIRUN``).

A single run is composed once (:func:`compose`): a bad override is one line and exit status 2, before anything is
created; the composed config is then run as Hydra runs a job (its folder, its logging, ``.hydra/``), and the job
checks it once (:func:`regionaldiff.validation.validate`) and runs the pipeline (:func:`regionaldiff.runner.run_job`).
Hydra's own flags (``--help``, ``--cfg job``, ``-m``, ...), sweep overrides (``seed=0,1``) and a config that sweeps
are handed to Hydra's app as they are: a sweep's jobs are checked before the first starts and each job runs in
:mod:`regionaldiff.sweeps`.

User errors (missing files, bad data, bad config values; :mod:`regionaldiff.errors`) print one line and exit 2;
``REGIONALDIFF_DEBUG=1`` or ``HYDRA_FULL_ERROR=1`` shows their traceback. Program errors keep their traceback.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig

from regionaldiff.config import check_renamed_keys, compose_error, config_dir, is_schema, register_configs
from regionaldiff.errors import UserError, exit_on_user_error

__all__ = ["compose", "hide_schemas", "main", "task"]

TaskFunction = Callable[[DictConfig], Any]


def task(cfg: DictConfig) -> float | None:
    """The Hydra task: one job; a user error ends it with one line on stderr and exit status 2. A job of a sweep
    never ends the process: :func:`regionaldiff.sweeps.job.run_sweep_job`."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from regionaldiff.runner import run_job

    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        from regionaldiff.sweeps.job import run_sweep_job

        return run_sweep_job(cfg)
    try:
        return run_job(cfg)
    except UserError as err:
        exit_on_user_error(err)
        raise  # pragma: no cover - exit_on_user_error raises SystemExit or re-raises


def hands_to_hydra(args: list[str]) -> bool:
    """Whether Hydra's own app takes ``args``: a Hydra flag (``--help``, ``--cfg``, ``-m``...) or a sweep override
    (``seed=0,1``); a malformed override is composed (and reported in one line) here."""
    if any(a.startswith("-") for a in args):
        return True
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        return any(o.is_sweep_override() for o in OverridesParser.create().parse_overrides(args))
    except Exception:  # noqa: BLE001 - a malformed override: composing reports it in one line
        return False


def _hydra(task_function: TaskFunction) -> Any:
    """Hydra's app object for ``task_function``, set up as ``hydra.main`` sets it up (the same job name and config
    search path)."""
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import (
        create_automatic_config_search_path,
        detect_calling_file_or_module_from_task_function,
        detect_task_name,
    )

    register_configs()
    calling_file, calling_module = detect_calling_file_or_module_from_task_function(task_function)
    search_path = create_automatic_config_search_path(calling_file, calling_module, str(config_dir()))
    return Hydra.create_main_hydra2(
        task_name=detect_task_name(calling_file, calling_module), config_search_path=search_path
    )


def compose(hydra: Any, overrides: list[str]) -> DictConfig:
    """The run's config, with its ``hydra`` node: the one composition of a single run. A bad override is a
    :class:`~regionaldiff.errors.ConfigError` (one line); so is an override of a renamed key, which names the new one."""
    from hydra.errors import HydraException
    from hydra.types import RunMode
    from omegaconf.errors import OmegaConfBaseException

    check_renamed_keys(overrides)
    try:
        return hydra.compose_config("config", overrides, run_mode=RunMode.RUN)
    except (HydraException, OmegaConfBaseException) as err:
        raise compose_error(err) from err


def _run(hydra: Any, cfg: DictConfig, task_function: TaskFunction) -> Any:
    """Run the composed ``cfg`` as one job, as Hydra's ``Hydra.run`` does after composing (callbacks, the job's
    folder and logging, ``.hydra/``); the job's exception is raised again."""
    from hydra._internal.callbacks import Callbacks
    from hydra.core.utils import run_job
    from hydra.types import HydraContext, RunMode

    cfg.hydra.mode = RunMode.RUN
    cfg.hydra.overrides.hydra.append("hydra.mode=RUN")  # what Hydra's app records for a run
    callbacks = Callbacks(cfg)
    callbacks.on_run_start(config=cfg, config_name="config")
    ret = run_job(
        hydra_context=HydraContext(config_loader=hydra.config_loader, callbacks=callbacks),
        task_function=task_function,
        config=cfg,
        job_dir_key="hydra.run.dir",
        job_subdir_key=None,
        configure_logging=True,
    )
    callbacks.on_run_end(config=cfg, config_name="config", job_return=ret)
    return ret.return_value  # raises the job's exception


def run_once(args: list[str], task_function: TaskFunction) -> bool:
    """Compose ``args`` once and run them as one job; False (nothing done) when the config sweeps
    (``hydra.mode: MULTIRUN``), which Hydra's app then launches."""
    from hydra._internal.utils import run_and_report
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.utils import configure_log
    from hydra.types import RunMode

    hydra = run_and_report(lambda: _hydra(task_function))
    try:
        cfg = compose(hydra, args)
    except UserError as err:
        exit_on_user_error(err)
    if cfg.hydra.mode == RunMode.MULTIRUN:
        GlobalHydra.instance().clear()
        return False
    configure_log(cfg.hydra.hydra_logging, cfg.hydra.verbose)
    run_and_report(lambda: _run(hydra, cfg, task_function))
    return True


def hide_schemas(help_text: str) -> str:
    """Hydra's ``--help`` with the schema entries (``schema``, ``schema_<name>``: the typed base each group's YAML
    lists first, not an option a user picks; :func:`~regionaldiff.config.is_schema`) taken out of the config-group
    lines."""
    lines = []
    for line in help_text.splitlines():
        group, sep, options = line.partition(": ")
        if sep and re.fullmatch(r"[\w/]+", group) and any(is_schema(o) for o in options.split(", ")):
            line = f"{group}: {', '.join(o for o in options.split(', ') if not is_schema(o))}"
        lines.append(line)
    return "\n".join(lines)


def main(args: list[str], task_function: TaskFunction = task) -> None:
    """Run ``regionaldiff ARGS`` (``args``: what follows the program name, also in ``sys.argv[1:]``, which Hydra's app
    reads). ``task_function`` is the Hydra task; its module names the job (``hydra.job.name``, the log file's name)."""
    import hydra

    register_configs()
    # Lightning prints through its own handlers; stop a second copy going to Hydra's root handler
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).propagate = False
    if not hands_to_hydra(args) and run_once(args, task_function):
        return
    app = hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="config")(task_function)
    if "--help" in args or "-h" in args:
        buffer = io.StringIO()
        try:
            with contextlib.redirect_stdout(buffer):
                app()
        finally:  # Hydra ends its help with sys.exit(0)
            print(hide_schemas(buffer.getvalue()), end="")
    app()
