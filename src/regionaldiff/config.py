"""Typed structured configs (schemas) for every config group: encoder, ldm, trainer, logger, pipeline, eval, dataset
and regionmap.

They are registered in Hydra's ConfigStore as ``<group>/schema`` (``dataset/schema_<name>`` and
``regionmap/schema_<name>``: one per option, as their fields differ) and each YAML of the group lists its schema first
in its defaults (an ``eval`` option through ``default.yaml``), so a misspelt key (``eval.resolutoin=64``), a wrong
type (``ldm.lr=abc``) or choice (``ldm.noise_schedule.prediction_type=foo``) fails at compose time with the key and
the allowed values, before any work starts. Range and choice checks live in ``__post_init__`` and run in
:func:`regionaldiff.validation.validate` (also before any work); a datamodule or region-map generator built in Python
builds its schema from its arguments (:func:`schema_from_arguments`), so the same check runs there. The choices a
config makes (:data:`RESIZE_MODES`, :data:`MONTAGES`, :data:`REGIONMAP_MODES`, ...) are defined here, once. Schema
fields carry no defaults of their own (``MISSING``, or None where a key does not apply to a variant): the YAML files
under ``conf/`` are the one source of values. What a schema cannot check from here, as it sits below the tables, the
same checker does: the names in ``eval.metrics`` against the metric registry
(:func:`regionaldiff.evaluation.suite.check_eval`), and a dataset or region-map generator added without a schema
against the signature of the class its ``_target_`` names. :class:`TypedConfig` holds them all.
"""

from __future__ import annotations

import copy
import numbers
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, TypeVar

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf

from regionaldiff.errors import ConfigError, one_line

if TYPE_CHECKING:
    import torch


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


class EvalSplit(str, Enum):
    test = "test"
    val = "val"


class TrainMaps(str, Enum):
    reference = "reference"
    predicted = "predicted"
    mixed = "mixed"


class BetaSchedule(str, Enum):
    linear = "linear"
    scaled_linear = "scaled_linear"
    squaredcos_cap_v2 = "squaredcos_cap_v2"


class PredictionType(str, Enum):
    epsilon = "epsilon"
    v_prediction = "v_prediction"
    sample = "sample"  # predict the clean latents (x0)


class Sampler(str, Enum):
    """Sampling solvers (diffusers schedulers)."""

    ddim = "ddim"
    dpmpp_2m = "dpmpp_2m"  # DPM-Solver++ (multistep)
    unipc = "unipc"
    euler = "euler"
    pndm = "pndm"  # PLMS (DreamDiffusion's sampler)


class UNetTraining(str, Enum):
    """Which UNet weights the finetune step trains."""

    frozen = "frozen"
    cross_attention = "cross_attention"  # DreamDiffusion's set: attn2 + norm2 of the transformer blocks
    lora = "lora"
    full = "full"


class NullCondition(str, Enum):
    """The unconditional input of classifier-free guidance (and of condition dropout in training)."""

    zeros = "zeros"  # an all-zero context
    learned = "learned"  # a learned null context


class SubjectLayer(str, Enum):
    """``encoder.subject_layer``: the subject conditioning of every encoder (:mod:`regionaldiff.encoder.base`)."""

    none = "none"  # no subject conditioning
    token = "token"  # a learned embedding per subject added to the codes (ATM's subject token)
    linear = "linear"  # a learned channel map per subject before the backbone (a subject layer)


class Accelerator(str, Enum):
    auto = "auto"
    cpu = "cpu"
    gpu = "gpu"


PRECISIONS = ("32-true", "bf16-mixed", "16-mixed", "bf16-true")


@dataclass
class AlignConfig:
    """``encoder.align`` (``encoder/align=clip|pixels``; absent by default, or with ``~encoder/align``): a head that aligns the
    pooled EEG codes with a frozen image embedding by a contrastive loss (NICE / ATM), what zero-shot retrieval
    ranks images by (:mod:`regionaldiff.encoder.alignment`)."""

    image_embedder: Any = MISSING  # a `_target_` component: images in [-1, 1] -> [B, embedding_dim]
    weight: float = MISSING  # of the contrastive term in the encoder's objective
    temperature: float = MISSING  # initial temperature of the contrastive logits (learned)
    batch_size: int = MISSING  # images per batch when the embeddings are computed (once, then cached)

    def __post_init__(self) -> None:
        _positive("encoder.align", weight=self.weight, temperature=self.temperature, batch_size=self.batch_size)


@dataclass
class EncoderConfig:
    """``encoder`` group: the EEG network (``net``, a ``_target_`` component) and its pretraining objective.

    ``net`` is instantiated with the data's ``n_chans``, ``n_times``, ``sfreq``, ``num_classes`` and
    ``num_region_labels`` (and the image embedding's width, ``align_dim``) added
    (:func:`regionaldiff.components.build_encoder`); its own arguments are checked before any work by
    :func:`regionaldiff.components.check_component`. ``align`` is None unless an ``encoder/align`` option is chosen.
    """

    net: Any = MISSING
    w_mae: float = MISSING
    w_cls: float = MISSING
    w_region: float = MISSING
    calibrate_background: bool = MISSING
    # the training recipe (conf/encoder/recipe, `# @package encoder`: its keys sit here)
    lr: float = MISSING
    weight_decay: float = MISSING
    max_epochs: int = MISSING
    batch_size: Optional[int] = MISSING  # None: the dataset's batch_size
    learn_temperature: bool = MISSING
    early_stopping_patience: int = MISSING  # 0: off
    augment: Any = MISSING  # name -> `_target_` node of a batch augmentation (braindecode.augmentation)
    align: Optional[AlignConfig] = None
    # the subject conditioning, for every encoder (docs/encoders.md, "Many subjects"): none | token | linear. A default
    # here, not in the options' YAML, so that an encoder YAML written before the key composes as it did
    subject_layer: SubjectLayer = SubjectLayer.none

    def __post_init__(self) -> None:
        _positive("encoder", lr=self.lr, max_epochs=self.max_epochs)
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"encoder.batch_size must be >= 1 or null (the dataset's); got {self.batch_size}.")
        if self.early_stopping_patience < 0:
            raise ValueError(
                f"encoder.early_stopping_patience must be >= 0 (0 = off); got {self.early_stopping_patience}."
            )
        for key in ("w_mae", "w_cls", "w_region"):
            if getattr(self, key) < 0:
                raise ValueError(f"encoder.{key} must be >= 0 (0 turns the term off); got {getattr(self, key)}.")
        if self.w_mae == self.w_cls == self.w_region == 0 and self.align is None:
            raise ValueError(
                "encoder.w_mae, w_cls and w_region are all 0 and there is no encoder.align: nothing to train. An "
                "encoder without masked recovery (shallow, mlp, atm, ...) needs the class objective (encoder.w_cls, "
                "e.g. ablation=global_cls for a global-only arm) or an alignment (encoder/align=pixels|clip)."
            )


