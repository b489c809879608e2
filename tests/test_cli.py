"""The entrypoint behaves as Hydra users expect, and bad config values fail before any work starts."""

import re

import pytest

from regionaldiff.commands.run import hide_schemas
from regionaldiff.validation import validate


def test_help_names_the_tool_its_commands_and_only_the_options_a_user_picks(run_cli):
    out = run_cli("--help", "dataset=synthetic_things").stdout
    assert out.startswith("regionaldiff: reconstruct the images") and "powered by Hydra" not in out
    for command in ("regionaldiff check", "regionaldiff report", "regionaldiff evaluate", "regionaldiff reconstruct"):
        assert command in out
    groups = dict(line.split(": ", 1) for line in out.splitlines() if re.fullmatch(r"[\w/]+: [\w, ]+", line))
    for group in ("dataset", "encoder", "ldm", "regionmap", "trainer", "logger", "pipeline"):
        assert group in groups, group
        assert not [o for o in groups[group].split(", ") if o.startswith("schema")], group
    assert "synthetic_things" in groups["dataset"] and "sd15_regional" in groups["ldm"]
    # the config shown is the one the overrides compose
    assert "protocol: zero_shot" in out


def test_hide_schemas_only_drops_the_schema_entries():
    text = "encoder: dreamdiffusion, schema, tiny\nnote: a schema, explained\nldm: schema\ndataset: schema_x, x"
    assert hide_schemas(text) == "encoder: dreamdiffusion, tiny\nnote: a schema, explained\nldm: \ndataset: x"


def test_cfg_job_prints_the_composed_config(run_cli):
    out = run_cli("--cfg", "job").stdout
    assert "_target_: regionaldiff.data.synthetic.SyntheticDataModule" in out
    assert "steps:" in out and "- prepare" in out


@pytest.mark.parametrize(
    "override, expected",
    [
        ("dataset=nope", ["Could not find 'dataset/nope'", "synthetic"]),
        ("ldm.lr=abc", ["ldm.lr", "abc"]),
        ("ldm.noise_schedule.prediction_type=foo", ["prediction_type", "epsilon", "v_prediction"]),
        # the old name of the training noise schedule (the sampler is ldm.sampling.scheduler)
        (
            "ldm.scheduler.prediction_type=epsilon",
            ["renamed ldm.noise_schedule", "ldm.noise_schedule.prediction_type"],
        ),
        ("pipeline.steps=[prepare,train]", ["pipeline.steps", "finetune"]),
    ],
)
def test_bad_overrides_fail_with_key_and_allowed_values(run_cli, tmp_path, override, expected):
    proc = run_cli(override, check=False)
    assert proc.returncode != 0
    message = proc.stdout + proc.stderr
    for text in expected:
        assert text in message
    assert not (tmp_path / "outputs" / "artifacts").exists(), "no work may start on a bad config"


def test_out_of_range_value_fails_before_any_work(run_cli, tmp_path):
    proc = run_cli("encoder.net.mask_ratio=1.5", check=False)
    assert proc.returncode != 0
    assert "encoder.net.mask_ratio must be in (0, 1)" in proc.stdout + proc.stderr
    assert not (tmp_path / "outputs" / "artifacts").exists()


def test_regional_ldm_without_maps_is_refused(compose_cfg):
    # the one checker refuses it, before the runner builds anything
    with pytest.raises(ValueError, match="regionmap=none"):
        validate(compose_cfg("regionmap=none", "ldm=regional"))


def test_every_shipped_config_group_option_composes_and_validates(compose_cfg):
    for override in ("ldm=global", "ldm=regional", "encoder=dreamdiffusion", "trainer=gpu", "logger=none"):
        typed = validate(compose_cfg(override))
        assert typed.ldm.lr > 0


def test_regional_ldm_with_an_untrained_region_head_is_refused(compose_cfg):
    with pytest.raises(ValueError, match="encoder.w_region=0"):
        validate(compose_cfg("ldm=regional", "encoder.w_region=0"))
