"""A single run composes its config once and checks each group once (issue 32): the entry point composes, the one
checker (:func:`regionaldiff.validation.validate`) checks, and the layers below (runner, preflight, steps, metrics)
take the checked config and check nothing again.

The run goes through the real entry point in this process, with the pipeline's steps replaced by no-ops (what is
counted happens before and around them).
"""

from __future__ import annotations

from collections import Counter

import pytest
from hydra._internal.hydra import Hydra
from hydra.core.global_hydra import GlobalHydra

from regionaldiff import cli, components, runner, validation
from regionaldiff.commands import run
from regionaldiff.evaluation import suite


@pytest.fixture
def counts(monkeypatch):
    """Counters of every composition, every check and every read of ``conf/eval/default.yaml`` to fill defaults."""
    seen: Counter[str] = Counter()

    def counted(name, fn, when=lambda *a, **k: True):
        def wrapper(*args, **kwargs):
            if when(*args, **kwargs):
                seen[name] += 1
            return fn(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(Hydra, "compose_config", counted("compose", Hydra.compose_config))
    monkeypatch.setattr(validation, "validate", counted("validate", validation.validate))
    original_group = validation._schema_group
    monkeypatch.setattr(
        validation,
        "_schema_group",
        lambda cfg, group, schema: (seen.update([f"schema:{group}"]), original_group(cfg, group, schema))[1],
    )
    original_component = validation.check_component
    monkeypatch.setattr(
        validation,
        "check_component",
        lambda node, key: (seen.update([f"target:{key}"]), original_component(node, key))[1],
    )
    original_components = components.check_component
    monkeypatch.setattr(
        components,
        "check_component",
        lambda node, key: (seen.update([f"component:{key}"]), original_components(node, key))[1],
    )
    # the eval check against the metric registry (the schema's own checks are counted with the schema groups)
    monkeypatch.setattr(suite, "check_eval", counted("eval", suite.check_eval))
    suite._read_eval_defaults.cache_clear()
    yield seen
    GlobalHydra.instance().clear()


def test_a_single_run_composes_once_and_checks_each_group_once(counts, monkeypatch, tmp_path, capsys):
    ran = []
    monkeypatch.setattr(runner, "STEPS", {step: lambda ctx, train, s=step: ran.append(s) for step in runner.STEPS})
    monkeypatch.chdir(tmp_path)
    run.main([f"paths.root_dir={tmp_path}", "logger=none", "trainer.enable_progress_bar=false"], cli._run_job)
    assert "Done. Results in" in capsys.readouterr().out
    assert len(ran) == len(runner.STEPS)
    assert counts["compose"] == 1
    assert counts["validate"] == 1
    assert counts["eval"] == 1
    # conf/eval/default.yaml is read once, by the composition (no second read to fill defaults)
    assert suite._read_eval_defaults.cache_info().misses == 0
    for group in ("encoder", "ldm", "trainer", "logger", "pipeline", "eval"):
        assert counts[f"schema:{group}"] == 1, group
    assert counts["target:dataset"] == counts["target:regionmap"] == 1
    component_counts = {k: v for k, v in counts.items() if k.startswith("component:")}
    assert component_counts and set(component_counts.values()) == {1}, component_counts


def test_the_count_sees_a_second_check(counts, monkeypatch, tmp_path):
    """The counters are real: checking the composed config again is counted."""
    from regionaldiff.config import compose_config

    cfg = compose_config([f"paths.root_dir={tmp_path}", f"paths.output_dir={tmp_path}/job"])
    validation.validate(cfg)
    validation.validate(cfg)
    assert counts["validate"] == 2 and counts["schema:ldm"] == 2 and counts["eval"] == 2
