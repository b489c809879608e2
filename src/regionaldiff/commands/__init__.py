"""The subcommands of ``regionaldiff``, one module each (as diffusers' ``commands/``).

``regionaldiff`` alone (with Hydra overrides) runs the pipeline; ``regionaldiff NAME ...`` runs a subcommand:

==============  ===============================================  =========================================
command         what it does                                     module
==============  ===============================================  =========================================
``check``       preflight of a run: every file it reads, checked  :mod:`regionaldiff.commands.check`
``report``      a sweep's tables, paired tests and figures        :mod:`regionaldiff.commands.report`
``reconstruct`` images from new EEG with a trained model         :mod:`regionaldiff.commands.reconstruct`
``evaluate``    score a folder of images against another          :mod:`regionaldiff.commands.evaluate`
``sync``        send a job's tracking records kept while its      :mod:`regionaldiff.commands.sync`
                MLflow server was away
==============  ===============================================  =========================================

``check``, ``report``, ``reconstruct`` and ``sync`` have a ``main(args) -> exit status``; ``evaluate`` expands into the
overrides of an evaluate-only run, which Hydra then runs. A new subcommand is a module here with a ``main`` and an
entry in :data:`COMMANDS`.
"""

from __future__ import annotations

import importlib

__all__ = ["COMMANDS", "run_command"]

#: subcommand -> the module whose ``main(args) -> int`` runs it
COMMANDS: dict[str, str] = {
    "check": "regionaldiff.commands.check",
    "report": "regionaldiff.commands.report",
    "reconstruct": "regionaldiff.commands.reconstruct",
    "sync": "regionaldiff.commands.sync",
}


def run_command(argv: list[str]) -> int | None:
    """Run the subcommand ``argv[0]`` with the rest as its arguments and return its exit status; None when
    ``argv`` names no subcommand (a pipeline run, or ``evaluate``, which expands into one)."""
    if not argv or argv[0] not in COMMANDS:
        return None
    module = importlib.import_module(COMMANDS[argv[0]])
    return int(module.main(argv[1:]))
