"""The one checker: a composed config in, the checked and typed config of the run out (:func:`validate`).

Every check a config gets before any work is here or called from here, once per run, in this order:

1. each schema group (``encoder``, ``ldm``, ``trainer``, ``logger``, ``pipeline``, ``eval``; :data:`~regionaldiff.
   config.SCHEMAS`) becomes its dataclass, whose ``__post_init__`` makes the range and choice checks
   (:mod:`regionaldiff.config`); a key a schema does not have is refused, also one appended with ``+key=value``;
2. each ``_target_`` component of ``encoder`` and ``ldm``: it imports, its arguments are ones it takes, and its
   ``check_config`` accepts their values (:func:`regionaldiff.components.check_components`);
3. ``eval``: the names in ``eval.metrics`` and the slots of ``eval.backbones`` are in the metric and backbone tables
   (:func:`regionaldiff.evaluation.suite.check_eval`; the schema sits below those tables);
4. ``dataset`` and ``regionmap`` (:data:`TARGET_GROUPS`, one class the runner builds): the ``_target_`` imports and
   the arguments match its signature; then the node becomes the dataclass schema its YAML lists first
   (``- schema_<name>``, every shipped option; :data:`~regionaldiff.config.DATASET_SCHEMAS`,
   :data:`~regionaldiff.config.REGIONMAP_SCHEMAS`), whose ``__post_init__`` makes the range and choice checks (a
   datamodule or generator built in Python runs the same one on its arguments); an option added without a schema
   stays its plain node, checked against the signature alone. The dataset's ``region_labels`` is parsed
   (:meth:`regionaldiff.regions.RegionLabels.parse`);
5. across groups: a region-conditioned LDM needs region maps and a trained region head
   (:func:`check_region_settings`); the frozen-diffusion recipe needs the encoder's alignment head
   (:func:`check_frozen_settings`).

The result, :class:`~regionaldiff.config.TypedConfig`, is what the runner, the preflight and the steps take; none of
them checks the config again. A single run calls :func:`validate` once; a sweep checks every job before the first
starts (:func:`regionaldiff.sweeps.plan.check_sweep`), and each job checks its own config again when it runs (Hydra's
launcher composes each job itself). It sits above :mod:`regionaldiff.config` (the schemas) and
:mod:`regionaldiff.components` (the builders), so neither of those imports the other's caller.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf

from regionaldiff.components import check_component, check_components, resolve_target
from regionaldiff.config import DATASET_SCHEMAS, REGIONMAP_SCHEMAS, SCHEMAS, TypedConfig, plain
from regionaldiff.errors import ConfigError
from regionaldiff.regions import RegionLabels

__all__ = ["check_frozen_settings", "check_region_settings", "validate"]

#: the groups whose node is one ``_target_`` class the runner builds: each is checked against that class's signature,
#: then becomes the dataclass schema its YAML lists first (``- schema_<name>``; every shipped option has one), so an
#: option added without a schema is still checked (against the signature alone)
TARGET_GROUPS: dict[str, dict[str, type]] = {"dataset": DATASET_SCHEMAS, "regionmap": REGIONMAP_SCHEMAS}


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


def _unknown_key(node: Any, key: str) -> None:
    """Refuse a key that a schema does not have, anywhere in ``node`` (Hydra refuses a misspelt key at composition,
    but one appended with ``+key=value`` composes; OmegaConf would keep it as a stray attribute)."""
    if not isinstance(node, DictConfig):
        return
    schema = OmegaConf.get_type(node)
    if schema is not None and dataclasses.is_dataclass(schema):
        allowed = [f.name for f in dataclasses.fields(schema)]
        unknown = [str(k) for k in node.keys() if k not in allowed]
        if unknown:
            raise ConfigError(f"{key}.{unknown[0]} is not a key of {key}; it has: {', '.join(allowed)}.")
    for child in node.keys():
        _unknown_key(node._get_node(child), f"{key}.{child!s}")


def typed_node(cfg: DictConfig, key: str) -> Any:
    """The node at ``key`` as its schema's dataclass (whose ``__post_init__`` makes the checks): a ConfigError naming
    the key for a value or a key the schema does not take."""
    node = cfg[key]
    _unknown_key(node, key)
    return _as_config_error(OmegaConf.to_object, node)


def _schema_group(cfg: DictConfig, group: str, schema: type) -> Any:
    obj = typed_node(cfg, group)
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
    from regionaldiff.evaluation.suite import check_eval

    groups = {group: _schema_group(cfg, group, schema) for group, schema in SCHEMAS.items()}
    partial = TypedConfig(**groups)
    _as_config_error(check_components, partial)
    check_eval(partial.eval)
    nodes: dict[str, Any] = {}
    for group, schemas in TARGET_GROUPS.items():
        node = plain(cfg.get(group))
        _as_config_error(check_component, node, group)
        if OmegaConf.get_type(cfg, group) in schemas.values():
            nodes[group] = typed_node(cfg, group)
        else:
            nodes[group] = node
    if not isinstance(nodes["dataset"], Mapping):
        RegionLabels.parse(nodes["dataset"].region_labels)
    generator = resolve_target({"_target_": cfg.regionmap._target_}, "regionmap")
    produces_maps = bool(getattr(generator, "produces_maps", True))
    typed = TypedConfig(
        **groups,
        dataset=nodes["dataset"],
        regionmap=nodes["regionmap"],
        produces_maps=produces_maps,
    )
    check_region_settings(typed, produces_maps)
    check_frozen_settings(typed)
    return typed