@dataclass
class NoiseScheduleConfig:
    """``ldm.noise_schedule``: the training noise schedule (the sampler is ``ldm.sampling.scheduler``)."""

    num_train_timesteps: int = MISSING
    beta_schedule: BetaSchedule = MISSING
    prediction_type: PredictionType = MISSING


@dataclass
class SamplingConfig:
    scheduler: Sampler = MISSING
    num_steps: int = MISSING
    guidance_scale: float = MISSING
    eta: float = MISSING
    batch_size: int = MISSING
    samples_per_eeg: int = MISSING
    # clip the predicted clean latents to [-range, range] at every DDIM step: right for latents that are images in
    # [-1, 1] (pixel_unshuffle), where it keeps early steps of a cosine schedule from blowing up; off for VAE latents
    clip_sample: bool = MISSING
    clip_sample_range: float = MISSING
    # predicted maps only: make each cell's object class agree with the classification head (fuse_class_into_map)
    class_fused_maps: bool = MISSING
    # predicted maps only: sharpen them for conditioning, p ** (1 / T) renormalised per cell (1 = as predicted,
    # 0 = one-hot argmax)
    map_temperature: float = MISSING
    # regional models: weight of the ControlNet's residuals at sampling (diffusers' conditioning_scale; 1 = as
    # trained, > 1 follows the map more closely, 0 ignores it)
    controlnet_scale: float = MISSING

    def __post_init__(self) -> None:
        if self.map_temperature < 0:
            raise ValueError(
                f"ldm.sampling.map_temperature must be >= 0 (1 = the maps as predicted, 0 = one-hot); "
                f"got {self.map_temperature}."
            )
        if self.controlnet_scale < 0:
            raise ValueError(
                f"ldm.sampling.controlnet_scale must be >= 0 (1 = the ControlNet as trained); "
                f"got {self.controlnet_scale}."
            )


@dataclass
class LoraConfig:
    """LoRA adapters on the UNet (peft), with ``ldm.train.unet=lora``."""

    rank: int = MISSING
    alpha: int = MISSING
    dropout: float = MISSING
    target_modules: list[str] = MISSING


@dataclass
class TrainConfig:
    """``ldm.train``: what the finetune step trains, and the speed/memory options of training."""

    unet: UNetTraining = MISSING
    controlnet: bool = MISSING  # train the ControlNet (regional variants)
    lora: LoraConfig = MISSING
    gradient_checkpointing: bool = MISSING
    channels_last: bool = MISSING
    compile: bool = MISSING  # torch.compile the UNet and ControlNet forward passes
    fused_adamw: bool = MISSING  # fused AdamW kernel (CUDA only; ignored on CPU)
    # the VAE posterior (and CLIP image embedding) of every training image computed once and kept as an artifact
    latent_cache: bool = MISSING


@dataclass
class ClipLossConfig:
    """``ldm.clip_loss``: DreamDiffusion's alignment of the EEG context with the CLIP image embedding of the seen
    image (``1 - cos``), from a local transformers CLIP folder. ``weight: 0`` turns it off."""

    weight: float = MISSING
    pretrained: Optional[str] = MISSING


#: ``ldm`` keys added after models were saved, by dotted path under ``ldm``, with the value those older models used:
#: a saved ``pipeline.json`` without one loads with that value (:func:`with_added_ldm_keys`). Adding an ``ldm`` key is a
#: field in its dataclass here, its value in ``conf/ldm/global.yaml`` (every other option inherits it), and, so that
#: models saved before it keep loading, an entry here (``docs/extending.md``, "An ldm key").
LDM_KEYS_ADDED: dict[str, Any] = {"sampling.map_temperature": 1.0, "sampling.controlnet_scale": 1.0}
#: top-level ``ldm`` keys renamed after models were saved (old -> new): a saved ``pipeline.json`` with the old name loads
#: under the new one (:func:`with_added_ldm_keys`), and an override of the old name is refused with the new one
#: (:func:`compose_config`)
LDM_KEYS_RENAMED: dict[str, str] = {"scheduler": "noise_schedule"}


def with_added_ldm_keys(values: Any, under: str = "") -> dict[str, Any]:
    """A copy of a saved ``ldm`` config (or of its node at dotted path ``under``, e.g. ``sampling``) with every key of
    :data:`LDM_KEYS_ADDED` that it lacks set to the value models saved before that key used, and (the whole config)
    every old name of :data:`LDM_KEYS_RENAMED` renamed; a missing parent node is left missing (the schema then names
    it)."""
    out: dict[str, Any] = copy.deepcopy(dict(plain(values)))
    if not under:
        for old, new in LDM_KEYS_RENAMED.items():
            if old in out and new not in out:
                out[new] = out.pop(old)
    prefix = f"{under}." if under else ""
    for dotted, old_value in LDM_KEYS_ADDED.items():
        if not dotted.startswith(prefix):
            continue
        *parents, leaf = dotted[len(prefix) :].split(".")
        node: Any = out
        for name in parents:
            node = node.get(name) if isinstance(node, dict) else None
        if isinstance(node, dict) and leaf not in node:
            node[leaf] = old_value
    return out


