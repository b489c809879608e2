"""Snapshot of every config the repository ships: each option of each config group and each job of each experiment,
composed and written as YAML, so that a change to how configs are composed or checked can be shown to leave every
one of them as it was.

    python tests/config_snapshot.py OUT_DIR          # write OUT_DIR/<name>.yaml, one file a config
    diff -r GOLDEN_DIR OUT_DIR                       # after a change: no output means nothing changed

The groups and their options are read from Hydra's config search path (``conf/`` and the ConfigStore), not from
folders, so the list follows wherever the YAML files live. A nested group (``ldm/unet``) is selected under the
first option of its parent group that composes with it. The experiment's jobs are every job Hydra's basic sweeper
would launch (``hydra.sweeper.params``). Paths point at a fixed root, so the output does not depend on where this
runs; each config is resolved where it can be (else written unresolved, marked so), the ``hydra`` node unresolved
with only the parts that do not depend on the machine (mode, sweeper, launcher, callbacks, the chosen options).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf

from regionaldiff.config import config_dir, is_schema, register_configs

#: every path derives from this root (``paths.root_dir``), so the snapshot is the same wherever it runs
ROOT = "/snapshot-root"
FIXED = [f"paths.root_dir={ROOT}", f"paths.output_dir={ROOT}/job"]
#: the parts of the ``hydra`` node kept (the rest holds the machine's folders and Hydra's version)
HYDRA_KEYS = ("mode", "sweeper", "launcher", "callbacks", "run", "sweep")


def _loader():
    return GlobalHydra.instance().config_loader()


def groups(parent: str = "") -> list[str]:
    """Every config group under ``parent`` on the search path (nested ones as ``a/b``), Hydra's own left out."""
    found = []
    for name in sorted(_loader().list_groups(parent)):
        group = f"{parent}/{name}" if parent else name
        if group == "hydra":
            continue
        found.append(group)
        found.extend(groups(group))
    return found


def options(group: str) -> list[str]:
    return sorted(o for o in _loader().get_group_options(group) if not is_schema(o))


def _compose(overrides: list[str]) -> DictConfig:
    return compose("config", overrides=[*FIXED, *overrides], return_hydra_config=True)


def sweep_jobs(experiment: str) -> list[list[str]]:
    """The overrides of every job of an experiment's sweep (as Hydra's basic sweeper splits them); ``[[]]`` when it
    sweeps nothing."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    cfg = _compose([f"experiment={experiment}"])
    params = OmegaConf.select(cfg, "hydra.sweeper.params") or {}
    if not params:
        return [[]]
    parsed = OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in params.items()])
    return [list(job) for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]


def cases() -> Iterator[tuple[str, list[str]]]:
    """(file name, overrides) of every config: the default, each group option, each experiment job."""
    yield "default", []
    for group in groups():
        if group == "experiment":
            continue
        for option in options(group):
            selected = [f"{group}={option}"]
            if "/" in group:  # reachable only under a parent option that lists the nested group
                parent = group.rsplit("/", 1)[0]
                for candidate in [[]] + [[f"{parent}={p}"] for p in options(parent)]:
                    try:
                        _compose([*candidate, *selected])
                    except Exception:  # noqa: BLE001 - not under this parent option: try the next
                        continue
                    selected = [*candidate, *selected]
                    break
            yield f"{group.replace('/', '.')}={option}", selected
    for experiment in options("experiment"):
        for num, job in enumerate(sweep_jobs(experiment)):
            yield f"experiment={experiment}#{num}", [f"experiment={experiment}", *job]


def render(cfg: DictConfig, overrides: list[str]) -> str:
    """The config as YAML (resolved where it can be), then the kept parts of its ``hydra`` node, unresolved."""
    hydra_node = OmegaConf.masked_copy(cfg.hydra, [k for k in HYDRA_KEYS if k in cfg.hydra])
    choices = OmegaConf.to_container(cfg.hydra.runtime.choices)
    with_hydra = cfg
    cfg = OmegaConf.masked_copy(with_hydra, [k for k in with_hydra if k != "hydra"])
    try:
        body = OmegaConf.to_yaml(cfg, resolve=True)
        note = ""
    except Exception as err:  # noqa: BLE001 - an interpolation only a run resolves
        body = OmegaConf.to_yaml(cfg)
        note = f"# not resolved: {type(err).__name__}\n"
    head = f"# overrides: {' '.join(overrides) or '(none)'}\n{note}"
    tail = OmegaConf.to_yaml(OmegaConf.create({"hydra": OmegaConf.to_container(hydra_node), "choices": choices}))
    return head + body + "---\n" + tail


def snapshot(out: Path) -> int:
    """Write every config to ``out``; the number written."""
    out.mkdir(parents=True, exist_ok=True)
    register_configs()
    GlobalHydra.instance().clear()
    n = 0
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        for name, overrides in list(cases()):
            try:
                text = render(_compose(overrides), overrides)
            except Exception as err:  # noqa: BLE001 - a config that does not compose is part of the snapshot too
                text = f"# overrides: {' '.join(overrides)}\n# does not compose: {type(err).__name__}: {err}\n"
            (out / f"{name}.yaml").write_text(text)
            n += 1
    GlobalHydra.instance().clear()
    return n


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python tests/config_snapshot.py OUT_DIR")
    print(f"{snapshot(Path(sys.argv[1]))} configs written to {sys.argv[1]}")
