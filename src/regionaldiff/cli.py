"""``regionaldiff``: the one entrypoint. It parses the command line and dispatches; the work is elsewhere.

- ``regionaldiff NAME ...``: a subcommand (:mod:`regionaldiff.commands`: ``check``, ``report``, ``reconstruct``,
  ``sync``); ``regionaldiff evaluate GEN_DIR REF_DIR`` expands into the overrides of an evaluate-only run.
- ``regionaldiff [overrides]``: the pipeline, one run or a sweep with ``-m`` (:mod:`regionaldiff.commands.run`:
  composed once, checked once; a sweep's jobs are checked before the first starts and fail one at a time,
  :mod:`regionaldiff.sweeps`). ``regionaldiff --help`` lists the config groups, ``--cfg job`` prints the composed
  config.
"""

from __future__ import annotations

import sys

from omegaconf import DictConfig

from regionaldiff.commands import run, run_command
from regionaldiff.commands.evaluate import expand_evaluate_command


def _run_job(cfg: DictConfig) -> float | None:
    """The Hydra task (:func:`regionaldiff.commands.run.task`). It is defined here because Hydra names the job after
    the task's module: ``hydra.job.name`` is ``cli`` and each job's log ``cli.log``."""
    return run.task(cfg)


def main() -> None:
    """Console entrypoint."""
    status = run_command(sys.argv[1:])
    if status is not None:
        sys.exit(status)
    sys.argv[1:] = expand_evaluate_command(sys.argv[1:])
    run.main(sys.argv[1:], _run_job)


if __name__ == "__main__":  # pragma: no cover
    main()