@dataclass
class LDMConfig:
    """``ldm`` group: the denoiser's components, its training budget, noise schedule and sampler.

    ``unet``, ``conditioner``, ``latent`` (the latent codec), ``controlnet`` and ``adapter`` are ``_target_``
    components (:mod:`regionaldiff.components`). ``controlnet`` and ``train_maps`` are left out (None) by the
    global-only variants: a model has a region branch exactly when it has a ``controlnet``. ``adapter`` is set by the
    frozen-diffusion recipe alone (``ldm=frozen_*``, ``sd15_frozen_*``): the UNet reads an image embedding through
    it, the EEG enters only as the embedding the encoder's alignment head predicts, and ``conditioner`` is not built.
    """

    name: str = MISSING
    unet: Any = MISSING
    conditioner: Any = MISSING
    latent: Any = MISSING
    controlnet: Any = None
    # the frozen recipe's image-embedding adapter (regionaldiff.ldm.adapter); None: the seed's recipe (EEG codes
    # through the conditioner, the LDM fine-tuned on EEG), and what a model saved before the key existed loads with
    adapter: Any = None
    train_maps: Optional[TrainMaps] = None
    cond_drop_prob: float = MISSING
    null_condition: NullCondition = MISSING
    # side of the images the LDM is trained on and generates (null: the dataset's image_size); SD-1.5 uses 512
    image_size: Optional[int] = MISSING
    train: TrainConfig = MISSING
    clip_loss: ClipLossConfig = MISSING
    lr: float = MISSING
    weight_decay: float = MISSING
    max_epochs: int = MISSING
    batch_size: Optional[int] = MISSING
    noise_schedule: NoiseScheduleConfig = MISSING
    sampling: SamplingConfig = MISSING

    @property
    def regions(self) -> bool:
        """Whether the model conditions on region maps (it has a ControlNet)."""
        return self.controlnet is not None

    @property
    def frozen(self) -> bool:
        """Whether this is the frozen-diffusion recipe (an image-embedding adapter; nothing trains on EEG)."""
        return self.adapter is not None

    def __post_init__(self) -> None:
        _positive("ldm", lr=self.lr, max_epochs=self.max_epochs)
        if self.batch_size is not None:
            _positive("ldm", batch_size=self.batch_size)
        _fraction("ldm", cond_drop_prob=self.cond_drop_prob)
        _positive(
            "ldm.sampling",
            num_steps=self.sampling.num_steps,
            guidance_scale=self.sampling.guidance_scale,
            batch_size=self.sampling.batch_size,
            samples_per_eeg=self.sampling.samples_per_eeg,
        )
        if self.image_size is not None:
            _positive("ldm", image_size=self.image_size)
        lora = self.train.lora
        if self.train.unet == UNetTraining.lora:
            _positive("ldm.train.lora", rank=lora.rank, alpha=lora.alpha)
            _fraction("ldm.train.lora", dropout=lora.dropout)
            if not lora.target_modules:
                raise ValueError("ldm.train.lora.target_modules is empty: name the UNet layers to adapt (e.g. to_q).")
        if self.clip_loss.weight < 0:
            raise ValueError(f"ldm.clip_loss.weight must be >= 0 (0 turns it off); got {self.clip_loss.weight}.")
        if self.clip_loss.weight > 0 and not self.clip_loss.pretrained:
            raise ValueError("ldm.clip_loss.weight > 0 needs ldm.clip_loss.pretrained (a local CLIP folder).")
        if self.sampling.clip_sample and self.sampling.scheduler != Sampler.ddim:
            raise ValueError(
                f"ldm.sampling.clip_sample clips DDIM's predicted clean latents; ldm.sampling.scheduler="
                f"{self.sampling.scheduler.value} has no such step. Set ldm.sampling.clip_sample=false."
            )
        if self.sampling.scheduler == Sampler.pndm and self.noise_schedule.prediction_type == PredictionType.sample:
            raise ValueError(
                "ldm.sampling.scheduler=pndm (PLMS) supports epsilon and v_prediction models, not "
                "ldm.noise_schedule.prediction_type=sample; use ddim, dpmpp_2m, unipc or euler."
            )
        if self.frozen:
            if self.train.unet != UNetTraining.frozen:
                raise ValueError(
                    f"ldm={self.name} is the frozen recipe (ldm.adapter is set): nothing is trained on EEG, so "
                    f"ldm.train.unet must be frozen; got {self.train.unet.value}."
                )
            if self.null_condition != NullCondition.zeros or self.clip_loss.weight > 0:
                raise ValueError(
                    f"ldm={self.name} is the frozen recipe (ldm.adapter is set): its null condition is the zero "
                    "embedding and it has no EEG context to align, so set ldm.null_condition=zeros and "
                    "ldm.clip_loss.weight=0."
                )
            if self.regions and self.train_maps != TrainMaps.reference:
                raise ValueError(
                    f"ldm={self.name} trains its ControlNet on images and their true maps alone (no EEG): "
                    f"ldm.train_maps must be reference; got {self.train_maps.value if self.train_maps else None}."
                )
        if self.regions and self.train_maps is None:
            allowed = ", ".join(m.value for m in TrainMaps)
            raise ValueError(
                f"ldm={self.name} has a controlnet (region maps): set ldm.train_maps to one of {allowed}."
            )


@dataclass
class TrainerConfig:
    """``trainer`` group: where and how Lightning runs (shared by pretrain and finetune)."""

    accelerator: Accelerator = MISSING
    devices: int = MISSING
    num_nodes: int = MISSING
    strategy: str = MISSING
    precision: str = MISSING
    deterministic: bool = MISSING
    enable_progress_bar: bool = MISSING
    log_every_n_steps: int = MISSING
    num_threads: Optional[int] = MISSING
    limit_train_batches: Optional[int] = MISSING  # at most this many training batches per epoch (None: all)

    def __post_init__(self) -> None:
        _positive("trainer", devices=self.devices, num_nodes=self.num_nodes, log_every_n_steps=self.log_every_n_steps)
        if self.limit_train_batches is not None:
            _positive("trainer", limit_train_batches=self.limit_train_batches)
        if self.strategy.startswith("ddp") and self.accelerator == Accelerator.cpu and self.devices == 1:
            raise ConfigError(f"trainer.strategy={self.strategy} with one CPU device: use trainer.strategy=auto.")
        if self.precision not in PRECISIONS:
            raise ValueError(f"trainer.precision={self.precision!r} is not one of {list(PRECISIONS)}.")


# tracking stores MLflow can share between jobs (the file store is refused: it breaks under parallel jobs)
TRACKING_URI_SCHEMES = ("sqlite:", "http:", "https:", "postgresql", "mysql", "databricks")


def check_tracking_uri(uri: str, key: str = "logger.tracking_uri") -> None:
    """Raise a ValueError unless ``uri`` is a database or server URI (never the MLflow file store)."""
    if not uri.startswith(TRACKING_URI_SCHEMES):
        raise ValueError(
            f"{key}={uri!r}: use a database (sqlite:///path/mlflow.db) or a server URI "
            f"({', '.join(TRACKING_URI_SCHEMES)}); the MLflow file store is not supported."
        )


