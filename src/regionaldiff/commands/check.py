"""``regionaldiff check [overrides]``: the preflight report of the run those overrides would start."""

from __future__ import annotations

from regionaldiff.commands.evaluate import expand_evaluate_command
from regionaldiff.config import compose_config
from regionaldiff.errors import UserError, exit_on_user_error

__all__ = ["CHECK_USAGE", "main"]

CHECK_USAGE = """usage: regionaldiff check [overrides...]

Preflight of the run `regionaldiff [overrides...]` would start: lists every file and folder it reads (dataset
files, images, splits, Stable Diffusion parts, SAM checkpoint, metric backbones) and whether each is there and
in the expected format, the metrics that will be skipped and why, the disk the caches will take, and whether a GPU
is visible. Exit status 0 when the run can start, 1 when it cannot, 2 on a bad override. See docs/setup.md."""


def main(args: list[str]) -> int:
    """``regionaldiff check [overrides]``: print the preflight report; 0 = ready, 1 = not ready, 2 = bad override."""
    from regionaldiff.preflight import format_report, preflight

    if any(a in ("-h", "--help") for a in args):
        print(CHECK_USAGE)
        return 0
    try:
        cfg = compose_config(expand_evaluate_command(args))
        report = preflight(cfg)
    except UserError as err:
        exit_on_user_error(err)
        raise  # pragma: no cover
    print(format_report(report, f"regionaldiff check {' '.join(args)}".rstrip()))
    return 0 if report.ready else 1
