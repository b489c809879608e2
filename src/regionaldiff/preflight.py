"""Preflight: every file and folder a run will read, checked before any work (``regionaldiff check``).

:func:`preflight` takes the composed config and gathers what the run needs, as each part declares it: the
dataset's files, images and splits (the datamodule's ``required_files()``), and what every ``_target_`` component
of ``regionmap``, ``encoder`` and ``ldm`` declares with its ``required_files(node, key)`` (the SAM checkpoint, the
SD-1.5 UNet and VAE folders, the CLIP folder of ``encoder/align=clip``), plus each metric's backbone weights (from
the metric registry) and the CLIP model of ``ldm.clip_loss``. Preflight itself knows no component's keys. Each
path is checked cheaply (:mod:`regionaldiff.requirements`): there, readable, and in the expected format (file
magic, ``.npy`` header, ``config.json`` parses, the legacy torch file's structure and first trial's shape). The
report also says which metrics will be skipped and why, how much disk the caches will take, and whether a GPU is
visible. ``ready`` is false when a required file is missing or unusable, the config is invalid, or the config
asks for a GPU that is not there; metric weights are never required (a metric without them is skipped).

Preflight checks no config value itself: a run hands it the config already checked (``typed``, from
:func:`regionaldiff.validation.validate`) and it only gathers and checks the files; ``regionaldiff check`` hands it
the composed config alone, and then the checker's verdict is one line of the report. :func:`require_ready` runs it
at the start of every run and raises a one-line :class:`~regionaldiff.errors.UserError` naming what is missing.
"""

from __future__ import annotations

import importlib.util
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig

from regionaldiff.config import plain
from regionaldiff.errors import MissingFileError, UserError, one_line
from regionaldiff.requirements import (
    SETUP_DOC,
    TRANSFORMERS_WEIGHT_FILES,
    PreflightItem,
    RequiredPath,
    check_required,
    describe,
    format_size,
    model_folder_check,
    raise_if_missing,
)

if TYPE_CHECKING:
    from regionaldiff.config import TypedConfig

__all__ = [
    "PreflightItem",
    "PreflightReport",
    "RequiredPath",
    "check_required",
    "format_report",
    "preflight",
    "raise_if_missing",
    "require_ready",
]


@dataclass
class PreflightReport:
    """What :func:`preflight` found. ``ready`` is false when the run cannot start."""

    items: list[PreflightItem] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    metrics_run: list[str] = field(default_factory=list)
    metrics_skipped: dict[str, str] = field(default_factory=dict)
    cache_dir: str = ""
    cache_bytes: int | None = None
    free_bytes: int | None = None
    gpu: str | None = None

    @property
    def blocking(self) -> list[PreflightItem]:
        """Required items that are not usable."""
        return [i for i in self.items if i.required and not i.ok]

    @property
    def ready(self) -> bool:
        return not self.blocking and not self.problems

    def summary(self) -> str:
        """One line: why the run cannot start (empty when ready). Missing files whose folder is missing too are
        grouped under that folder."""
        return "; ".join(describe(self.blocking) + self.problems)


# -- what a config reads ----------------------------------------------------------------------------------------------
def declared_requirements(node: Any, key: str = "") -> list[RequiredPath]:
    """Every file the ``_target_`` components anywhere in ``node`` declare they read: each target's
    ``required_files(node, key)`` (a classmethod, or an attribute of a factory function), called with its own node
    and config key. Nothing is built."""
    from hydra.utils import get_object

    if isinstance(node, DictConfig):
        node = plain(node)
    found: list[RequiredPath] = []
    if isinstance(node, Mapping):
        target = node.get("_target_")
        if target:
            try:
                declare = getattr(get_object(str(target)), "required_files", None)
            except Exception:  # noqa: BLE001 - an unimportable target is validate's error, reported there
                declare = None
            if callable(declare):
                found.extend(declare(node, key))
        for child, value in node.items():
            found.extend(declared_requirements(value, f"{key}.{child}" if key else str(child)))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found.extend(declared_requirements(value, f"{key}[{i}]"))
    return found


def clip_loss_required(ldm: Mapping[str, Any]) -> list[RequiredPath]:
    """The CLIP model of DreamDiffusion's CLIP loss (``ldm.clip_loss``, a typed part of the ``ldm`` schema)."""
    clip = ldm.get("clip_loss") or {}
    if float(clip.get("weight") or 0) <= 0 or not clip.get("pretrained"):
        return []
    return [
        RequiredPath(
            "CLIP ViT-L/14 (CLIP alignment loss)",
            Path(str(clip["pretrained"])),
            "ldm.clip_loss.pretrained",
            kind="folder",
            check=model_folder_check("CLIP", TRANSFORMERS_WEIGHT_FILES),
        )
    ]