@dataclass
class LoggerConfig:
    """``logger`` group: MLflow tracking (sqlite by default; never the file store)."""

    enabled: bool = MISSING
    tracking_uri: Optional[str] = MISSING
    experiment_name: str = MISSING
    log_images: bool = MISSING

    def __post_init__(self) -> None:
        if self.tracking_uri:
            check_tracking_uri(self.tracking_uri)


@dataclass
class PipelineConfig:
    steps: list[Step] = MISSING
    test_maps: TestMaps = MISSING
    eval_split: EvalSplit = MISSING
    grid_size: int = MISSING

    def __post_init__(self) -> None:
        if not self.steps:
            raise ValueError(f"pipeline.steps is empty; choose from {[s.value for s in Step]}.")


# -- eval ---------------------------------------------------------------------------------------------------------------
def int_list(value: Any) -> list[int]:
    """An int or a list of ints (``eval.nway.k``, ``eval.retrieval.k``) as a list."""
    return [int(value)] if isinstance(value, numbers.Integral) else [int(v) for v in value]


@dataclass
class NWayConfig:
    """``eval.nway``: n-way top-k classification accuracy (Mind-vis / DreamDiffusion)."""

    n: int = MISSING
    k: Any = MISSING  # an int or a list of ints
    trials: int = MISSING
    seed: int = MISSING


@dataclass
class RetrievalConfig:
    """``eval.retrieval``: zero-shot retrieval top-k, and the repetition counts its curve averages (null: off)."""

    k: Any = MISSING  # an int or a list of ints
    repetitions: Any = MISSING  # null or a list of repetition counts


@dataclass
class EvalConfig:
    """``eval`` group: which metrics the evaluate step computes and their settings (``docs/metrics.md``); every value
    in ``conf/eval/default.yaml``, which the other options list first.

    ``eval.metrics`` names entries of the metric registry (:data:`regionaldiff.evaluation.registry.METRICS`) and
    ``eval.backbones`` slots of :data:`regionaldiff.evaluation.backbones.BACKBONE_DEFAULTS`: those two are checked
    against the tables, which sit above this module, by :func:`regionaldiff.evaluation.suite.check_eval` (from
    :func:`regionaldiff.validation.validate`). ``weights_dir`` and ``backbones`` are None in the settings a Python
    caller fills from ``conf/eval/default.yaml`` (:func:`regionaldiff.evaluation.suite.eval_config`): the weight paths
    derive from ``paths``, so those settings use the file's paths as they are written there.
    """

    metrics: list[str] = MISSING
    resolution: int = MISSING
    device: str = MISSING
    batch_size: int = MISSING
    seed: int = MISSING
    image_size: Optional[int] = MISSING
    pairwise_resolution: int = MISSING
    nway: NWayConfig = MISSING
    is_splits: int = MISSING
    retrieval: RetrievalConfig = MISSING
    allow_download: bool = MISSING
    weights_dir: Optional[str] = MISSING
    backbones: Optional[dict[str, Any]] = MISSING  # slot -> its settings
    generated_dir: Optional[str] = MISSING
    reference_dir: Optional[str] = MISSING

    @property
    def folder_pair(self) -> bool:
        """Whether it scores a folder of images against another (``generated_dir`` / ``reference_dir`` set)."""
        return bool(self.generated_dir or self.reference_dir)

    def __post_init__(self) -> None:
        if int(self.resolution) < 11:
            raise ConfigError(
                f"eval.resolution must be >= 11 pixels (the Gaussian SSIM window), got {self.resolution}."
            )
        nway = self.nway
        n, ks = int(nway.n), int_list(nway.k)
        if n < 2 or any(not 1 <= k <= n for k in ks) or int(nway.trials) < 1:
            raise ConfigError(
                f"eval.nway: need n >= 2, 1 <= k <= n and trials >= 1; got n={n}, k={ks}, trials={nway.trials}."
            )
        if any(k < 1 for k in int_list(self.retrieval.k)):
            raise ConfigError("eval.retrieval.k: values must be >= 1.")
        repetitions = self.retrieval.repetitions
        if repetitions is not None and any(n < 1 for n in int_list(repetitions)):
            raise ConfigError("eval.retrieval.repetitions: a list of repetition counts >= 1 (or null).")


# -- dataset: one schema per datamodule of conf/dataset -----------------------------------------------------------------
#: the choices the datasets' configs make (one home: the datamodules import them from here)
RESIZE_MODES = ("center_crop", "squash", "pad")
MISSING_POLICIES = ("fail", "skip")
BAD_TRIAL_POLICIES = ("fail", "drop")
VERIFY_MODES = ("quick", "full")
MONTAGES = ("things17", "things63", "biosemi128")
PROTOCOLS = ("zero_shot", "closed_set")
SOURCES = ("preprocessed", "raw")
REPETITIONS = ("average", "separate")
VAL_HOLDOUTS = ("concepts", "images")
RESAMPLE_METHODS = ("linear", "fft")
SPLIT_INDEX_BASES = ("filtered", "full")
#: classes the synthetic scenes draw (``data.synthetic.scenes.CLASS_STYLES``, which checks it has this many) and
#: concepts the synthetic attributes make (``data.synthetic.concepts``, likewise)
SYNTHETIC_MAX_CLASSES = 10
SYNTHETIC_MAX_CONCEPTS = 640

S = TypeVar("S")


def check_choice(key: str, value: Any, allowed: Sequence[Any]) -> Any:
    """``value`` if it is one of ``allowed``, else a ConfigError naming ``key``, the allowed values and ``value``."""
    if value not in allowed:
        raise ConfigError(f"{key} must be one of {list(allowed)}; got {value!r}.")
    return value


def check_multiple(n_times: int, multiple: int) -> int:
    """``n_times`` rounded down to a multiple of ``multiple`` (``dataset.n_times_multiple``, >= 1)."""
    if multiple < 1:
        raise ConfigError(f"dataset.n_times_multiple must be >= 1 (1 keeps every sample); got {multiple}.")
    kept = n_times - n_times % multiple
    if kept <= 0:
        raise ConfigError(f"Only {n_times} time samples remain, fewer than dataset.n_times_multiple={multiple}.")
    return kept


