"""Validate a composed config before any work: each schema's range checks, then each ``_target_`` component's
arguments (:func:`regionaldiff.components.check_components`).

It sits above :mod:`regionaldiff.config` (the schemas) and :mod:`regionaldiff.components` (the builders), so
neither of those imports the other's caller.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from regionaldiff.components import check_components
from regionaldiff.config import SCHEMAS, TypedConfig
from regionaldiff.errors import ConfigError

__all__ = ["validate"]


def validate(cfg: DictConfig) -> TypedConfig:
    """Run every schema's range checks and check each ``_target_`` component's arguments; return the typed
    groups. Nothing is built or written.

    Raises :class:`~regionaldiff.errors.ConfigError` (a ``ValueError``) naming the key.
    """
    typed: dict[str, Any] = {}
    for group, schema in SCHEMAS.items():
        try:
            obj = OmegaConf.to_object(cfg[group])
        except ConfigError:
            raise
        except ValueError as err:  # the schemas' __post_init__ range checks
            raise ConfigError(str(err)) from err
        if not isinstance(obj, schema):
            raise ConfigError(
                f"Config group {group!r} does not use its schema: add `- schema` first in its defaults list."
            )
        typed[group] = obj
    result = TypedConfig(**typed)
    try:
        check_components(result)
    except ConfigError:
        raise
    except ValueError as err:  # a component's arguments (its check_config or signature)
        raise ConfigError(str(err)) from err
    return result
