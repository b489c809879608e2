"""Typed structured configs (schemas) for the groups the pipeline owns: encoder, ldm, trainer, logger, pipeline.

They are registered in Hydra's ConfigStore as ``<group>/schema`` and each YAML of the group lists that schema
first in its defaults, so a wrong type (``ldm.lr=abc``) or choice (``ldm.scheduler.prediction_type=foo``) fails
at compose time with the key and the allowed values, before any work starts. Range checks live in
``__post_init__`` and run in :func:`validate` (also before any work). The dataset, maskmap and eval groups are
validated by their own classes' constructors, which the pipeline instantiates first.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, ListConfig, OmegaConf

from regionaldiff.errors import ConfigError

if TYPE_CHECKING:
    import torch


def plain(value: Any) -> Any:
    """OmegaConf containers (what Hydra passes for nested config) -> plain Python (resolved, enums as strings);
    anything else is returned as is."""
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True, enum_to_str=True)
    return value


def resolve_device(name: str, key: str) -> torch.device:
    """A device setting: ``auto`` (CUDA when available, else CPU), ``cpu`` or ``cuda[:N]``.

    ``key`` names the config key in the error raised for a bad name or a CUDA device that is not there.
    """
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(name)
    except RuntimeError as err:
        raise ConfigError(f"{key} must be 'auto', 'cpu' or 'cuda[:N]'; got {name!r}.") from err
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{key}={name!r} but no CUDA device is available; use {key}=auto or cpu.")
    return resolved


def _positive(owner: str, **values: float) -> None:
    for key, value in values.items():
        if value is None or value <= 0:
            raise ValueError(f"{owner}.{key} must be > 0; got {value}.")


def _fraction(owner: str, low_open: bool = False, **values: float) -> None:
    for key, value in values.items():
        if not (0.0 < value < 1.0 if low_open else 0.0 <= value < 1.0):
            raise ValueError(f"{owner}.{key} must be in {'(0, 1)' if low_open else '[0, 1)'}; got {value}.")


class Step(str, Enum):
    prepare = "prepare"
    pretrain = "pretrain"
    finetune = "finetune"
    generate = "generate"
    evaluate = "evaluate"


class TestMaps(str, Enum):
    predicted = "predicted"
    oracle = "oracle"


class TrainMaps(str, Enum):
    reference = "reference"
    predicted = "predicted"
    mixed = "mixed"


class LatentKind(str, Enum):
    pixel_unshuffle = "pixel_unshuffle"
    vae = "vae"


class BetaSchedule(str, Enum):
    linear = "linear"
    scaled_linear = "scaled_linear"
    squaredcos_cap_v2 = "squaredcos_cap_v2"


class PredictionType(str, Enum):
    epsilon = "epsilon"
    v_prediction = "v_prediction"
    sample = "sample"  # predict the clean latents (x0)


class Accelerator(str, Enum):
    auto = "auto"
    cpu = "cpu"
    gpu = "gpu"


PRECISIONS = ("32-true", "bf16-mixed", "16-mixed", "bf16-true")


@dataclass
class EncoderConfig:
    """``encoder`` group: EEG MAE size, its joint objective and its training budget."""

    name: str = "tiny"
    patch_size: int = 4
    embed_dim: int = 64
    depth: int = 2
    num_heads: int = 4
    decoder_embed_dim: int = 32
    decoder_depth: int = 1
    decoder_num_heads: int = 4
    mlp_ratio: float = 4.0
    mask_ratio: float = 0.75
    region_grid: int = 8
    dropout: float = 0.0
    w_mae: float = 1.0
    w_cls: float = 1.0
    w_region: float = 1.0
    lr: float = 1e-3
    weight_decay: float = 0.05
    max_epochs: int = 30

    def __post_init__(self) -> None:
        _positive(
            "encoder",
            patch_size=self.patch_size,
            embed_dim=self.embed_dim,
            depth=self.depth,
            num_heads=self.num_heads,
            decoder_embed_dim=self.decoder_embed_dim,
            decoder_depth=self.decoder_depth,
            lr=self.lr,
            max_epochs=self.max_epochs,
        )
        _fraction("encoder", low_open=True, mask_ratio=self.mask_ratio)
        _fraction("encoder", dropout=self.dropout)
        if self.embed_dim % self.num_heads:
            raise ValueError(
                f"encoder.embed_dim={self.embed_dim} must be divisible by encoder.num_heads={self.num_heads}."
            )
        if self.decoder_embed_dim % self.decoder_num_heads:
            raise ValueError("encoder.decoder_embed_dim must be divisible by encoder.decoder_num_heads.")
        if self.region_grid < 0:
            raise ValueError(f"encoder.region_grid must be >= 0 (0 = no region head); got {self.region_grid}.")
        for key in ("w_mae", "w_cls", "w_region"):
            if getattr(self, key) < 0:
                raise ValueError(f"encoder.{key} must be >= 0 (0 turns the term off); got {getattr(self, key)}.")
        if self.w_mae == self.w_cls == self.w_region == 0:
            raise ValueError("encoder.w_mae, w_cls and w_region are all 0: nothing to train.")


@dataclass
class LatentConfig:
    kind: LatentKind = LatentKind.pixel_unshuffle
    factor: int = 2
    scale: float = 1.0
    pretrained: Optional[str] = None
    subfolder: Optional[str] = "vae"


@dataclass
class UNetConfig:
    pretrained: Optional[str] = None
    subfolder: Optional[str] = "unet"
    config: dict[str, Any] = field(default_factory=dict)


@dataclass
class ControlNetConfig:
    conditioning_embedding_out_channels: list[int] = field(default_factory=lambda: [16, 32])
    init_from_unet: bool = True


@dataclass
class ConditionerConfig:
    n_tokens: int = 8
    use_class_token: bool = True


@dataclass
class SchedulerConfig:
    num_train_timesteps: int = 1000
    beta_schedule: BetaSchedule = BetaSchedule.squaredcos_cap_v2
    prediction_type: PredictionType = PredictionType.epsilon


@dataclass
class SamplingConfig:
    num_steps: int = 25
    guidance_scale: float = 2.0
    eta: float = 0.0
    batch_size: int = 64
    samples_per_eeg: int = 1
    # clip the predicted clean latents to [-range, range] at every DDIM step: right for latents that are images in
    # [-1, 1] (pixel_unshuffle), where it keeps early steps of a cosine schedule from blowing up; off for VAE latents
    clip_sample: bool = False
    clip_sample_range: float = 1.0
    # predicted maps only: make each cell's object class agree with the classification head (fuse_class_into_map)
    class_fused_maps: bool = False


@dataclass
class LDMConfig:
    """``ldm`` group: the denoiser, its conditions, latent space, schedule, training budget and sampler."""

    name: str = "regional"
    regions: bool = True
    cross_attention_dim: int = 64
    cond_drop_prob: float = 0.1
    train_maps: TrainMaps = TrainMaps.reference
    lr: float = 3e-4
    weight_decay: float = 0.0
    max_epochs: int = 20
    batch_size: Optional[int] = None
    latent: LatentConfig = field(default_factory=LatentConfig)
    unet: UNetConfig = field(default_factory=UNetConfig)
    controlnet: ControlNetConfig = field(default_factory=ControlNetConfig)
    conditioner: ConditionerConfig = field(default_factory=ConditionerConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)

    def __post_init__(self) -> None:
        _positive("ldm", cross_attention_dim=self.cross_attention_dim, lr=self.lr, max_epochs=self.max_epochs)
        _fraction("ldm", cond_drop_prob=self.cond_drop_prob)
        _positive(
            "ldm.sampling",
            num_steps=self.sampling.num_steps,
            guidance_scale=self.sampling.guidance_scale,
            batch_size=self.sampling.batch_size,
            samples_per_eeg=self.sampling.samples_per_eeg,
        )
        if self.latent.kind == LatentKind.vae and not self.latent.pretrained:
            raise ValueError("ldm.latent.kind=vae needs ldm.latent.pretrained (a local Stable Diffusion folder).")
        if not self.unet.pretrained and not self.unet.config:
            raise ValueError(
                "ldm.unet needs either `pretrained` (a local folder) or `config` (UNet2DConditionModel kwargs)."
            )


@dataclass
class TrainerConfig:
    """``trainer`` group: where and how Lightning runs (shared by pretrain and finetune)."""

    accelerator: Accelerator = Accelerator.cpu
    devices: int = 1
    precision: str = "32-true"
    deterministic: bool = False
    enable_progress_bar: bool = True
    log_every_n_steps: int = 10
    num_threads: Optional[int] = None

    def __post_init__(self) -> None:
        _positive("trainer", devices=self.devices, log_every_n_steps=self.log_every_n_steps)
        if self.precision not in PRECISIONS:
            raise ValueError(f"trainer.precision={self.precision!r} is not one of {list(PRECISIONS)}.")


@dataclass
class LoggerConfig:
    """``logger`` group: MLflow tracking (sqlite by default; never the file store)."""

    enabled: bool = True
    tracking_uri: Optional[str] = None
    experiment_name: str = "regionaldiff"
    log_images: bool = True

    def __post_init__(self) -> None:
        uri = self.tracking_uri or ""
        if uri and not (uri.startswith(("sqlite:", "http:", "https:", "postgresql", "mysql", "databricks"))):
            raise ValueError(
                f"logger.tracking_uri={uri!r}: use a database (sqlite:///path/mlflow.db) or a server URI; "
                "the MLflow file store is not supported."
            )


@dataclass
class PipelineConfig:
    steps: list[Step] = field(default_factory=lambda: list(Step))
    test_maps: TestMaps = TestMaps.predicted
    grid_size: int = 16

    def __post_init__(self) -> None:
        if not self.steps:
            raise ValueError(f"pipeline.steps is empty; choose from {[s.value for s in Step]}.")


SCHEMAS = {"encoder": EncoderConfig, "ldm": LDMConfig, "trainer": TrainerConfig, "logger": LoggerConfig}


def register_configs() -> None:
    """Register the schemas in Hydra's ConfigStore and the ``${cwd:}`` resolver (idempotent).

    ``paths.root_dir`` is ``${cwd:}``, the folder ``regionaldiff`` runs in: ``${hydra:runtime.cwd}`` cannot be
    used there, because a multirun resolves ``hydra.sweep.dir`` (which derives from it) before Hydra's runtime
    config exists.
    """
    import os

    OmegaConf.register_new_resolver("cwd", os.getcwd, replace=True)
    cs = ConfigStore.instance()
    for group, node in SCHEMAS.items():
        cs.store(group=group, name="schema", node=node)
    cs.store(group="pipeline", name="schema", node=PipelineConfig)


def validate(cfg: DictConfig) -> dict[str, Any]:
    """Run every schema's range checks; return the typed objects by group.

    Raises :class:`~regionaldiff.errors.ConfigError` (a ``ValueError``) naming the key.
    """
    typed: dict[str, Any] = {}
    for group in (*SCHEMAS, "pipeline"):
        node = cfg[group]
        try:
            obj = OmegaConf.to_object(node)
        except ConfigError:
            raise
        except ValueError as err:  # the schemas' __post_init__ range checks
            raise ConfigError(str(err)) from err
        if not isinstance(obj, (EncoderConfig, LDMConfig, TrainerConfig, LoggerConfig, PipelineConfig)):
            raise ConfigError(
                f"Config group {group!r} does not use its schema: add `- schema` first in its defaults list."
            )
        typed[group] = obj
    return typed