def check_loader(batch_size: int, num_workers: int, image_size: int) -> None:
    """The settings every datamodule takes (:class:`regionaldiff.data.base.EEGDataModule` calls this too, for a
    datamodule without a schema of its own)."""
    if batch_size < 1:
        raise ConfigError(f"dataset.batch_size must be >= 1; got {batch_size}.")
    if num_workers < 0:
        raise ConfigError(f"dataset.num_workers must be >= 0; got {num_workers}.")
    if image_size < 8:
        raise ConfigError(f"dataset.image_size must be >= 8 pixels; got {image_size}.")


def schema_from_arguments(schema: type[S], arguments: Mapping[str, Any]) -> S:
    """``schema`` built from a constructor's arguments (its ``locals()``; the ones the schema has no field for are left
    out): a datamodule built in Python is checked by the same ``__post_init__`` as its config."""
    names = {f.name for f in fields(schema)}  # type: ignore[arg-type]
    return schema(**{key: plain(value) for key, value in arguments.items() if key in names})


class DatasetConfig:
    """What every ``dataset`` schema has: the loader and image settings, checked by :func:`check_loader`.

    Each datamodule of ``conf/dataset`` has a dataclass schema of its own (its YAML lists ``- schema_<name>`` first);
    they declare these fields themselves, in their YAML's order (a field inherited from a base dataclass would come
    first, and move the key in every composed config). A dataset added without a schema is checked against its
    class's signature, and by :class:`~regionaldiff.data.base.EEGDataModule` when built (``docs/extending.md``).
    """

    if TYPE_CHECKING:
        _target_: str
        image_size: int
        region_labels: str
        batch_size: int
        num_workers: int
        cache_dir: Optional[str]

    def __post_init__(self) -> None:
        check_loader(self.batch_size, self.num_workers, self.image_size)


@dataclass
class SyntheticConfig(DatasetConfig):
    """``dataset=synthetic``: :class:`regionaldiff.data.synthetic.SyntheticDataModule`."""

    _target_: str = MISSING
    seed: int = MISSING
    n_classes: int = MISSING
    n_train: int = MISSING
    n_val: int = MISSING
    n_test: int = MISSING
    n_repetitions: int = MISSING
    average_repetitions: bool = MISSING
    snr: float = MISSING
    montage: str = MISSING
    sfreq: float = MISSING
    tmin: float = MISSING
    tmax: float = MISSING
    image_size: int = MISSING
    min_objects: int = MISSING
    max_objects: int = MISSING
    region_labels: str = MISSING
    batch_size: int = MISSING
    num_workers: int = MISSING
    cache_dir: Optional[str] = MISSING

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 2 <= self.n_classes <= SYNTHETIC_MAX_CLASSES:
            raise ConfigError(f"dataset.n_classes must be in [2, {SYNTHETIC_MAX_CLASSES}]; got {self.n_classes}.")
        for key in ("n_train", "n_val", "n_test", "n_repetitions"):
            if getattr(self, key) < 1:
                raise ConfigError(f"dataset.{key} must be >= 1; got {getattr(self, key)}.")
        if self.snr < 0:
            raise ConfigError(f"dataset.snr must be >= 0 (0 removes the signal); got {self.snr}.")
        check_choice("dataset.montage", self.montage, MONTAGES)
        if self.sfreq <= 0:
            raise ConfigError(f"dataset.sfreq must be > 0 Hz; got {self.sfreq}.")
        if not self.tmin < 0 < self.tmax:
            raise ConfigError(
                f"dataset.tmin and dataset.tmax must satisfy tmin < 0 < tmax (s, onset at 0); got {self.tmin}, "
                f"{self.tmax}."
            )
        if not 1 <= self.min_objects <= self.max_objects:
            raise ConfigError(
                "dataset.min_objects/max_objects must satisfy 1 <= min_objects <= max_objects; "
                f"got {self.min_objects}, {self.max_objects}."
            )


@dataclass
class ConceptWorldConfig(DatasetConfig):
    """``dataset=synthetic_things|synthetic_imagenet``: :class:`regionaldiff.data.synthetic.concept_world.
    ConceptWorldDataModule` (the realistic presets of the synthetic benchmark)."""

    _target_: str = MISSING
    seed: int = MISSING
    protocol: str = MISSING
    n_concepts: int = MISSING
    n_val_concepts: int = MISSING  # zero-shot only
    n_test_concepts: int = MISSING  # zero-shot only
    images_per_concept: int = MISSING
    val_images_per_concept: int = MISSING
    test_images_per_concept: int = MISSING
    n_repetitions: int = MISSING
    average_repetitions: bool = MISSING
    test_repetitions: int = MISSING
    snr: float = MISSING
    location_weight: float = MISSING
    category_weight: float = MISSING
    idiosyncratic: float = MISSING
    n_subjects: int = MISSING
    subject_jitter: float = MISSING
    subject_latency_jitter: float = MISSING  # s, SD of each subject's delay of its evoked responses
    subject_snr_spread: float = MISSING  # SD of the log of each subject's SNR factor
    subjects: Any = MISSING  # null (all) or the subjects (0-based, one or a list) whose trials make the splits
    test_subject: Optional[int] = MISSING
    max_clutter: int = MISSING
    montage: str = MISSING
    sfreq: float = MISSING
    tmin: float = MISSING
    tmax: float = MISSING
    image_size: int = MISSING
    region_labels: str = MISSING
    batch_size: int = MISSING
    num_workers: int = MISSING
    cache_dir: Optional[str] = MISSING

    @property
    def held_out_concepts(self) -> tuple[int, int]:
        """The validation and test concepts the protocol uses (none under ``closed_set``)."""
        if self.protocol == "zero_shot":
            return self.n_val_concepts, self.n_test_concepts
        return 0, 0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("dataset.protocol", self.protocol, PROTOCOLS)
        n_val_concepts, n_test_concepts = self.held_out_concepts
        positive = {
            key: getattr(self, key)
            for key in ("n_concepts", "images_per_concept", "val_images_per_concept", "test_images_per_concept",
                        "n_repetitions", "test_repetitions", "n_subjects")
        }  # fmt: skip
        if self.protocol == "zero_shot":
            positive.update(n_val_concepts=n_val_concepts, n_test_concepts=n_test_concepts)
        for key, value in positive.items():
            if value < 1:
                raise ConfigError(f"dataset.{key} must be >= 1; got {value}.")
        total = self.n_concepts + n_val_concepts + n_test_concepts
        if total > SYNTHETIC_MAX_CONCEPTS:
            raise ConfigError(
                f"dataset.n_concepts + n_val_concepts + n_test_concepts = {total} exceeds the "
                f"{SYNTHETIC_MAX_CONCEPTS} concepts the attributes make (regionaldiff.data.synthetic.concepts)."
            )
        for key in ("snr", "location_weight", "category_weight"):
            if getattr(self, key) < 0:
                raise ConfigError(f"dataset.{key} must be >= 0; got {getattr(self, key)}.")
        if not 0 <= self.idiosyncratic <= 1:
            raise ConfigError(f"dataset.idiosyncratic must be in [0, 1]; got {self.idiosyncratic}.")
        for key in ("subject_jitter", "subject_latency_jitter", "subject_snr_spread", "max_clutter"):
            if getattr(self, key) < 0:
                raise ConfigError(f"dataset.{key} must be >= 0; got {getattr(self, key)}.")
        n_subjects, test_subject = self.n_subjects, self.test_subject
        if test_subject is not None and not (n_subjects >= 2 and 0 <= test_subject < n_subjects):
            raise ConfigError(
                f"dataset.test_subject must be null (intra-subject) or a subject in [0, {n_subjects}) with "
                f"dataset.n_subjects >= 2 (inter-subject); got {test_subject} with {n_subjects} subjects."
            )
        if self.subjects is not None:
            chosen = subject_list(self.subjects)
            if not chosen or len(set(chosen)) != len(chosen) or not all(0 <= s < n_subjects for s in chosen):
                raise ConfigError(
                    f"dataset.subjects must be null (all) or distinct subjects in [0, {n_subjects}) "
                    f"(dataset.n_subjects={n_subjects}); got {plain(self.subjects)}."
                )
            if test_subject is not None and (test_subject not in chosen or len(chosen) < 2):
                raise ConfigError(
                    f"dataset.test_subject={test_subject} must be one of dataset.subjects={chosen}, with at least one "
                    "other subject to train on."
                )
        check_choice("dataset.montage", self.montage, MONTAGES)
        if self.sfreq <= 0 or not self.tmin < 0 < self.tmax:
            raise ConfigError(
                f"dataset.sfreq must be > 0 and tmin < 0 < tmax (s, onset at 0); got {self.sfreq}, {self.tmin}, "
                f"{self.tmax}."
            )


