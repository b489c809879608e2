"""Every option of every config group, every ablation arm and every experiment composes and passes the checks a run
makes before any work starts (:func:`regionaldiff.validation.validate`, the one checker), and its
``_target_`` classes resolve. The options are read from the ``conf/`` folders, so a new YAML file is tested without
editing this file. Options that need local weights or data (SD-1.5, SAM, the real datasets) compose and validate;
only their classes are not instantiated here.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import hydra
import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, ListConfig, OmegaConf

from regionaldiff.config import config_dir
from regionaldiff.data.base import EEGDataModule
from regionaldiff.errors import ConfigError
from regionaldiff.evaluation.suite import eval_config
from regionaldiff.maps.base import RegionMapGenerator
from regionaldiff.validation import check_region_settings, validate

CONF = config_dir()
REPO = Path(__file__).resolve().parents[1]
#: groups whose options are not selected on the command line (Hydra's own settings)
NOT_USER_GROUPS = {"hydra"}
#: a nested group is reachable only through a parent option that lists it: the overrides that select one
NESTED_PARENTS = {
    "regionmap/rule": ["regionmap=slic"],
    "ldm/conditioner": ["ldm=regional"],
    "ldm/latent": ["ldm=regional"],
    "ldm/unet": ["ldm=regional"],
    "ldm/controlnet": ["ldm=regional"],
    "ldm/adapter": ["ldm=frozen_regional"],
    "encoder/align": ["encoder=tiny"],
    "encoder/recipe": ["encoder=tiny"],
    "dataset/objectives": ["dataset=synthetic_things"],
    "dataset/sampling": ["dataset=synthetic_imagenet"],
    "dataset/cohort": ["dataset=synthetic_things"],
}
#: options that make a runnable config only with other choices (the default ldm=regional needs region maps)
COMPANIONS = {("regionmap", "none"): ["ldm=global"]}
#: regionmap / dataset classes cheap to build here (no weights, no data files)
INSTANTIABLE = {
    "regionaldiff.maps.base.NoRegionMap",
    "regionaldiff.maps.base.OracleRegionMap",
    "regionaldiff.maps.slic.SuperpixelRegionMap",
    "regionaldiff.data.synthetic.SyntheticDataModule",
    "regionaldiff.data.synthetic.concept_world.ConceptWorldDataModule",
}


def _groups() -> list[str]:
    """Every config group folder under conf/ (nested ones as ``parent/child``), Hydra's own excluded."""
    groups = []
    for folder in sorted(p for p in CONF.rglob("*") if p.is_dir()):
        group = folder.relative_to(CONF).as_posix()
        if group.split("/")[0] not in NOT_USER_GROUPS and any(folder.glob("*.yaml")):
            groups.append(group)
    return groups


GROUPS = _groups()
OPTIONS = [(group, path.stem) for group in GROUPS for path in sorted((CONF / group).glob("*.yaml"))]


def _targets(node: Any, key: str = "") -> dict[str, str]:
    """``_target_`` values anywhere in ``node``, by the key of the node that holds them."""
    found: dict[str, str] = {}
    if isinstance(node, DictConfig):
        if "_target_" in node:
            found[key] = str(node["_target_"])
        for child in node:
            found.update(_targets(node[child], f"{key}.{child}" if key else str(child)))
    elif isinstance(node, ListConfig):
        for i, child in enumerate(node):
            found.update(_targets(child, f"{key}[{i}]"))
    return found


def check_config(cfg: DictConfig) -> dict[str, Any]:
    """What a run checks before any work (the one checker: every group, the cross-group checks), plus: every
    ``_target_`` resolves; cheap regionmap / dataset classes build."""
    typed = validate(cfg)
    assert typed.eval == eval_config(cfg.eval)  # the same settings a Python caller gets from the node
    # the dataset's schema (every shipped option has one), or its plain node (a dataset added without one)
    dataset = typed.dataset if isinstance(typed.dataset, Mapping) else vars(typed.dataset)
    assert dataset["_target_"] == cfg.dataset._target_
    for key, target in _targets(cfg).items():
        assert callable(hydra.utils.get_object(target)), key  # a class or a factory function
    regionmap_class = hydra.utils.get_class(cfg.regionmap._target_)
    assert issubclass(regionmap_class, RegionMapGenerator)
    # the cross-group check of the checker (a region-conditioned LDM needs maps and a region head) passed
    check_region_settings(typed, regionmap_class.produces_maps)
    assert issubclass(hydra.utils.get_class(cfg.dataset._target_), EEGDataModule)
    if cfg.regionmap._target_ in INSTANTIABLE:
        assert isinstance(hydra.utils.instantiate(cfg.regionmap), RegionMapGenerator)
    return typed


