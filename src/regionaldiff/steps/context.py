"""What the pipeline's steps share: the config, its typed view, the datamodule, the tracker and the artifacts."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from regionaldiff.artifacts import ArtifactStore, Slot
from regionaldiff.config import TypedConfig
from regionaldiff.data.base import EEGDataModule
from regionaldiff.maps.base import RegionMapGenerator
from regionaldiff.tracking.mlflow_run import JobTracker

# dataset keys that change how data is loaded or checked, never the data itself (left out of artifact keys)
LOADER_KEYS = ("batch_size", "num_workers", "cache_dir", "cache_verify")

#: keys added to a group after artifacts were keyed without them, with the value that keeps what they build as it was:
#: left out of artifact keys at that value, so that artifacts made before the key existed are still found
KEYS_ADDED_TO_ARTIFACTS: dict[str, dict[str, Any]] = {
    # the concept worlds' subject selection (None: every subject) and subject differences besides the forward model
    "dataset": {"subjects": None, "subject_latency_jitter": 0.0, "subject_snr_spread": 0.0},
    "encoder": {"subject_layer": "none"},  # the subject conditioning (none: none)
}


def artifact_key(group: str, values: dict[str, Any]) -> dict[str, Any]:
    """``values`` (a group's plain config) without the keys of :data:`KEYS_ADDED_TO_ARTIFACTS` at their old value."""
    added = KEYS_ADDED_TO_ARTIFACTS.get(group, {})
    return {k: v for k, v in values.items() if not (k in added and v == added[k])}


@dataclass
class PipelineContext:
    """Everything the steps share.

    Attributes
    ----------
    cfg : DictConfig
        The composed config (for the nodes that are keyed or passed on as they are).
    typed : TypedConfig
        The validated, typed groups the pipeline owns (encoder, ldm, trainer, logger, pipeline).
    keys, slots : dict
        Each finished step's artifact key and folder, by step name (a later step's key contains the earlier ones).
    metrics, skipped : dict
        The evaluation's metrics, and the metrics skipped with their reason.
    """

    cfg: DictConfig
    typed: TypedConfig
    datamodule: EEGDataModule
    regionmap: RegionMapGenerator
    tracker: JobTracker
    store: ArtifactStore
    output_dir: Path
    keys: dict[str, dict[str, Any]] = field(default_factory=dict)
    slots: dict[str, Slot] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def seed(self) -> int:
        return int(self.cfg.seed)

    @property
    def device(self) -> torch.device:
        """Where generation runs: the trainer's accelerator (CUDA for ``gpu``, or ``auto`` with a GPU)."""
        accel = self.typed.trainer.accelerator.value
        if accel == "gpu" or (accel == "auto" and torch.cuda.is_available()):
            return torch.device("cuda")
        return torch.device("cpu")