def _check_files(config: Any) -> None:
    """The image and trial policies and the cache check, as both real datasets state them."""
    check_choice("dataset.on_missing_image", config.on_missing_image, MISSING_POLICIES)
    check_choice("dataset.on_bad_trial", config.on_bad_trial, BAD_TRIAL_POLICIES)
    check_choice("dataset.image_resize", config.image_resize, RESIZE_MODES)
    check_choice("dataset.cache_verify", config.cache_verify, VERIFY_MODES)


@dataclass
class EEGImageNetConfig(DatasetConfig):
    """``dataset=eeg_imagenet``: :class:`regionaldiff.data.eeg_imagenet.EEGImageNetDataModule`."""

    _target_: str = MISSING
    root: str = MISSING
    eeg_file: str = MISSING
    split_file: str = MISSING
    split_num: int = MISSING
    split_index_base: str = MISSING
    images_dir: str = MISSING
    subject: int = MISSING
    min_length: int = MISSING
    max_length: int = MISSING
    crop: Any = MISSING  # [start, stop)
    resample: Optional[int] = MISSING
    resample_method: str = MISSING
    l_freq: Optional[float] = MISSING
    h_freq: Optional[float] = MISSING
    sfreq: float = MISSING
    n_times_multiple: int = MISSING
    on_missing_image: str = MISSING
    on_bad_trial: str = MISSING
    image_size: int = MISSING
    image_resize: str = MISSING
    region_labels: str = MISSING
    batch_size: int = MISSING
    num_workers: int = MISSING
    cache_dir: Optional[str] = MISSING
    cache_verify: str = MISSING

    def __post_init__(self) -> None:
        super().__post_init__()
        crop = self.crop
        if crop is None or len(crop) != 2 or not 0 <= int(crop[0]) < int(crop[1]):
            raise ConfigError(f"dataset.crop must be [start, stop] with 0 <= start < stop; got {crop!r}.")
        if not 0 < self.min_length <= self.max_length:
            raise ConfigError(
                f"dataset.min_length/max_length must satisfy 0 < min <= max; got {self.min_length}, {self.max_length}."
            )
        if self.resample is not None and int(self.resample) < 2:
            raise ConfigError(f"dataset.resample must be null or >= 2 samples; got {self.resample}.")
        if self.sfreq <= 0:
            raise ConfigError(f"dataset.sfreq must be > 0 (Hz); got {self.sfreq}.")
        if self.split_num < 0:
            raise ConfigError(f"dataset.split_num must be >= 0; got {self.split_num}.")
        if self.subject < 0:
            raise ConfigError(f"dataset.subject must be 0 (all) or a subject number; got {self.subject}.")
        for key in ("l_freq", "h_freq"):
            value = getattr(self, key)
            if value is not None and value <= 0:
                raise ConfigError(f"dataset.{key} must be null or > 0 Hz; got {value}.")
        check_choice("dataset.resample_method", self.resample_method, RESAMPLE_METHODS)
        check_choice("dataset.split_index_base", self.split_index_base, SPLIT_INDEX_BASES)
        _check_files(self)
        kept = int(crop[1]) - int(crop[0]) if self.resample is None else int(self.resample)
        check_multiple(kept, self.n_times_multiple)


def subject_list(subjects: Any) -> list[int]:
    """``dataset.subjects`` (one number or a list) as a list of ints."""
    subjects = plain(subjects)
    if isinstance(subjects, numbers.Integral):
        return [int(subjects)]
    return [int(s) for s in subjects]