def test_the_option_list_covers_every_group():
    assert {"dataset", "encoder", "eval", "ldm", "logger", "regionmap", "trainer", "pipeline", "ablation"} <= set(
        GROUPS
    )
    assert "experiment" in GROUPS
    for group in GROUPS:
        if "/" in group:
            assert group in NESTED_PARENTS, f"nested group {group}: add the parent option that includes it"
    # experiment=NAME reads conf/experiment/*.yaml, their one home (a folder, not a link to another)
    assert (CONF / "experiment").is_dir() and not (CONF / "experiment").is_symlink()
    assert not (REPO / "experiments").exists()


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_option_composes_and_validates(compose_cfg, group, option):
    cfg = compose_cfg(*NESTED_PARENTS.get(group, []), *COMPANIONS.get((group, option), []), f"{group}={option}")
    typed = check_config(cfg)
    if group == "dataset" and cfg.dataset._target_ in INSTANTIABLE:
        dm = hydra.utils.instantiate(cfg.dataset)
        assert isinstance(dm, EEGDataModule) and dm.run_tags == {} and dm.data_report == {}
    if group in ("trainer", "logger"):  # the YAML lists its schema first (typed, range-checked)
        assert type(getattr(typed, group)).__name__ in ("TrainerConfig", "LoggerConfig")


def _sweep_overrides(experiment: str) -> list[list[str]]:
    """Overrides that together select every value the experiment's sweep takes (value i of each parameter in job i,
    cycling shorter lists), so each swept value is composed at least once without the full product."""
    params = OmegaConf.select(OmegaConf.load(CONF / "experiment" / f"{experiment}.yaml"), "hydra.sweeper.params")
    if not params:
        return [[]]
    parser = OverridesParser.create()
    values = {}
    for key, value in params.items():
        (override,) = parser.parse_overrides([f"{key}={value}"])
        values[key] = list(override.sweep_string_iterator()) if override.is_sweep_override() else [str(value)]
    n = max(len(v) for v in values.values())
    return [[f"{key}={v[i % len(v)]}" for key, v in values.items()] for i in range(n)]


EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_sweep_jobs_compose_and_validate(compose_cfg, experiment):
    for overrides in _sweep_overrides(experiment):
        cfg = compose_cfg(f"experiment={experiment}", *overrides)
        check_config(cfg)
        arms = [o.split("=", 1)[1] for o in overrides if o.startswith("ablation=")]
        if arms:  # each arm tags its jobs with its name
            assert cfg.ablation_arm == arms[0]


def test_the_cross_group_checks_are_the_pipelines(compose_cfg):
    """A region-conditioned LDM without maps, or without a trained region head, fails here as it fails a run."""
    with pytest.raises(ConfigError, match="region-map generator"):
        check_config(compose_cfg("ldm=regional", "regionmap=none"))
    with pytest.raises(ConfigError, match="encoder.w_region=0"):
        check_config(compose_cfg("ldm=regional", "encoder.w_region=0"))


