"""The region-awareness ablation: its arms compose to what they claim, and the summary's arithmetic."""

from pathlib import Path

import pytest

from regionaldiff.tracking.report import (
    Claim,
    PairedDifference,
    ReportSpec,
    claims_markdown,
    plot,
    summarise,
    to_markdown,
)
from regionaldiff.validation import validate

#: the ablation's report spec: the ``report:`` section of its experiment config
SPEC = ReportSpec.from_yaml(Path(__file__).resolve().parents[1] / "conf" / "experiment" / "ablation_regions.yaml")
CLAIMS = [(c.a, c.b, c.metric, c.kind) for c in SPEC.claims]
METRICS = list(SPEC.metrics)


@pytest.mark.parametrize(
    "arm, ldm, w_cls, w_region, test_maps",
    [
        ("global_mae", "global", 0.0, 0.0, "predicted"),
        ("global_cls", "global", 1.0, 0.0, "predicted"),
        ("regional_predicted", "regional", 1.0, 1.0, "predicted"),
        ("regional_oracle", "regional", 1.0, 1.0, "oracle"),
        ("regional_predicted_mixed", "regional", 1.0, 1.0, "predicted"),
        ("regional_oracle_mixed", "regional", 1.0, 1.0, "oracle"),
    ],
)
def test_each_arm_sets_what_it_ablates(compose_cfg, arm, ldm, w_cls, w_region, test_maps):
    cfg = compose_cfg(f"ablation={arm}")
    typed = validate(cfg)
    assert typed.ldm.name == ldm and typed.ldm.regions == (ldm == "regional")
    assert typed.encoder.w_cls == w_cls and typed.encoder.w_region == w_region and typed.encoder.w_mae == 1.0
    assert typed.pipeline.test_maps.value == test_maps
    assert cfg.ablation_arm == arm
    expected_maps = None if ldm == "global" else ("mixed" if arm.endswith("_mixed") else "predicted")
    assert (typed.ldm.train_maps.value if typed.ldm.train_maps else None) == expected_maps


def test_the_frozen_recipe_arm_keeps_the_methods_objectives_and_adds_the_alignment_it_needs(compose_cfg):
    """ablation=frozen_regional: the method's encoder objectives, plus an alignment head (the EEG enters the frozen
    diffusion through the embedding it predicts), the ControlNet trained on true maps, predicted maps at test time."""
    method, frozen = compose_cfg("ablation=regional_predicted_mixed"), compose_cfg("ablation=frozen_regional")
    typed = validate(frozen)
    assert typed.ldm.name == "frozen_regional" and typed.ldm.regions and typed.ldm.train_maps.value == "reference"
    assert (frozen.encoder.w_mae, frozen.encoder.w_cls, frozen.encoder.w_region) == (
        method.encoder.w_mae,
        method.encoder.w_cls,
        method.encoder.w_region,
    )
    assert method.encoder.get("align") is None and frozen.encoder.align.image_embedder._target_.endswith("Embedder")
    assert typed.pipeline.test_maps.value == "predicted" and frozen.ablation_arm == "frozen_regional"


def test_predicted_and_oracle_arms_share_their_trained_models(compose_cfg):
    """They differ only at test time, so the finetune artifact key (everything but sampling/test maps) is equal."""
    a, b = compose_cfg("ablation=regional_predicted"), compose_cfg("ablation=regional_oracle")
    assert (
        a.encoder == b.encoder
        and a.ldm == b.ldm
        and a.dataset == b.dataset
        and a.pipeline.test_maps != b.pipeline.test_maps
    )


def test_experiment_is_one_multirun_over_arms_and_seeds(compose_cfg):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from regionaldiff.config import config_dir

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("config", overrides=["experiment=ablation_regions"], return_hydra_config=True)
    params = cfg.hydra.sweeper.params
    assert set(params["ablation"].split(",")) == {
        "global_mae",
        "global_cls",
        "regional_predicted",
        "regional_oracle",
        "regional_predicted_mixed",
        "regional_oracle_mixed",
    }
    assert len(params["seed"].split(",")) >= 3
    assert str(cfg.hydra.mode) == "RunMode.MULTIRUN"
    GlobalHydra.instance().clear()