@dataclass
class ThingsEEG2Config(DatasetConfig):
    """``dataset=things_eeg2``: :class:`regionaldiff.data.things_eeg2.ThingsEEG2DataModule`. ``raw`` (used with
    ``source=raw``) is checked by :class:`regionaldiff.data.mvnn.RawConfig` when the datamodule is built."""

    _target_: str = MISSING
    root: str = MISSING
    source: str = MISSING
    eeg_dir: str = MISSING
    raw_dir: str = MISSING
    image_dir: str = MISSING
    subjects: Any = MISSING  # one subject number or a list
    leave_out_subject: Optional[int] = MISSING
    train_repetitions: str = MISSING
    test_repetitions: str = MISSING
    val_holdout: str = MISSING
    val_fraction: float = MISSING
    val_seed: int = MISSING
    channels: Any = MISSING  # null (every channel) or a list of names
    tmin: Optional[float] = MISSING
    tmax: Optional[float] = MISSING
    n_times_multiple: int = MISSING
    raw: Any = MISSING
    on_missing_image: str = MISSING
    on_bad_trial: str = MISSING
    image_size: int = MISSING
    region_labels: str = MISSING
    image_resize: str = MISSING
    batch_size: int = MISSING
    num_workers: int = MISSING
    cache_dir: Optional[str] = MISSING
    cache_verify: str = MISSING

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("dataset.source", self.source, SOURCES)
        check_choice("dataset.train_repetitions", self.train_repetitions, REPETITIONS)
        check_choice("dataset.test_repetitions", self.test_repetitions, REPETITIONS)
        check_choice("dataset.val_holdout", self.val_holdout, VAL_HOLDOUTS)
        _check_files(self)
        subjects = subject_list(self.subjects)
        if not subjects or len(set(subjects)) != len(subjects) or min(subjects) < 1:
            raise ConfigError(f"dataset.subjects must be distinct subject numbers >= 1; got {subjects}.")
        leave_out = self.leave_out_subject
        if leave_out is not None and (leave_out not in subjects or len(subjects) < 2):
            raise ConfigError(
                f"dataset.leave_out_subject={leave_out} must be one of dataset.subjects={subjects}, "
                "with at least one other subject to train on."
            )
        if not 0.0 < self.val_fraction < 1.0:
            raise ConfigError(f"dataset.val_fraction must be in (0, 1); got {self.val_fraction}.")
        if self.tmin is not None and self.tmax is not None and self.tmin >= self.tmax:
            raise ConfigError(f"dataset.tmin must be < dataset.tmax; got {self.tmin}, {self.tmax}.")
        check_multiple(max(self.n_times_multiple, 1), self.n_times_multiple)


#: the ``dataset`` schemas, by the name each YAML of ``conf/dataset`` lists first (``- schema_<name>``)
DATASET_SCHEMAS: dict[str, type] = {
    "schema_synthetic": SyntheticConfig,
    "schema_concept_world": ConceptWorldConfig,
    "schema_eeg_imagenet": EEGImageNetConfig,
    "schema_things_eeg2": ThingsEEG2Config,
}


# -- regionmap: one schema per generator of conf/regionmap --------------------------------------------------------------
#: the choices the region-map configs make (one home: the generators import them from here)
REGIONMAP_MODES = ("semantic", "instance")
SUPERPIXEL_METHODS = ("slic", "felzenszwalb")


def _in_unit_interval(owner: str, config: Any, *keys: str) -> None:
    """Each of ``config``'s ``keys`` lies in [0, 1], else a ConfigError naming ``owner.key``."""
    for key in keys:
        if not 0.0 <= getattr(config, key) <= 1.0:
            raise ConfigError(f"{owner}.{key} must be in [0, 1]; got {getattr(config, key)}.")


def _at_least(owner: str, minimum: int, config: Any, *keys: str) -> None:
    """Each of ``config``'s ``keys`` is at least ``minimum``, else a ConfigError naming ``owner.key``."""
    for key in keys:
        if getattr(config, key) < minimum:
            raise ConfigError(f"{owner}.{key} must be >= {minimum}; got {getattr(config, key)}.")


@dataclass
class RuleConfig:
    """``regionmap.rule`` (``conf/regionmap/rule``): the semantic rule of the proposal generators (``slic``, ``sam``),
    :class:`regionaldiff.maps.semantic.SemanticRule`, which runs this check on its own values too."""

    min_area: float = MISSING
    max_area: float = MISSING
    min_quality: float = MISSING
    max_border: float = MISSING
    center_weight: float = MISSING
    center_sigma: float = MISSING
    border_clusters: int = MISSING
    keep_ratio: float = MISSING
    min_saliency: float = MISSING
    min_keep: int = MISSING
    max_regions: int = MISSING
    largest_component: bool = MISSING

    def __post_init__(self) -> None:
        fractions = (
            "min_area",
            "max_area",
            "min_quality",
            "max_border",
            "center_weight",
            "keep_ratio",
            "min_saliency",
        )
        _in_unit_interval("regionmap.rule", self, *fractions)
        if self.min_area >= self.max_area:
            raise ConfigError(
                f"regionmap.rule.min_area ({self.min_area}) must be below regionmap.rule.max_area ({self.max_area})."
            )
        if self.center_sigma <= 0:
            raise ConfigError(f"regionmap.rule.center_sigma must be > 0; got {self.center_sigma}.")
        _at_least("regionmap.rule", 1, self, "border_clusters")
        _at_least("regionmap.rule", 0, self, "min_keep", "max_regions")


class RegionMapConfig:
    """What every ``regionmap`` schema has: the generator's ``_target_``.

    Each generator of ``conf/regionmap`` has a dataclass schema of its own (its YAML lists ``- schema_<name>``
    first), with its fields in the YAML's order; a generator built in Python runs the same check on its arguments
    (:func:`schema_from_arguments`). A generator added without a schema is checked against its class's signature.
    """

    if TYPE_CHECKING:
        _target_: str


@dataclass
class NoRegionMapConfig(RegionMapConfig):
    """``regionmap=none``: :class:`regionaldiff.maps.base.NoRegionMap` (no settings)."""

    _target_: str = MISSING


@dataclass
class OracleRegionMapConfig(RegionMapConfig):
    """``regionmap=oracle``: :class:`regionaldiff.maps.base.OracleRegionMap` (no settings)."""

    _target_: str = MISSING


@dataclass
class SuperpixelRegionMapConfig(RegionMapConfig):
    """``regionmap=slic``: :class:`regionaldiff.maps.slic.SuperpixelRegionMap`."""

    _target_: str = MISSING
    method: str = MISSING
    sigma: float = MISSING
    scale: float = MISSING
    min_size: int = MISSING
    n_segments: int = MISSING
    compactness: float = MISSING
    mode: str = MISSING
    rule: RuleConfig = MISSING

    def __post_init__(self) -> None:
        check_choice("regionmap.method", self.method, SUPERPIXEL_METHODS)
        _at_least("regionmap", 2, self, "n_segments")
        for key in ("compactness", "scale"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"regionmap.{key} must be > 0; got {getattr(self, key)}.")
        if self.sigma < 0:
            raise ConfigError(f"regionmap.sigma must be >= 0; got {self.sigma}.")
        _at_least("regionmap", 1, self, "min_size")
        check_choice("regionmap.mode", self.mode, REGIONMAP_MODES)


