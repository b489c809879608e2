"""``regionaldiff evaluate GENERATED_DIR REFERENCE_DIR [overrides]``: score a folder of images against another.

The command is a spelling of a run: it expands into the Hydra overrides of an evaluate-only run, which the
pipeline then runs (and logs) like any other.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["EVALUATE_USAGE", "expand_evaluate_command"]

EVALUATE_USAGE = """usage: regionaldiff evaluate GENERATED_DIR REFERENCE_DIR [overrides...]

Score a folder of generated images against a folder of true images, matched by file name
(`<stem>_s<k>.<ext>` = sample k of `<stem>`), with the metrics of `eval` (e.g. eval=imagenet,
eval.metrics=[ssim,pixcorr,fid]). Writes metrics.json in the job folder and logs an MLflow run.
Same as: regionaldiff pipeline.steps=[evaluate] eval.generated_dir=... eval.reference_dir=..."""


def expand_evaluate_command(argv: list[str]) -> list[str]:
    """``evaluate GEN REF [overrides]`` -> the equivalent Hydra overrides (other argument lists are returned as is)."""
    if not argv or argv[0] != "evaluate":
        return argv
    rest = argv[1:]
    if len(rest) < 2 or rest[0].startswith("-") or "=" in rest[0] or "=" in rest[1]:
        raise SystemExit(EVALUATE_USAGE)
    folders = []
    for key, value in (("eval.generated_dir", rest[0]), ("eval.reference_dir", rest[1])):
        path = Path(value).resolve()
        if not path.is_dir():
            raise SystemExit(
                f"regionaldiff evaluate: {key.split('.')[1]} {value!r} is not a folder.\n\n{EVALUATE_USAGE}"
            )
        escaped = str(path).replace("\\", "\\\\").replace("'", "\\'")
        folders.append(f"{key}='{escaped}'")
    return ["pipeline.steps=[evaluate]", *folders, *rest[2:]]