def _backbone_required(slot: str, spec: Mapping[str, Any]) -> list[RequiredPath]:
    path = Path(str(spec.get("path") or ""))
    key = f"eval.backbones.{slot}.path"
    if slot == "clip":
        return [
            RequiredPath(
                "CLIP ViT-L/14 (metric clip)",
                path,
                key,
                kind="folder",
                check=model_folder_check("CLIP", TRANSFORMERS_WEIGHT_FILES),
                required=False,
            )
        ]
    if slot == "fid_inception":
        return [RequiredPath("FID Inception (clean-fid)", path / "inception-2015-12-05.pt", key, required=False)]
    out = [RequiredPath(f"{slot} backbone weights", path, key, fmt="torch", required=False)]
    if spec.get("lin_path"):
        out.append(
            RequiredPath(
                "LPIPS linear heads", Path(str(spec["lin_path"])), f"eval.backbones.{slot}.lin_path", required=False
            )
        )
    return out


def eval_plan(
    eval_cfg: Any, folder_mode: bool = False, aligned: bool = False
) -> tuple[list[PreflightItem], list[str], dict[str, str]]:
    """(backbone items, metrics that will run, metrics that will be skipped -> why) for the ``eval`` config
    (``aligned``: the encoder learns an EEG embedding aligned to images, which retrieval needs)."""
    from regionaldiff.evaluation.backbones import backbone_config
    from regionaldiff.evaluation.registry import METRICS
    from regionaldiff.evaluation.suite import eval_config

    cfg = eval_config(eval_cfg)  # settings already checked are taken as they are
    allow = bool(cfg.allow_download)
    items: list[PreflightItem] = []
    seen: dict[str, list[PreflightItem]] = {}
    run: list[str] = []
    skipped: dict[str, str] = {}
    for name in cfg.metrics:
        if name == "retrieval" and not folder_mode and not aligned:
            skipped[name] = (
                "needs an EEG embedding aligned to images: choose encoder/align=clip (THINGS-EEG2) or encoder/align=pixels"
            )
            continue
        reasons = []
        metric = METRICS[name]
        for slot in metric.slots:
            if slot not in seen:
                seen[slot] = [check_required(r) for r in _backbone_required(slot, backbone_config(cfg, slot))]
                items.extend(seen[slot])
            for item in seen[slot]:
                if not item.ok and not (allow and item.status == "missing"):
                    reasons.append(
                        f"{item.what} {item.status} at {item.path}" + (f" ({item.note})" if item.note else "")
                    )
                elif not item.ok:
                    item.note = "will be downloaded on first use (eval.allow_download=true)"
        if metric.package and importlib.util.find_spec(metric.package) is None:
            reasons.append(f"the {metric.package.replace('_', '-')} package is not installed")
        if reasons:
            skipped[name] = "; ".join(reasons)
        else:
            run.append(name)
    return items, run, skipped


def _gpu() -> str | None:
    import torch

    if not torch.cuda.is_available():
        return None
    return f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}"


def _free_bytes(folder: Path) -> int | None:
    for parent in (folder, *folder.parents):
        if parent.exists():
            return shutil.disk_usage(parent).free
    return None  # pragma: no cover


def preflight(cfg: DictConfig, datamodule: Any = None, typed: TypedConfig | None = None) -> PreflightReport:
    """Check everything the run of ``cfg`` will read; see the module docstring.

    Parameters
    ----------
    cfg : DictConfig
        The composed config (``paths.output_dir`` is not needed).
    datamodule : EEGDataModule, optional
        The instantiated ``cfg.dataset`` (built here when not given).
    typed : TypedConfig, optional
        ``cfg`` already checked (a run passes it: nothing is checked again). Without it ``cfg`` is checked here
        (:func:`regionaldiff.validation.validate`) and a bad value is one of the report's problems; the files are
        then gathered from the nodes as they are, so that ``regionaldiff check`` still lists them.

    Returns
    -------
    PreflightReport
        Items, problems, metric plan, cache estimate, GPU; ``ready`` says whether the run can start.
    """
    from regionaldiff.evaluation.suite import eval_config
    from regionaldiff.validation import validate

    report = PreflightReport()
    if typed is None:
        try:
            typed = validate(cfg)
        except UserError as err:
            report.problems.append(f"bad config: {one_line(str(err))}")
    eval_settings: Any = typed.eval if typed is not None else None
    if eval_settings is None:  # an invalid config: the eval plan still shows, or says why not
        try:
            eval_settings = eval_config(cfg.get("eval"))
        except UserError as err:
            report.problems.append(f"bad eval config: {one_line(str(err))}")
    folder_mode = eval_settings is not None and eval_settings.folder_pair
    required: list[RequiredPath] = []
    if folder_mode:
        for key in ("generated_dir", "reference_dir"):
            value = getattr(eval_settings, key)
            if value:
                required.append(
                    RequiredPath(f"images to score ({key})", Path(str(value)), f"eval.{key}", kind="folder")
                )
    else:
        if datamodule is None:
            try:
                datamodule = instantiate(cfg.dataset, "dataset")
            except UserError as err:
                report.problems.append(f"bad dataset config: {one_line(str(err))}")
        if datamodule is not None and hasattr(datamodule, "required_files"):
            required.extend(datamodule.required_files())
        for group in ("regionmap", "encoder", "ldm"):
            required.extend(declared_requirements(cfg.get(group), group))
        required.extend(clip_loss_required(plain(cfg.ldm) or {}))
    report.items = [check_required(r) for r in required]
    if eval_settings is not None:
        aligned = typed.encoder.align is not None if typed is not None else _aligned(cfg)
        items, report.metrics_run, report.metrics_skipped = eval_plan(eval_settings, folder_mode, aligned)
        report.items.extend(items)
    report.gpu = _gpu()
    accelerator = typed.trainer.accelerator if typed is not None else None
    if accelerator is not None and accelerator.value == "gpu" and report.gpu is None:
        report.problems.append("trainer.accelerator=gpu but no CUDA GPU is visible (use trainer=cpu, or run on a GPU)")
    report.cache_dir = str(cfg.paths.cache_dir)
    if not folder_mode and datamodule is not None and hasattr(datamodule, "cache_estimate_bytes"):
        try:
            report.cache_bytes = datamodule.cache_estimate_bytes()
        except OSError:
            report.cache_bytes = None
    report.free_bytes = _free_bytes(Path(report.cache_dir))
    if report.cache_bytes and report.free_bytes is not None and report.cache_bytes > report.free_bytes:
        report.problems.append(
            f"the caches need about {format_size(report.cache_bytes)} under {report.cache_dir} (paths.cache_dir) but only "
            f"{format_size(report.free_bytes)} are free"
        )
    return report