def test_summary_mean_and_spread_by_hand():
    runs = {
        "global_cls": {
            0: {"eval/ssim": 0.2, "eval/recon_class_acc": 0.5},
            1: {"eval/ssim": 0.4, "eval/recon_class_acc": 0.7},
        }
    }
    table = summarise(runs, METRICS)
    mean, std, n = table["global_cls"]["eval/ssim"]
    assert mean == pytest.approx(0.3) and std == pytest.approx(0.1414213, rel=1e-5) and n == 2
    text = to_markdown(table, SPEC, METRICS)
    assert "+ classification | 2 | 0.600 ± 0.141" in text and "n/a" in text


def _runs(region: dict[str, list[float]], acc: dict[str, list[float]]):
    return {
        arm: {
            s: {"eval/recon_region_miou": region[arm][s], "eval/recon_class_acc": acc[arm][s]}
            for s in range(len(region[arm]))
        }
        for arm in region
    }


def test_paired_difference_is_paired_by_seed_by_hand():
    # seed-to-seed spread is large, but B is below A by 0.1, 0.2, 0.3 on every seed
    runs = _runs({"a": [0.5, 0.9, 0.3], "b": [0.4, 0.7, 0.0]}, {"a": [0, 0, 0], "b": [0, 0, 0]})
    d = PairedDifference.of(runs, "a", "b", "eval/recon_region_miou")
    assert d.n == 3 and d.mean == pytest.approx(0.2) and d.std == pytest.approx(0.1)
    # t(0.95, df=2) = 2.919986; sem = 0.1 / sqrt(3)
    assert d.lower95 == pytest.approx(0.2 - 2.919986 * 0.1 / 3**0.5, rel=1e-5)
    assert 0 < d.p_greater < 0.05
    # seeds present in only one arm are not paired
    runs["b"][7] = {"eval/recon_region_miou": 9.0}
    assert PairedDifference.of(runs, "a", "b", "eval/recon_region_miou").n == 3
    assert PairedDifference.of({"a": {0: {"m": 1.0}}, "b": {0: {"m": 0.0}}}, "a", "b", "m") is None


def test_claims_shown_only_when_the_data_show_them():
    arms = ("global_mae", "global_cls", "regional_predicted", "regional_oracle")
    good = _runs(
        dict(zip(arms, ([0.08, 0.10, 0.09], [0.07, 0.09, 0.10], [0.15, 0.17, 0.16], [0.20, 0.22, 0.21]))),
        dict(zip(arms, ([0.7, 0.8, 0.75], [0.8, 0.85, 0.8], [0.82, 0.86, 0.81], [0.84, 0.88, 0.83]))),
    )
    text, verdicts = claims_markdown(good, SPEC)
    verdicts = [((c.a, c.b, c.metric, c.kind), v) for c, v in verdicts]
    # only the claims whose arms were run (the mixed-map arms were not)
    assert [claim for claim, _ in verdicts] == [c for c in CLAIMS if "mixed" not in c[0]] and len(verdicts) == 6
    assert all(shown for _, shown in verdicts) and text.count("| yes |") == 6
    # the method no better than global-only on region IoU, and clearly worse on class accuracy
    bad = _runs(
        dict(zip(arms, ([0.15, 0.10, 0.17], [0.07, 0.09, 0.10], [0.15, 0.11, 0.16], [0.20, 0.22, 0.21]))),
        dict(zip(arms, ([0.9, 0.9, 0.9], [0.8, 0.85, 0.8], [0.7, 0.72, 0.69], [0.84, 0.88, 0.83]))),
    )
    _, verdicts = claims_markdown(bad, SPEC)
    verdicts = [((c.a, c.b, c.metric, c.kind), v) for c, v in verdicts]
    claim_of = {(a, b, m): v for (a, b, m, _), v in verdicts}
    assert claim_of[("regional_predicted", "global_mae", "eval/recon_region_miou")] is False
    assert claim_of[("regional_predicted", "global_mae", "eval/recon_class_acc")] is False
    assert claim_of[("regional_predicted", "global_cls", "eval/recon_region_miou")] is True


