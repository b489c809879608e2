"""The one checker: a composed config in, the checked and typed config of the run out (:func:`validate`).

Every check a config gets before any work is here or called from here, once per run, in this order:

1. each schema group (``encoder``, ``ldm``, ``trainer``, ``logger``, ``pipeline``) becomes its dataclass, whose
   ``__post_init__`` makes the range checks (:mod:`regionaldiff.config`);
2. each ``_target_`` component of ``encoder`` and ``ldm``: it imports, its arguments are ones it takes, and its
   ``check_config`` accepts their values (:func:`regionaldiff.components.check_components`);
3. ``eval``: known metrics and settings, filled from ``conf/eval/default.yaml``
   (:func:`regionaldiff.evaluation.suite.validate_eval_config`);
4. ``dataset`` and ``regionmap``: their ``_target_`` imports and their arguments match its signature; a ``dataset``
   whose YAML lists its schema (``- schema_<name>``, every shipped one) becomes that dataclass, whose
   ``__post_init__`` makes the range and choice checks (the datamodule built in Python runs the same one), and its
   ``region_labels`` is parsed (:meth:`regionaldiff.regions.RegionLabels.parse`);
5. across groups: a region-conditioned LDM needs region maps and a trained region head
   (:func:`check_region_settings`); the frozen-diffusion recipe needs the encoder's alignment head
   (:func:`check_frozen_settings`).

The result, :class:`~regionaldiff.config.TypedConfig`, is what the runner, the preflight and the steps take; none of
them checks the config again. The entry point calls :func:`validate` once per run (a sweep: once per job, before the
first starts). It sits above :mod:`regionaldiff.config` (the schemas) and :mod:`regionaldiff.components` (the
builders), so neither of those imports the other's caller.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from regionaldiff.components import check_component, check_components, resolve_target
from regionaldiff.config import DATASET_SCHEMAS, SCHEMAS, TypedConfig, plain
from regionaldiff.errors import ConfigError
from regionaldiff.regions import RegionLabels

__all__ = ["check_frozen_settings", "check_region_settings", "validate"]

#: the groups whose ``_target_`` class is their schema (built by the runner, checked here against the signature)
TARGET_GROUPS = ("dataset", "regionmap")


def check_region_settings(typed: TypedConfig, produces_maps: bool) -> None:
    """An LDM that conditions on region maps needs a region-map generator and a trained region head."""
    if typed.ldm.regions and not produces_maps:
        raise ConfigError(
            f"ldm={typed.ldm.name} conditions on region maps, but regionmap=none gives none. "
            "Use a global variant (ldm=global) or a region-map generator (regionmap=oracle|slic|sam)."
        )
    if typed.ldm.regions and typed.encoder.w_region == 0:
        raise ConfigError(
            f"ldm={typed.ldm.name} conditions on region maps predicted from EEG, but encoder.w_region=0 leaves the "
            "region head untrained. Set encoder.w_region > 0, or use a global variant (ldm=global)."
        )


def check_frozen_settings(typed: TypedConfig) -> None:
    """The frozen-diffusion recipe (``ldm.adapter`` set) generates from the image embedding the encoder's alignment
    head predicts: the encoder must have one."""
    if typed.ldm.frozen and typed.encoder.align is None:
        raise ConfigError(
            f"ldm={typed.ldm.name} generates from the image embedding the encoder's alignment head predicts, but "
            "encoder.align is null: set encoder/align=pixels (synthetic worlds), encoder/align=clip (real images) or "
            "encoder/align=ip_adapter (ldm=sd15_frozen_*), or use the seed's recipe (ldm=global|regional)."
        )


def _as_config_error(check: Any, *args: Any) -> Any:
    """``check(*args)``; a plain ``ValueError`` (a schema's or a component's own check) as a ConfigError."""
    try:
        return check(*args)
    except ConfigError:
        raise
    except ValueError as err:
        raise ConfigError(str(err)) from err


def _schema_group(cfg: DictConfig, group: str, schema: type) -> Any:
    obj = _as_config_error(OmegaConf.to_object, cfg[group])
    if not isinstance(obj, schema):
        raise ConfigError(
            f"Config group {group!r} does not use its schema: add `- schema` first in its defaults list."
        )
    return obj


def validate(cfg: DictConfig) -> TypedConfig:
    """Check every group of the composed ``cfg`` (see the module docstring) and return the checked, typed config.
    Nothing is built or written.

    Raises :class:`~regionaldiff.errors.ConfigError` (a ``ValueError``) naming the key, the value and what is
    expected.
    """
    from regionaldiff.evaluation.suite import validate_eval_config

    groups = {group: _schema_group(cfg, group, schema) for group, schema in SCHEMAS.items()}
    partial = TypedConfig(**groups)
    _as_config_error(check_components, partial)
    eval_settings = _as_config_error(validate_eval_config, cfg.get("eval"))
    nodes: dict[str, Any] = {}
    for group in TARGET_GROUPS:
        node = plain(cfg.get(group))
        _as_config_error(check_component, node, group)
        nodes[group] = node
    if OmegaConf.get_type(cfg, "dataset") in DATASET_SCHEMAS.values():
        nodes["dataset"] = _as_config_error(OmegaConf.to_object, cfg.dataset)
        RegionLabels.parse(nodes["dataset"].region_labels)
    produces_maps = bool(getattr(resolve_target(nodes["regionmap"], "regionmap"), "produces_maps", True))
    typed = TypedConfig(
        **groups,
        eval=eval_settings,
        dataset=nodes["dataset"],
        regionmap=nodes["regionmap"],
        produces_maps=produces_maps,
    )
    check_region_settings(typed, produces_maps)
    check_frozen_settings(typed)
    return typed
