"""Components built from ``_target_`` config nodes: the EEG encoder, the latent codec and the LDM's parts.

Each component is a config node with a ``_target_`` (a class or factory) and its own arguments; what only the
data or another component knows (the EEG's channel count, the latent channels, the encoder's code length) is
added here at build time, as lightning-hydra-template does for ``model.net``:

==================  =======================================  ==========================================
node                built by                                 arguments added at build time
==================  =======================================  ==========================================
``encoder.net``     :func:`build_encoder`                    ``n_chans, n_times, sfreq, num_classes,
                                                             num_region_labels, align_dim``
``encoder.align``   :func:`build_image_embedder`             (none: its ``image_embedder`` node)
``encoder.augment``  :func:`build_augmentations`             (none: one node per augmentation)
``ldm.latent``      :func:`build_codec`                      (none)
``ldm.unet``        :func:`build_ldm`                        ``in_channels, latent_size``
``ldm.conditioner``  :func:`build_ldm`                       ``code_len, code_dim, num_classes,
                                                             cross_attention_dim``
``ldm.controlnet``  :func:`build_ldm` (regional variants)    ``unet, conditioning_channels,
                                                             image_size, latent_size``
``ldm.adapter``     :func:`build_ldm` (frozen recipe)        ``unet, embedding_dim``
==================  =======================================  ==========================================

:func:`check_components` runs before any work (from :func:`regionaldiff.validation.validate`): each ``_target_``
must import, its arguments must be ones the target takes, and a target with a ``check_config`` classmethod
checks their values (a bad ``encoder.net.mask_ratio`` fails at once, not after the dataset cache is built).
A new component is one module (the class) plus one YAML (the node): nothing here changes.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import hydra
from hydra.errors import InstantiationException

from regionaldiff.errors import ConfigError

if TYPE_CHECKING:
    from diffusers import DDPMScheduler
    from torch.nn import Module

    from regionaldiff.config import LDMConfig, TypedConfig
    from regionaldiff.encoder.alignment import ImageEmbedder
    from regionaldiff.encoder.base import EEGEncoder
    from regionaldiff.ldm.latent import LatentCodec
    from regionaldiff.ldm.model import RegionalLDM

# keys of a node that Hydra reads itself
HYDRA_KEYS = frozenset({"_target_", "_convert_", "_recursive_", "_partial_", "_args_"})

# the arguments each component gets from the data or from other components (never from its YAML)
RUNTIME_ARGS: dict[str, frozenset[str]] = {
    "encoder.net": frozenset({"n_chans", "n_times", "sfreq", "num_classes", "num_region_labels", "align_dim"}),
    "encoder.align.image_embedder": frozenset(),
    "ldm.latent": frozenset(),
    "ldm.unet": frozenset({"in_channels", "latent_size"}),
    "ldm.conditioner": frozenset({"code_len", "code_dim", "num_classes", "cross_attention_dim"}),
    "ldm.controlnet": frozenset({"unet", "conditioning_channels", "image_size", "latent_size"}),
    "ldm.adapter": frozenset({"unet", "embedding_dim"}),
}


def node_args(node: Mapping[str, Any]) -> dict[str, Any]:
    """The component's own arguments: the node without Hydra's keys."""
    return {k: v for k, v in node.items() if k not in HYDRA_KEYS}


def resolve_target(node: Any, key: str) -> Callable[..., Any]:
    """The class or function a ``_target_`` node names; a ConfigError naming ``key`` if it cannot be imported."""
    if not isinstance(node, Mapping) or "_target_" not in node:
        raise ConfigError(f"{key} must be a component node with a `_target_` (a class or function to build).")
    target = node["_target_"]
    try:
        obj = hydra.utils.get_object(str(target))
    except Exception as err:  # noqa: BLE001 - any import failure means: the config names no usable target
        raise ConfigError(f"{key}._target_={target!r} cannot be imported: {err}") from err
    if not callable(obj):
        raise ConfigError(f"{key}._target_={target!r} is not a class or function.")
    return obj


def check_component(node: Any, key: str) -> None:
    """Check a component node before any work: importable ``_target_``, known arguments, values it accepts.

    Raises
    ------
    ConfigError
        Naming ``key`` and the argument at fault (a ``ValueError``).
    """
    target = resolve_target(node, key)
    args = node_args(node)
    runtime = RUNTIME_ARGS.get(key, frozenset())
    given_by_data = sorted(set(args) & runtime)
    if given_by_data:
        raise ConfigError(
            f"{key}.{given_by_data[0]} is set from the data or the other components at build time; "
            f"remove it from the config (these are: {', '.join(sorted(runtime))})."
        )
    params = inspect.signature(target).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    if not takes_any:
        unknown = sorted(set(args) - set(params))
        if unknown:
            allowed = sorted(set(params) - runtime - {"self"})
            takes = ", ".join(allowed) or "no arguments"
            raise ConfigError(f"{key}.{unknown[0]} is not an argument of {node['_target_']}; it takes: {takes}.")
    missing = [
        name
        for name, p in params.items()
        if p.default is inspect.Parameter.empty
        and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        and name not in args
        and name not in runtime
    ]
    if missing:
        raise ConfigError(f"{key} needs {', '.join(missing)} (arguments of {node['_target_']} without a default).")
    check_config = getattr(target, "check_config", None)
    if callable(check_config):
        check_config(key, **args)


def check_components(typed: TypedConfig) -> None:
    """:func:`check_component` for every component node of the encoder and LDM groups."""
    nodes = {
        "encoder.net": typed.encoder.net,
        "ldm.latent": typed.ldm.latent,
        "ldm.unet": typed.ldm.unet,
    }
    if typed.ldm.adapter is not None:  # the frozen recipe: the adapter replaces the EEG conditioner (not built)
        nodes["ldm.adapter"] = typed.ldm.adapter
    else:
        nodes["ldm.conditioner"] = typed.ldm.conditioner
    if typed.encoder.align is not None:
        nodes["encoder.align.image_embedder"] = typed.encoder.align.image_embedder
    for name, node in (typed.encoder.augment or {}).items():
        nodes[f"encoder.augment.{name}"] = node
    if typed.ldm.controlnet is not None:
        nodes["ldm.controlnet"] = typed.ldm.controlnet
    for key, node in nodes.items():
        check_component(node, key)


def instantiate(node: Mapping[str, Any], key: str, **runtime: Any) -> Any:
    """Build a component: Hydra's ``instantiate`` of ``node`` as a partial (plain Python containers, not
    OmegaConf's), called with the build-time arguments ``runtime``. The constructor's own errors propagate."""
    try:
        factory = hydra.utils.instantiate(dict(node), _partial_=True, _convert_="all")
    except InstantiationException as err:
        raise ConfigError(f"{key}: {err}") from err
    return factory(**runtime)


def build_encoder(
    net: Mapping[str, Any],
    *,
    n_chans: int,
    n_times: int,
    sfreq: float,
    num_classes: int,
    with_regions: bool = True,
    num_region_labels: int = 0,
    align_dim: int = 0,
    subject_layer: str = "none",
    subject_ids: Sequence[int] = (),
) -> EEGEncoder:
    """The EEG encoder from ``encoder.net`` and the data's sizes (no region head when ``with_regions`` is False:
    the dataset has no region maps to train it on; ``num_region_labels`` 0 = ``num_classes + 1``; an alignment head
    onto an image embedding of width ``align_dim`` when it is > 0), with the subject conditioning ``subject_layer``
    (``encoder.subject_layer``) for the data's subject numbers ``subject_ids``
    (:meth:`~regionaldiff.encoder.base.EEGEncoder.set_subject_layer`)."""
    from regionaldiff.encoder.base import check_encoder

    extra: dict[str, Any] = {} if with_regions else {"region_grid": 0}
    encoder = instantiate(
        net,
        "encoder.net",
        n_chans=n_chans,
        n_times=n_times,
        sfreq=sfreq,
        num_classes=num_classes,
        num_region_labels=num_region_labels,
        align_dim=align_dim,
        **extra,
    )
    return check_encoder(encoder).set_subject_layer(str(subject_layer), subject_ids)


def build_augmentations(nodes: Mapping[str, Any] | None) -> list[Module]:
    """The EEG augmentations of ``encoder.augment`` (name -> ``_target_`` node), in their order: modules that take a
    batch ``[B, C, T]`` and return it transformed (braindecode.augmentation's transforms, called without labels)."""
    return [instantiate(node, f"encoder.augment.{name}") for name, node in (nodes or {}).items()]


def build_image_embedder(node: Mapping[str, Any]) -> ImageEmbedder:
    """The frozen image embedder from ``encoder.align.image_embedder`` (e.g. CLIP from a local folder)."""
    return instantiate(node, "encoder.align.image_embedder")


def build_codec(node: Mapping[str, Any]) -> LatentCodec:
    """The latent codec from ``ldm.latent`` (e.g. the invertible pixel-unshuffle, or a diffusers VAE)."""
    return instantiate(node, "ldm.latent")


def build_noise_scheduler(cfg: LDMConfig) -> DDPMScheduler:
    """The training noise schedule from ``ldm.noise_schedule``."""
    from diffusers import DDPMScheduler

    sched = cfg.noise_schedule
    return DDPMScheduler(
        num_train_timesteps=int(sched.num_train_timesteps),
        beta_schedule=str(sched.beta_schedule.value),
        prediction_type=str(sched.prediction_type.value),
        clip_sample=False,
    )


def build_ldm(
    cfg: LDMConfig,
    *,
    latent_channels: int,
    code_len: int,
    code_dim: int,
    num_classes: int,
    image_size: int,
    latent_size: int,
    num_region_labels: int = 0,
    embedding_dim: int = 0,
    prior: Mapping[str, Any] | None = None,
) -> RegionalLDM:
    """The LDM from the ``ldm`` group: its UNet, EEG conditioner and (regional variants) ControlNet, built in
    that order from their ``_target_`` nodes, with the sizes of the data, latent space and encoder (the ControlNet
    reads ``num_region_labels`` map channels; 0 = ``num_classes + 1``).

    The frozen recipe (``ldm.adapter`` set) builds no conditioner: its adapter reads ``embedding_dim``-wide image
    embeddings (the encoder's ``align_dim``) and is built after the ControlNet (IP-Adapter changes the UNet's
    attention, which the ControlNet must not copy); ``prior`` (the state dict of a trained UNet and adapter,
    :mod:`regionaldiff.steps.frozen`) is loaded into the UNet before the ControlNet copies it, and into the adapter."""
    import torch

    from regionaldiff.config import NullCondition, UNetTraining
    from regionaldiff.ldm.model import RegionalLDM
    from regionaldiff.ldm.trainable import add_lora, set_trainable

    unet = instantiate(cfg.unet, "ldm.unet", in_channels=latent_channels, latent_size=latent_size)
    if prior is not None:
        unet.load_state_dict({k.removeprefix("unet."): v for k, v in prior.items() if k.startswith("unet.")})
    conditioner = None
    if cfg.adapter is None:
        conditioner = instantiate(
            cfg.conditioner,
            "ldm.conditioner",
            code_len=code_len,
            code_dim=code_dim,
            num_classes=num_classes,
            cross_attention_dim=int(unet.config["cross_attention_dim"]),
        )
    controlnet = None
    if cfg.controlnet is not None:
        controlnet = instantiate(
            cfg.controlnet,
            "ldm.controlnet",
            unet=unet,
            conditioning_channels=num_region_labels or num_classes + 1,
            image_size=image_size,
            latent_size=latent_size,
        )
    adapter = None
    if cfg.adapter is not None:
        adapter = instantiate(cfg.adapter, "ldm.adapter", unet=unet, embedding_dim=embedding_dim)
        if prior is not None:
            adapter.load_state_dict(
                {k.removeprefix("adapter."): v for k, v in prior.items() if k.startswith("adapter.")}
            )
        adapter.requires_grad_(False)
    null_context = None
    if cfg.null_condition == NullCondition.learned and conditioner is not None:
        # starts as the zero context (the unconditional input of an untrained model); condition dropout trains it
        null_context = torch.nn.Parameter(
            torch.zeros(int(conditioner.n_tokens), int(unet.config["cross_attention_dim"]))
        )
    if cfg.train.unet == UNetTraining.lora:
        add_lora(unet, cfg.train.lora)  # after the ControlNet copied the UNet's plain weights
    set_trainable(unet, controlnet, cfg.train)
    return RegionalLDM(
        unet,
        conditioner,
        controlnet,
        build_noise_scheduler(cfg),
        image_size,
        float(cfg.cond_drop_prob),
        null_context,
        adapter,
    )