def test_plot_writes_a_png(tmp_path):
    runs = _runs(
        {"global_mae": [0.1, 0.2], "regional_predicted": [0.3, 0.4]},
        {"global_mae": [0.5, 0.6], "regional_predicted": [0.7, 0.8]},
    )
    path = plot(runs, tmp_path / "ablation.png", SPEC, SPEC.plots)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000


def test_mixed_map_arms_share_their_trained_models_and_differ_from_the_method_only_in_train_maps(compose_cfg):
    a, b, method = (
        compose_cfg(f"ablation={arm}")
        for arm in ("regional_predicted_mixed", "regional_oracle_mixed", "regional_predicted")
    )
    assert a.encoder == b.encoder and a.ldm == b.ldm and a.pipeline.test_maps != b.pipeline.test_maps
    assert a.encoder == method.encoder and a.ldm.train_maps == "mixed" and method.ldm.train_maps == "predicted"


def test_the_spec_keeps_the_ablation_claims():
    """The claims the summary script tested, now in the experiment config: the method against both global arms,
    the oracle bounds, the mixed-map arms."""
    assert SPEC.margin == 0.05 and SPEC.variant_label == "arm" and SPEC.group_by == ["ablation"]
    assert len(CLAIMS) == 14 and len(set(CLAIMS)) == 14
    for method, oracle in (
        ("regional_predicted", "regional_oracle"),
        ("regional_predicted_mixed", "regional_oracle_mixed"),
    ):
        for base in ("global_mae", "global_cls"):
            assert (method, base, "eval/recon_region_miou", "better") in CLAIMS
            assert (method, base, "eval/recon_class_acc", "not_worse") in CLAIMS
        assert (oracle, method, "eval/recon_region_miou", "better") in CLAIMS
    assert ("regional_oracle_mixed", "regional_predicted", "eval/recon_region_miou", "better") in CLAIMS
    with pytest.raises(ValueError, match="kind"):
        Claim("a", "b", "m", "worse")


def test_the_default_run_is_the_method_arm_chosen_on_validation(compose_cfg):
    """`make run` trains and samples exactly the arm that train_maps_selection chose (mixed training maps,
    sharpened test maps), so the README's table is one seed of that arm."""
    default, arm = compose_cfg(), compose_cfg("ablation=regional_predicted_mixed")
    assert default.encoder == arm.encoder and default.ldm == arm.ldm and default.pipeline == arm.pipeline
    assert default.ldm.train_maps == "mixed" and default.ldm.sampling.map_temperature == 0.25
    # then sampling_selection's choice, on the same validation seeds
    assert default.ldm.sampling.guidance_scale == 1.5 and default.ldm.sampling.controlnet_scale == 1.5
    assert default.encoder.calibrate_background is True


def test_the_frozen_arm_samples_with_what_its_validation_sweep_chose(compose_cfg):
    """ldm=frozen_regional's sampling is sampling_selection_frozen_things' choice (ControlNet scale 1.5, sharpened maps,
    no guidance), and that sweep compares the choice against the recipe's former defaults on the validation split."""
    arm = compose_cfg("ablation=frozen_regional")
    s = arm.ldm.sampling
    assert (s.guidance_scale, s.controlnet_scale, s.map_temperature) == (1.0, 1.5, 0.25)
    sweep = compose_cfg("experiment=sampling_selection_frozen_things")
    assert sweep.pipeline.eval_split == "val" and sweep.ablation_arm == "frozen_regional"
    chosen = "ldm.sampling.guidance_scale=1.0, ldm.sampling.controlnet_scale=1.5, ldm.sampling.map_temperature=0.25"
    former = "ldm.sampling.guidance_scale=1.0, ldm.sampling.controlnet_scale=1.0, ldm.sampling.map_temperature=0.25"
    assert {(c.a, c.b, c.metric) for c in sweep.report.claims} >= {
        (chosen, former, "eval/recon_region_miou"),
        (chosen, former, "eval/pixcorr"),
    }
