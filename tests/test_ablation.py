"""The region-awareness ablation: its arms compose to what they claim, and the summary's arithmetic."""

import sys
from pathlib import Path

import pytest

from regionaldiff.config import validate

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from ablation_summary import summarise, to_markdown  # noqa: E402


@pytest.mark.parametrize(
    "arm, ldm, w_cls, w_region, test_maps",
    [
        ("global_mae", "global", 0.0, 0.0, "predicted"),
        ("global_cls", "global", 1.0, 0.0, "predicted"),
        ("regional_predicted", "regional", 1.0, 1.0, "predicted"),
        ("regional_oracle", "regional", 1.0, 1.0, "oracle"),
    ],
)
def test_each_arm_sets_what_it_ablates(compose_cfg, arm, ldm, w_cls, w_region, test_maps):
    cfg = compose_cfg(f"ablation={arm}")
    typed = validate(cfg)
    assert typed["ldm"].name == ldm and typed["ldm"].regions == (ldm == "regional")
    assert typed["encoder"].w_cls == w_cls and typed["encoder"].w_region == w_region and typed["encoder"].w_mae == 1.0
    assert typed["pipeline"].test_maps.value == test_maps
    assert cfg.ablation_arm == arm


def test_predicted_and_oracle_arms_share_their_trained_models(compose_cfg):
    """They differ only at test time, so the finetune artifact key (everything but sampling/test maps) is equal."""
    a, b = compose_cfg("ablation=regional_predicted"), compose_cfg("ablation=regional_oracle")
    assert a.encoder == b.encoder and a.ldm == b.ldm and a.dataset == b.dataset and a.pipeline.test_maps != b.pipeline.test_maps


def test_experiment_is_one_multirun_over_arms_and_seeds(compose_cfg):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from regionaldiff.cli import config_dir

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("config", overrides=["experiment=ablation_regions"], return_hydra_config=True)
    params = cfg.hydra.sweeper.params
    assert set(params["ablation"].split(",")) == {"global_mae", "global_cls", "regional_predicted", "regional_oracle"}
    assert len(params["seed"].split(",")) >= 3
    assert str(cfg.hydra.mode) == "RunMode.MULTIRUN"
    GlobalHydra.instance().clear()


def test_summary_mean_and_spread_by_hand():
    runs = {"global_cls": [{"eval/ssim": 0.2, "eval/recon_class_acc": 0.5}, {"eval/ssim": 0.4, "eval/recon_class_acc": 0.7}]}
    table = summarise(runs)
    mean, std, n = table["global_cls"]["eval/ssim"]
    assert mean == pytest.approx(0.3) and std == pytest.approx(0.1414213, rel=1e-5) and n == 2
    text = to_markdown(table)
    assert "+ classification | 2 | 0.600 ± 0.141" in text and "n/a" in text
