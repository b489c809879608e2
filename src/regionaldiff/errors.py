"""Errors a user can fix: the CLI prints them as one line, without a traceback.

A *user error* is a mistake in what the user gave the program: a missing or unreadable file or folder, data of
the wrong shape or format, missing or mismatched weights, a bad config value. Its message says what is wrong,
the file or key, what was expected and what to do. ``regionaldiff`` prints it as ``regionaldiff: error:
<message>`` (one line, plus an optional ``hint:`` line) and exits with status 2. Any other exception is a
program error and keeps its traceback.

The classes also derive from the built-in exception the code raised before (``FileNotFoundError``,
``ValueError``), so callers catching those keep working.

Set ``REGIONALDIFF_DEBUG=1`` (or Hydra's ``HYDRA_FULL_ERROR=1``) to get the full traceback of a user error.
"""

from __future__ import annotations

import os
import re
import sys

__all__ = [
    "EXIT_USER_ERROR",
    "BadInputError",
    "ConfigError",
    "DataFormatError",
    "MissingFileError",
    "TrainingDivergedError",
    "UnsafeFileError",
    "UserError",
    "debug_enabled",
    "exit_on_user_error",
    "failure_reason",
    "format_user_error",
    "one_line",
]

#: exit status of the CLI on a user error (argparse's convention for usage errors)
EXIT_USER_ERROR = 2


class UserError(Exception):
    """A mistake the user can fix. ``hint`` (optional) is printed on a second line.

    Parameters
    ----------
    message : str
        What is wrong, the file or key, what was expected and what to do.
    hint : str, optional
        A short follow-up (e.g. the command that tells more).
    """

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


class MissingFileError(UserError, FileNotFoundError):
    """A file or folder the run needs is not there (dataset files, weights, checkpoints)."""


class BadInputError(UserError, ValueError):
    """A file is there but unusable: wrong format, shape, dtype or content, or weights of another model."""


class DataFormatError(BadInputError):
    """A dataset file is not what it claims to be (wrong keys, shape, dtype or encoding); a ``ValueError``."""


class UnsafeFileError(DataFormatError):
    """A file asks the unpickler for something other than arrays and plain containers."""


class ConfigError(UserError, ValueError):
    """A config value is out of range, of the wrong kind, or inconsistent with another one."""


class TrainingDivergedError(UserError, FloatingPointError):
    """Training stopped because its loss or weights became NaN or infinite (names the step and the epoch)."""


def one_line(text: str) -> str:
    """``text`` with every run of whitespace (newlines included) collapsed to one space."""
    return " ".join(str(text).split())


def debug_enabled() -> bool:
    """True when ``REGIONALDIFF_DEBUG`` or ``HYDRA_FULL_ERROR`` is set to a non-empty value other than ``0``."""
    return any(os.environ.get(name, "") not in ("", "0") for name in ("REGIONALDIFF_DEBUG", "HYDRA_FULL_ERROR"))


def format_user_error(err: BaseException, prog: str = "regionaldiff") -> str:
    """The CLI's report of a user error: ``<prog>: error: <message>`` and, when there is one, a ``hint:`` line."""
    lines = [f"{prog}: error: {one_line(str(err))}"]
    hint = getattr(err, "hint", None)
    if hint:
        lines.append(f"{prog}: hint: {one_line(hint)}")
    return "\n".join(lines)


def exit_on_user_error(err: UserError) -> None:
    """Print ``err`` as one line and exit with status 2; with ``REGIONALDIFF_DEBUG=1`` or ``HYDRA_FULL_ERROR=1``
    re-raise it instead (full traceback)."""
    if debug_enabled():
        raise err
    sys.stdout.flush()
    print(format_user_error(err), file=sys.stderr, flush=True)
    sys.exit(EXIT_USER_ERROR)


def failure_reason(err: BaseException) -> str:
    """A failure in one line (a job's reason in MLflow and in a sweep's summary): a user error's message (and hint),
    else the exception's type and message."""
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
