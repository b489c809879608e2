"""``regionaldiff [overrides]``: the one entrypoint (a Hydra app, ``version_base="1.3"``).

Runs ``pipeline.steps`` for one config, or a sweep with ``-m``; every job is an MLflow run (in a sweep, a child
of one parent run). Subcommands: ``regionaldiff evaluate GEN_DIR REF_DIR`` scores a folder of images,
``regionaldiff reconstruct RUN_DIR EEG_FILE OUT_DIR`` reconstructs images from new EEG with a trained model. ``regionaldiff --help`` lists the config groups, ``--cfg job`` prints the composed config.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from regionaldiff.config import register_configs, validate

log = logging.getLogger("regionaldiff")


def config_dir() -> Path:
    """The ``conf/`` folder: ``$REGIONALDIFF_CONFIG_DIR``, else the repository's ``conf/`` (editable install)."""
    env = os.environ.get("REGIONALDIFF_CONFIG_DIR")
    path = Path(env) if env else Path(__file__).resolve().parents[2] / "conf"
    if not (path / "config.yaml").is_file():
        raise SystemExit(
            f"regionaldiff: no config.yaml in {path}. Install the package from its repository with `pip install -e .` "
            "(or `make install`), or set REGIONALDIFF_CONFIG_DIR to the repository's conf/ folder."
        )
    return path


def _run_job(cfg: DictConfig) -> float | None:
    from regionaldiff.pipeline import run_pipeline
    from regionaldiff.tracking.mlflow_run import JobTracker, resolve_tracking_uri

    # every range check runs before anything is created (no MLflow run, no folder) on a bad config
    validate(cfg)
    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    overrides = list(hc.overrides.task)
    uri = resolve_tracking_uri(cfg.logger.tracking_uri, cfg.paths.output_root)
    run_name = " ".join(overrides) or "default"
    tracker = JobTracker(
        enabled=bool(cfg.logger.enabled),
        tracking_uri=uri,
        experiment_name=str(cfg.logger.experiment_name),
        artifact_root=Path(cfg.paths.output_root) / "mlartifacts",
        run_name=run_name if not multirun else f"#{hc.job.num} {run_name}",
        sweep_dir=str(Path(hc.sweep.dir).resolve()) if multirun else None,
    )
    tracker.set_tags({"overrides": " ".join(overrides) or "(none)", "output_dir": str(cfg.paths.output_dir)})
    try:
        metrics = run_pipeline(cfg, tracker)
    except BaseException:
        tracker.finish("FAILED")
        raise
    tracker.finish("FINISHED")
    out = Path(cfg.paths.output_dir)
    lines = [f"Done. Results in {out}"]
    if (out / "metrics.json").is_file():
        lines.append(f"  metrics:         {out / 'metrics.json'}")
    if (out / "reconstructions.png").is_file():
        lines.append(f"  reconstructions: {out / 'reconstructions.png'}")
    if tracker.enabled:
        lines.append(f"  MLflow run {tracker.run_id}: open the dashboard with")
        lines.append(f"    mlflow ui --backend-store-uri {uri}")
    print("\n".join(lines), flush=True)
    return metrics.get("eval/recon_region_miou")


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


def main() -> None:
    """Console entrypoint."""
    if sys.argv[1:2] == ["report"]:
        from regionaldiff.tracking.report import main as report_main

        sys.exit(report_main(sys.argv[2:]))
    if sys.argv[1:2] == ["reconstruct"]:
        from regionaldiff.reconstruct_command import main as reconstruct_main

        sys.exit(reconstruct_main(sys.argv[2:]))
    sys.argv[1:] = expand_evaluate_command(sys.argv[1:])
    register_configs()
    # Lightning prints through its own handlers; stop a second copy going to Hydra's root handler
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).propagate = False
    app = hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="config")(_run_job)
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