@dataclass
class SamRegionMapConfig(RegionMapConfig):
    """``regionmap=sam``: :class:`regionaldiff.maps.sam.SamRegionMap` (its checkpoint and model type are checked
    against each other when the generator is built, and by ``regionaldiff check``)."""

    _target_: str = MISSING
    checkpoint: str = MISSING
    model_type: str = MISSING
    device: str = MISSING
    batch_size: int = MISSING
    points_per_side: int = MISSING
    points_per_batch: int = MISSING
    pred_iou_thresh: float = MISSING
    stability_score_thresh: float = MISSING
    box_nms_thresh: float = MISSING
    crop_n_layers: int = MISSING
    min_mask_region_area: int = MISSING
    mode: str = MISSING
    rule: RuleConfig = MISSING

    def __post_init__(self) -> None:
        _at_least("regionmap", 1, self, "batch_size", "points_per_side", "points_per_batch")
        _in_unit_interval("regionmap", self, "pred_iou_thresh", "stability_score_thresh", "box_nms_thresh")
        if self.crop_n_layers < 0 or self.min_mask_region_area < 0:
            raise ConfigError(
                "regionmap.crop_n_layers and regionmap.min_mask_region_area must be >= 0; "
                f"got {self.crop_n_layers}, {self.min_mask_region_area}."
            )
        if self.min_mask_region_area > 0:
            try:
                import cv2  # noqa: F401
            except ImportError as err:
                raise ConfigError(
                    "regionmap.min_mask_region_area > 0 needs opencv (pip install opencv-python-headless); "
                    "or set it to 0."
                ) from err
        check_choice("regionmap.mode", self.mode, REGIONMAP_MODES)


#: the ``regionmap`` schemas, by the name each YAML of ``conf/regionmap`` lists first (``- schema_<name>``)
REGIONMAP_SCHEMAS: dict[str, type] = {
    "schema_none": NoRegionMapConfig,
    "schema_oracle": OracleRegionMapConfig,
    "schema_slic": SuperpixelRegionMapConfig,
    "schema_sam": SamRegionMapConfig,
}


@dataclass(frozen=True)
class TypedConfig:
    """The checked config of a run, every group of it (what :func:`regionaldiff.validation.validate` returns): the
    layers below take this and check nothing again.

    ``encoder``, ``ldm``, ``trainer``, ``logger``, ``pipeline`` and ``eval`` are their schemas' dataclasses
    (:data:`SCHEMAS`). ``dataset`` and ``regionmap`` are their option's schema (:data:`DATASET_SCHEMAS`,
    :data:`REGIONMAP_SCHEMAS`; an option added without one: its plain node, checked against the signature of the
    class its ``_target_`` names). ``produces_maps`` says whether the regionmap class gives region maps
    (``regionmap=none`` does not).
    """

    encoder: EncoderConfig
    ldm: LDMConfig
    trainer: TrainerConfig
    logger: LoggerConfig
    pipeline: PipelineConfig
    eval: EvalConfig
    dataset: DatasetConfig | Mapping[str, Any] = field(default_factory=dict)
    regionmap: RegionMapConfig | Mapping[str, Any] = field(default_factory=dict)
    produces_maps: bool = True


SCHEMAS: dict[str, type] = {
    "encoder": EncoderConfig,
    "ldm": LDMConfig,
    "trainer": TrainerConfig,
    "logger": LoggerConfig,
    "pipeline": PipelineConfig,
    "eval": EvalConfig,
}


def is_schema(option: str) -> bool:
    """Whether a group's entry is a schema (``schema``, or ``schema_<name>`` where a group's options differ in their
    fields, as ``dataset``'s do): the typed base a YAML lists first, not an option a user picks."""
    return option == "schema" or option.startswith("schema_")


def register_configs() -> None:
    """Register the schemas in Hydra's ConfigStore and the ``${cwd:}`` resolver (idempotent).

    ``paths.root_dir`` is ``${cwd:}``, the folder ``regionaldiff`` runs in: ``${hydra:runtime.cwd}`` cannot be
    used there, because a multirun resolves ``hydra.sweep.dir`` (which derives from it) before Hydra's runtime
    config exists.
    """
    OmegaConf.register_new_resolver("cwd", os.getcwd, replace=True)
    cs = ConfigStore.instance()
    for group, node in SCHEMAS.items():
        cs.store(group=group, name="schema", node=node)
    for name, node in DATASET_SCHEMAS.items():
        cs.store(group="dataset", name=name, node=node)
    for name, node in REGIONMAP_SCHEMAS.items():
        cs.store(group="regionmap", name=name, node=node)


def check_renamed_keys(overrides: list[str]) -> None:
    """Refuse an override of a renamed key (:data:`LDM_KEYS_RENAMED`) with one line that names the new key."""
    for override in overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        for old, new in LDM_KEYS_RENAMED.items():
            if key == f"ldm.{old}" or key.startswith(f"ldm.{old}."):
                renamed = f"ldm.{new}{key[len(f'ldm.{old}') :]}"
                raise ConfigError(f"{key}: ldm.{old} was renamed ldm.{new}; use {renamed} (override {override!r}).")


def compose_config(overrides: list[str]) -> DictConfig:
    """The config ``regionaldiff OVERRIDES`` would run (Hydra's compose API); user errors for bad overrides."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    check_renamed_keys(overrides)
    register_configs()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            return compose("config", overrides=overrides)
    except (HydraException, OmegaConfBaseException) as err:
        raise compose_error(err) from err
    finally:
        GlobalHydra.instance().clear()


def compose_error(err: Exception) -> ConfigError:
    """Hydra's error for an override or config that does not compose, as one line (its cause included, its listing
    of the config search path and the schemas among a group's available options left out)."""
    from omegaconf.errors import OmegaConfBaseException

    text = str(err)
    if isinstance(err.__cause__, OmegaConfBaseException):
        text += " " + str(err.__cause__)
    lines = text.split("Config search path:")[0].splitlines()
    return ConfigError(one_line("\n".join(line for line in lines if not is_schema(line.strip()))))
