"""One policy for defaults (docs/design.md, "Defaults"): the YAML under conf/ is the one home of the values a run
uses; a constructor default exists for use from Python and equals the value of its group's base option, so the
two can never tell different stories. Read from the YAML and the signatures, so a new argument is checked too."""

from __future__ import annotations

import inspect
from typing import Any

import pytest
from hydra.utils import get_object
from omegaconf import DictConfig, OmegaConf

#: each group's base option (the one the others build on, or a dataset's own YAML): overrides that select it
BASE_OPTIONS = [
    ["encoder=tiny"],
    ["ldm=global"],
    ["ldm=regional"],
    ["ldm=regional", "ldm/conditioner=attention_pool"],
    ["regionmap=slic"],
    ["dataset=synthetic"],
    ["dataset=synthetic_things"],
    ["dataset=things_eeg2"],
    ["dataset=eeg_imagenet"],
]


def _component_nodes(node: Any, key: str) -> list[tuple[str, DictConfig]]:
    found = []
    if isinstance(node, DictConfig) and not node._is_none():
        if "_target_" in node:
            found.append((key, node))
        for child in node:
            found.extend(_component_nodes(node._get_node(child), f"{key}.{child}"))
    return found


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def differences(cfg: DictConfig, group: str) -> list[str]:
    """``key: yaml=... code=...`` for every argument whose constructor default differs from the YAML value
    (arguments whose code default is None, i.e. "set by the config", and interpolated paths are not compared)."""
    out = []
    for key, node in _component_nodes(cfg[group], group):
        values = OmegaConf.to_container(node, resolve=True)
        for name, param in inspect.signature(get_object(str(node._target_))).parameters.items():
            if name not in values or param.default is inspect.Parameter.empty or param.default is None:
                continue
            if isinstance(node._get_node(name), DictConfig):
                continue
            if not _same(values[name], param.default):
                out.append(f"{key}.{name}: yaml={values[name]!r} code={param.default!r}")
    return out


@pytest.mark.parametrize("overrides", BASE_OPTIONS, ids=[" ".join(o) for o in BASE_OPTIONS])
def test_constructor_defaults_equal_the_base_options_yaml(compose_cfg, overrides):
    cfg = compose_cfg(*overrides)
    group = overrides[-1].split("=")[0].split("/")[0]
    assert differences(cfg, group) == []


def test_a_difference_is_found(compose_cfg):
    cfg = compose_cfg("encoder=tiny", "encoder.net.dropout=0.3")
    assert differences(cfg, "encoder") == ["encoder.net.dropout: yaml=0.3 code=0.1"]