def _aligned(cfg: DictConfig) -> bool:
    """Whether an unchecked config aligns the EEG codes to images (``encoder.align`` set)."""
    return cfg.get("encoder") is not None and cfg.encoder.get("align") is not None


def instantiate(node: Any, group: str) -> Any:
    """``hydra.utils.instantiate(node)``; a constructor's config check (``ValueError``) or user error comes out
    as a :class:`~regionaldiff.errors.UserError` (Hydra wraps them in ``InstantiationException``)."""
    import hydra
    from hydra.errors import InstantiationException

    from regionaldiff.errors import ConfigError

    try:
        return hydra.utils.instantiate(node)
    except InstantiationException as err:
        cause = err.__cause__
        if isinstance(cause, UserError):
            raise cause from err
        if isinstance(cause, ValueError):
            raise ConfigError(str(cause)) from err
        if isinstance(cause, (ImportError, AttributeError)) or "Error locating target" in str(err):
            raise ConfigError(f"{group}._target_: {one_line(str(err))}") from err
        raise


def format_report(report: PreflightReport, title: str = "") -> str:
    """The report as a table for the terminal."""
    lines = [title] if title else []
    if report.items:
        width = max(len(i.what) for i in report.items)
        lines.append("files and folders this run reads:")
        for item in report.items:
            flag = item.status.upper() if item.required and not item.ok else item.status
            if not item.required and not item.ok:
                flag = f"{item.status} (optional)"
            note = f"  [{item.note}]" if item.note else ""
            lines.append(f"  {flag:<20} {item.what:<{width}}  {item.path}  ({item.key}){note}")
    else:
        lines.append("files and folders this run reads: none (the synthetic benchmark needs no data or weights)")
    lines.append(f"metrics computed: {', '.join(report.metrics_run) or 'none from eval.metrics'}")
    for name, reason in report.metrics_skipped.items():
        lines.append(f"metric skipped:   {name}: {reason}")
    estimate = "not estimated" if report.cache_bytes is None else f"about {format_size(report.cache_bytes)}"
    free = "" if report.free_bytes is None else f" ({format_size(report.free_bytes)} free)"
    lines.append(f"dataset cache:    {estimate} under {report.cache_dir}{free}")
    lines.append(f"GPU:              {report.gpu or 'none visible'}")
    for problem in report.problems:
        lines.append(f"PROBLEM:          {problem}")
    if report.ready:
        lines.append("ready: yes")
    else:
        n = len(report.blocking)
        lines.append(
            f"ready: NO ({n} required file(s) or folder(s) not usable, {len(report.problems)} other problem(s)); "
            f"see {SETUP_DOC} for where each file comes from"
        )
    return "\n".join(lines)


def require_ready(cfg: DictConfig, datamodule: Any = None, typed: TypedConfig | None = None) -> PreflightReport:
    """Run :func:`preflight`; raise a one-line user error naming every problem when the run cannot start."""
    report = preflight(cfg, datamodule, typed)
    if not report.ready:
        cls = MissingFileError if report.blocking and not report.problems else UserError
        raise cls(
            f"the run cannot start: {report.summary()}.",
            hint=f"`regionaldiff check` (with the same overrides) lists every file; {SETUP_DOC} says where to get them.",
        )
    return report