def test_every_regionmap_and_eval_option_composes_to_its_schema(compose_cfg):
    """Each regionmap YAML lists its schema first; every eval option inherits the schema through default.yaml."""
    from regionaldiff.config import REGIONMAP_SCHEMAS, EvalConfig, RuleConfig

    for path in sorted((CONF / "regionmap").glob("*.yaml")):
        cfg = compose_cfg(f"regionmap={path.stem}", "ldm=global")
        assert OmegaConf.get_type(cfg, "regionmap") is REGIONMAP_SCHEMAS[f"schema_{path.stem}"], path.stem
        typed = validate(cfg)
        assert isinstance(typed.regionmap, REGIONMAP_SCHEMAS[f"schema_{path.stem}"])
        if "rule" in cfg.regionmap:
            assert isinstance(typed.regionmap.rule, RuleConfig)
    for path in sorted((CONF / "eval").glob("*.yaml")):
        assert isinstance(validate(compose_cfg(f"eval={path.stem}")).eval, EvalConfig), path.stem


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        # a misspelt key: refused at composition (the schema types the node) ...
        (["regionmap=slic", "regionmap.methd=slic"], r"regionmap\.methd.*not in 'SuperpixelRegionMapConfig'"),
        (["regionmap=sam", "regionmap.rule.min_aera=0.1"], r"regionmap\.rule\.min_aera.*not in 'RuleConfig'"),
        (["eval.resolutoin=64"], r"eval\.resolutoin.*not in 'EvalConfig'"),
        (["eval.nway.trails=5"], r"eval\.nway\.trails.*not in 'NWayConfig'"),
        # ... and a wrong type
        (["regionmap=slic", "regionmap.sigma=abc"], r"regionmap\.sigma"),
        (["eval.resolution=high"], r"eval\.resolution"),
    ],
)
def test_a_misspelt_regionmap_or_eval_key_fails_at_composition(overrides, message):
    from regionaldiff.config import compose_config

    with pytest.raises(ConfigError, match=message):
        compose_config(["ldm=global", *overrides])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        # a key appended with `+` composes; the checker refuses it, naming it
        (["regionmap=sam", "+regionmap.rule.colour=1"], r"regionmap\.rule\.colour is not a key of regionmap\.rule"),
        (["+eval.resolutoin=64"], r"eval\.resolutoin is not a key of eval; it has: metrics, resolution"),
        (["+eval.nway.trails=5"], r"eval\.nway\.trails is not a key of eval\.nway"),
        # values the schemas check (before any work, not when the generator is built)
        (["regionmap=slic", "regionmap.rule.max_area=1.5"], r"regionmap\.rule\.max_area must be in \[0, 1\]"),
        (
            ["regionmap=slic", "regionmap.method=watershed"],
            r"regionmap\.method must be one of \['slic', 'felzenszwalb'\]",
        ),
        (["regionmap=sam", "regionmap.mode=panoptic"], r"regionmap\.mode must be one of \['semantic', 'instance'\]"),
        (["regionmap=sam", "regionmap.points_per_side=0"], r"regionmap\.points_per_side must be >= 1"),
        # the metric names against the registry, the other eval settings by the schema
        (["eval.metrics=[ssim,pixcor]"], r"eval\.metrics: unknown metric\(s\) \['pixcor'\]; allowed: \[.*'pixcorr'"),
        (["eval.resolution=8"], r"eval\.resolution must be >= 11"),
        (["eval.nway.k=60"], r"eval\.nway: need n >= 2, 1 <= k <= n"),
        (["eval.retrieval.repetitions=[0]"], r"eval\.retrieval\.repetitions"),
        (["+eval.backbones.alexnet_typo.path=x"], r"unknown backbone slot 'alexnet_typo'"),
    ],
)
def test_the_checker_names_a_bad_regionmap_or_eval_key(compose_cfg, overrides, message):
    cfg = compose_cfg("ldm=global", *overrides)
    with pytest.raises(ConfigError, match=message):
        validate(cfg)


def test_eval_settings_from_python_are_checked_by_the_same_schema():
    with pytest.raises(ConfigError, match=r"eval: .*resolutoin"):
        eval_config({"resolutoin": 64})
    with pytest.raises(ConfigError, match=r"eval\.metrics: unknown metric\(s\) \['ssmi'\]"):
        eval_config({"metrics": ["ssmi"]})
    with pytest.raises(ConfigError, match=r"eval\.resolution must be >= 11"):
        eval_config({"resolution": 4})
    settings = eval_config({"resolution": 64})
    assert settings.resolution == 64 and eval_config(settings) is settings
