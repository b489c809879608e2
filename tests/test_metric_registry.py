"""The metric registry is the one place a metric is declared: the suite computes it, preflight plans it, its keys
are listed as skipped without its weights, and its defaults come from conf/eval/default.yaml only."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from regionaldiff.config import config_dir
from regionaldiff.evaluation.backbones import BACKBONE_DEFAULTS, WeightsUnavailable, configured_backbones
from regionaldiff.evaluation.registry import METRICS, Metric, MetricInputs
from regionaldiff.evaluation.suite import eval_config, eval_defaults, evaluate_images
from regionaldiff.preflight import eval_plan

DOCS = Path(__file__).resolve().parents[1] / "docs" / "metrics.md"


def _images(n: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 256, (n, 16, 16, 3), dtype=np.uint8), rng.integers(0, 256, (n, 16, 16, 3), dtype=np.uint8))


def test_weight_paths_live_in_the_eval_config_only():
    """Every slot has its weights in conf/eval/default.yaml, and the code repeats none of them."""
    assert set(configured_backbones()) == set(BACKBONE_DEFAULTS)
    assert all("path" in spec for spec in configured_backbones().values())
    assert not any({"path", "lin_path", "hub_id"} & set(spec) for spec in BACKBONE_DEFAULTS.values())


@pytest.mark.parametrize("name", sorted(METRICS))
def test_every_metric_is_declared_whole(name):
    metric = METRICS[name]
    assert metric.name == name
    assert set(metric.slots) <= set(BACKBONE_DEFAULTS), f"{name}: unknown backbone slots"
    keys = metric.metric_keys(eval_config({"metrics": [name]}))
    assert keys and all(key.startswith("eval/") for key in keys)
    assert f"`{name}`" in DOCS.read_text(), f"{name} is not documented in docs/metrics.md"


def test_defaults_have_one_home_the_yaml():
    yaml = OmegaConf.to_container(OmegaConf.load(config_dir() / "eval" / "default.yaml"), resolve=False)
    filled = OmegaConf.to_container(OmegaConf.structured(eval_config(None)))
    for key in (
        "metrics",
        "resolution",
        "batch_size",
        "seed",
        "nway",
        "is_splits",
        "retrieval",
        "pairwise_resolution",
    ):
        assert filled[key] == yaml[key], key
    # what a config states wins, what it leaves out is filled in, nested keys included
    partial = eval_config({"nway": {"k": [1, 5]}, "resolution": 64})
    assert asdict(partial.nway) == {**yaml["nway"], "k": [1, 5]}
    assert partial.resolution == 64
    assert eval_defaults() == eval_defaults() and eval_defaults() is not eval_defaults()


def _abs_error(names, inputs: MetricInputs):
    diff = np.abs(inputs.generated.astype(float) - inputs.reference[:, None].astype(float))
    return {"eval/abs_error": float(diff.mean() / 255)}, {}


def _needs_swav(names, inputs: MetricInputs):
    raise WeightsUnavailable(f"swav weights not found at {inputs.backbone('swav')['path']}")


def test_a_new_metric_is_one_registry_entry(monkeypatch, tmp_path):
    monkeypatch.setitem(METRICS, "abs_error", Metric("abs_error", "eval/abs_error (mean |difference|)", _abs_error))
    monkeypatch.setitem(
        METRICS, "swav_like", Metric("swav_like", "eval/swav_like", _needs_swav, slots=("swav",), package="json")
    )
    generated, reference = _images()
    cfg = {"metrics": ["abs_error", "swav_like", "ssim"], "weights_dir": str(tmp_path)}
    result = evaluate_images(generated, reference, cfg=cfg)
    expected = np.abs(generated.astype(float) - reference.astype(float)).mean() / 255
    assert result.metrics["eval/abs_error"] == pytest.approx(expected)
    assert "eval/ssim" in result.metrics
    assert set(result.skipped) == {"eval/swav_like"} and "swav" in result.skipped["eval/swav_like"]
    # preflight plans it from the same entry: the slot's missing weights are why it will be skipped
    items, run, skipped = eval_plan(cfg)
    assert run == ["abs_error", "ssim"]
    assert "swav" in skipped["swav_like"] and str(tmp_path) in skipped["swav_like"]
    assert [item.key for item in items] == ["eval.backbones.swav.path"]


def test_a_metric_needing_a_missing_package_is_planned_as_skipped(monkeypatch):
    monkeypatch.setitem(
        METRICS, "needs_pkg", Metric("needs_pkg", "eval/needs_pkg", _abs_error, package="no_such_package_here")
    )
    _, run, skipped = eval_plan({"metrics": ["needs_pkg", "pixcorr"]})
    assert run == ["pixcorr"]
    assert skipped == {"needs_pkg": "the no-such-package-here package is not installed"}


def test_metrics_sharing_a_computation_run_as_one_call(monkeypatch):
    calls = []

    def shared(names, inputs):
        calls.append(list(names))
        return {f"eval/{n}": 1.0 for n in names}, {}

    monkeypatch.setitem(METRICS, "m_a", Metric("m_a", "eval/m_a", shared))
    monkeypatch.setitem(METRICS, "m_b", Metric("m_b", "eval/m_b", shared))
    generated, reference = _images()
    result = evaluate_images(generated, reference, cfg={"metrics": ["m_a", "pixcorr", "m_b"]})
    assert calls == [["m_a", "m_b"]]
    assert result.metrics["eval/m_a"] == result.metrics["eval/m_b"] == 1.0
