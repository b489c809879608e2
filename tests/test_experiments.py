"""Every experiment config (conf/experiment/*.yaml) composes as a multirun whose jobs validate and whose report spec
parses; and one job of each runs end to end on the synthetic benchmark or the official-format fixtures, shrunk."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from conftest import TINY, TINY_THINGS
from regionaldiff.config import config_dir, register_configs
from regionaldiff.tracking.report import ReportSpec
from regionaldiff.validation import validate

EXPERIMENTS = sorted(p.stem for p in (config_dir() / "experiment").glob("*.yaml"))


def _compose(*overrides: str, hydra_config: bool = False):
    register_configs()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            return compose("config", overrides=list(overrides), return_hydra_config=hydra_config)
    finally:
        GlobalHydra.instance().clear()


def _sweep(experiment: str) -> dict[str, list[str]]:
    params = _compose(f"experiment={experiment}", hydra_config=True).hydra.sweeper.params
    parsed = OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in params.items()])
    return {
        o.key_or_group: [
            str(v) if not isinstance(v, list) else f"[{','.join(map(str, v))}]" for v in o.sweep_iterator()
        ]
        for o in parsed
    }


def test_every_experiment_is_listed():
    assert {
        "ablation_regions",
        "paper_ablations",
        "maps_sam_vs_superpixel",
        "dreamdiffusion_eeg_imagenet",
        "regional_eeg_imagenet",
        "things_intra_subject",
        "things_inter_subject",
    } <= set(EXPERIMENTS)


def test_every_experiment_has_a_row_in_the_sweeps_guide():
    guide = (Path(__file__).resolve().parents[1] / "docs" / "sweeps.md").read_text()
    rows = {line.split("|")[1].strip().strip("`") for line in guide.splitlines() if line.startswith("| `")}
    assert set(EXPERIMENTS) <= rows, f"docs/sweeps.md, Experiments: no row for {sorted(set(EXPERIMENTS) - rows)}"


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_is_a_multirun_whose_jobs_validate(experiment, tmp_path):
    cfg = _compose(f"experiment={experiment}", hydra_config=True)
    assert str(cfg.hydra.mode) == "RunMode.MULTIRUN"
    assert cfg.logger.experiment_name == experiment
    spec = ReportSpec.from_mapping(cfg.get("report"))
    sweep = _sweep(experiment)
    assert sweep and all(sweep.values())
    # every job of the sweep composes and validates (the first 12 combinations)
    for combo in itertools.islice(itertools.product(*sweep.values()), 12):
        overrides = [f"{k}={v}" for k, v in zip(sweep, combo)]
        job = _compose(f"experiment={experiment}", f"paths.root_dir={tmp_path}", *overrides)
        validate(job)
    if spec.group_by:
        assert set(spec.group_by) <= set(sweep) | {"ldm"}


def test_the_protocols_set_what_they_claim():
    dd = _compose("experiment=dreamdiffusion_eeg_imagenet")
    assert dd.dataset.subject == 4 and dd.dataset.split_file == "block_splits_by_image_single.pth"
    assert dd.dataset.resample == 512 and dd.encoder.net.embed_dim == 1024 and dd.ldm.name == "sd15_global"
    assert (dd.eval.nway.n, dd.eval.nway.k, dd.eval.nway.trials) == (50, 1, 50) and "nway" in dd.eval.metrics
    assert dd.ldm.sampling.samples_per_eeg == 5 and dd.ldm.sampling.num_steps == 250
    regional = _compose("experiment=regional_eeg_imagenet")
    assert regional.ldm.name == "sd15_regional" and regional.dataset.subject == 4 and regional.dataset.resample == 512
    assert regional.eval.nway == dd.eval.nway and regional.ldm.sampling.samples_per_eeg == 5
    # the synthetic subjects experiments' arms and pairing, on the real data
    arms = ["frozen_regional", "frozen_global"]
    assert _sweep("things_intra_subject") == {"ldm": arms, "dataset.subjects": [f"[{s}]" for s in range(1, 11)]}
    for name in ("things_intra_subject", "things_inter_subject"):  # the field's zero-shot protocol
        things = _compose(f"experiment={name}")
        assert things.encoder.align.image_embedder.path.endswith("clip-vit-large-patch14")
        assert "retrieval" in things.eval.metrics and list(things.eval.retrieval.repetitions) == [1, 5, 10, 20, 80]
        assert things.dataset.region_labels == "layout"
    loso = _compose("experiment=things_inter_subject")
    assert list(loso.dataset.subjects) == list(range(1, 11))
    assert _sweep("things_inter_subject") == {
        "ldm": arms,
        "dataset.leave_out_subject": [str(s) for s in range(1, 11)],
        "encoder.subject_layer": ["none", "token", "linear"],
    }
    for name, key in (
        ("things_intra_subject", "dataset.subjects"),
        ("things_inter_subject", "dataset.leave_out_subject"),
    ):
        spec = ReportSpec.from_mapping(_compose(f"experiment={name}").report)
        assert spec.pair_by == key and spec.group_by[-1] == "ldm"
        assert {c.metric for c in spec.claims} >= {"eval/region_alignment_miou"}  # the layout, scored by SLIC
    assert set(_sweep("paper_ablations")["ablation"]) == {
        "regional_predicted",
        "no_mae",
        "no_cls",
        "global_cls",
        "regional_oracle",
    }
    assert set(_sweep("maps_sam_vs_superpixel")["regionmap"]) == {"sam", "slic"}


def test_the_many_subject_experiments_share_the_preset_and_sweep_what_they_compare():
    layers = ["none", "token", "linear"]
    maps = ["frozen_regional", "frozen_global"]  # the maps from EEG, and the same encoder sampled without them
    assert _sweep("subjects_things_pooled") == {"seed": ["0", "1", "2"], "encoder.subject_layer": layers}
    assert _sweep("subjects_things_per_subject") == {"ldm": maps, "dataset.subjects": ["0", "1", "2", "3"]}
    assert _sweep("subjects_things_loso") == {
        "ldm": maps,
        "dataset.test_subject": ["0", "1", "2", "3"],
        "encoder.subject_layer": layers,
    }
    # ldm varies slowest: the jobs that sample an encoder without the map come after the one that trains it
    assert next(iter(_sweep("subjects_things_loso"))) == next(iter(_sweep("subjects_things_per_subject"))) == "ldm"
    for name, job, group_by, pair_by in (
        ("subjects_things_pooled", "encoder.subject_layer=token", ["encoder.subject_layer"], "seed"),
        ("subjects_things_per_subject", "dataset.subjects=3", ["ldm"], "dataset.subjects"),
        (
            "subjects_things_loso",
            "dataset.test_subject=3",
            ["encoder.subject_layer", "ldm"],
            "dataset.test_subject",
        ),
    ):
        cfg = _compose(f"experiment={name}", job)
        typed = validate(cfg)
        assert cfg.dataset._target_.endswith("ConceptWorldDataModule") and cfg.dataset.n_subjects == 4
        # the subjects differ as much as the field's across / within ratio says (conf/dataset/cohort/calibrated.yaml)
        assert cfg.dataset.subject_jitter == 0.175
        assert cfg.report.group_by == group_by and cfg.report.get("pair_by", "seed") == pair_by
        assert list(cfg.report.metrics) == [
            "eval/retrieval_top1",
            "eval/retrieval_top1_reps1",
            "eval/recon_region_miou",
            "eval/region_miou",
        ]
        # every claim names variants the grouping produces (else the report says "not tested")
        spec = ReportSpec.from_mapping(OmegaConf.to_container(cfg.report))
        for claim in spec.claims:
            assert {claim.a, claim.b} <= set(spec.variant_titles)
        assert spec.claims
        assert typed.encoder.subject_layer.value == ("token" if "subject_layer" in job else "none")
        # the diffusion learns from the images alone, which the subjects share: trained once, reused by every job
        assert cfg.ldm.name == "frozen_regional"
        # each encoder gets the one-subject preset's optimizer steps: 80 epochs over the trials of one subject
        n_train_subjects = {"pooled": 4, "per_subject": 1, "loso": 3}[name.removeprefix("subjects_things_")]
        assert round(80 / n_train_subjects) == typed.encoder.max_epochs
        # by default they differ only in their forward models; the heterogeneous cohort adds latency and SNR
        assert cfg.dataset.subject_latency_jitter == 0 and cfg.dataset.subject_snr_spread == 0
        other = _compose(f"experiment={name}", job, "dataset/cohort=heterogeneous").dataset
        assert (other.n_subjects, other.subject_jitter) == (4, 0.175)
        assert (other.subject_latency_jitter, other.subject_snr_spread) == (0.01, 0.25)


def test_component_ablation_arms(compose_cfg):
    no_mae, no_cls = validate(compose_cfg("ablation=no_mae")), validate(compose_cfg("ablation=no_cls"))
    assert no_mae.encoder.w_mae == 0 and no_mae.encoder.w_cls == 1 and no_mae.ldm.regions
    assert no_cls.encoder.w_cls == 0 and no_cls.encoder.w_mae == 1 and no_cls.ldm.regions


# shrink the synthetic experiments to one epoch of each model and two sampling steps
SYNTHETIC_SMALL = [*TINY, "encoder.max_epochs=1", "ldm.max_epochs=1", "ldm.sampling.num_steps=2"]

# shrink the zero-shot preset (dataset=synthetic_things) to a few concepts and repetitions
THINGS_PRESET_SMALL = [
    *TINY_THINGS,  # the experiment picks the dataset
    "encoder.max_epochs=1",
    "ldm.max_epochs=1",
    "ldm.sampling.num_steps=2",
    "trainer.enable_progress_bar=false",
]
IMAGENET_PRESET_SMALL = [
    "dataset.n_concepts=4",
    "dataset.images_per_concept=4",
    "dataset.val_images_per_concept=2",
    "dataset.test_images_per_concept=2",
    "encoder.max_epochs=1",
    "ldm.max_epochs=1",
    "ldm.sampling.num_steps=2",
    "trainer.enable_progress_bar=false",
]

# shrink the real-data protocols to a step or two on the fixtures (tiny models, CPU, metrics without weights)
REAL_SMALL = [
    "encoder=tiny",
    "trainer=cpu",
    "dataset.image_size=32",
    "dataset.batch_size=4",
    "encoder.max_epochs=1",
    "ldm.max_epochs=1",
    "ldm.sampling.num_steps=2",
    "ldm.sampling.samples_per_eeg=1",
    "trainer.enable_progress_bar=false",
    "eval.metrics=[ssim,pixcorr]",
]


def _eeg_imagenet(tmp_path):
    from official_formats import write_eeg_imagenet

    return [f"dataset.root={write_eeg_imagenet(tmp_path / 'eeg_imagenet', n_subjects=4).root}"]


def _eeg_imagenet_sd15(tmp_path):
    """The EEG-ImageNet fixture and, where the SD-1.5 configs read them, a narrow random-weight SD-1.5-layout folder
    and a tiny CLIP: DreamDiffusion's experiments then run their own SD recipe (PLMS, CLIP loss) at toy sizes."""
    from conftest import write_tiny_clip
    from regionaldiff.ldm.sd15 import save_sd15_layout

    weights = tmp_path / "weights"
    save_sd15_layout(weights / "stable-diffusion-v1-5", width=0.05, cross_attention_dim=32, layers_per_block=1)
    write_tiny_clip(weights / "clip-vit-large-patch14")
    sd = [f"paths.weights_dir={weights}", "ldm.unet.cross_attention_dim=32", "ldm.image_size=64", "ldm.batch_size=4"]
    return [*_eeg_imagenet(tmp_path), *sd]


def _things(tmp_path):
    """The THINGS-EEG2 fixture and a tiny CLIP where the protocols' encoder/align=clip reads it."""
    from conftest import write_tiny_clip
    from official_formats import write_things_eeg2

    fixture = write_things_eeg2(tmp_path / "things")
    write_tiny_clip(tmp_path / "weights" / "clip-vit-large-patch14")
    return [f"dataset.root={fixture.root}", "dataset.val_fraction=0.25", f"paths.weights_dir={tmp_path / 'weights'}"]


#: experiment -> (one job's sweep values, fixture, shrinking overrides)
ONE_JOB = {
    "paper_ablations": (
        ["seed=0", "ablation=no_mae"],
        None,
        SYNTHETIC_SMALL,
    ),
    "train_maps_selection": (
        ["seed=0", "ablation=regional_predicted_mixed", "ldm.sampling.map_temperature=0.25"],
        None,
        SYNTHETIC_SMALL,
    ),
    "sampling_selection": (
        ["seed=0", "ldm.sampling.guidance_scale=1.5", "ldm.sampling.controlnet_scale=1.5"],
        None,
        SYNTHETIC_SMALL,
    ),
    "encoder_epochs_selection": (
        ["seed=0", "encoder.max_epochs=1"],
        None,
        [*TINY, "ldm.max_epochs=1", "ldm.sampling.num_steps=2"],  # its job sets the swept encoder.max_epochs
    ),
    "region_claims": (
        ["seed=0", "ablation=regional_predicted_mixed"],
        None,
        SYNTHETIC_SMALL,
    ),
    "region_claims_things": (["seed=0", "ablation=regional_predicted_mixed"], None, THINGS_PRESET_SMALL),
    "location_curve": (
        ["seed=0", "dataset.location_weight=0.3", "ablation=regional_predicted_mixed"],
        None,
        THINGS_PRESET_SMALL,
    ),
    "sampling_selection_things": (
        [
            "seed=0",
            "ldm.sampling.guidance_scale=1.5",
            "ldm.sampling.controlnet_scale=1.5",
            "ldm.sampling.map_temperature=0.25",
        ],
        None,
        THINGS_PRESET_SMALL,
    ),
    "train_maps_selection_things": (["seed=0", "ablation=regional_predicted"], None, THINGS_PRESET_SMALL),
    "sampling_selection_frozen_things": (
        [
            "seed=0",
            "ldm.sampling.guidance_scale=2.0",
            "ldm.sampling.controlnet_scale=1.5",
            "ldm.sampling.map_temperature=1.0",
        ],
        None,
        THINGS_PRESET_SMALL,
    ),
    "region_claims_imagenet": (["seed=0", "ablation=frozen_regional"], None, IMAGENET_PRESET_SMALL),
    # many subjects: the experiments' 4 subjects at test size
    "subjects_things_pooled": (["seed=0", "encoder.subject_layer=linear"], None, THINGS_PRESET_SMALL),
    "subjects_things_per_subject": (["ldm=frozen_regional", "dataset.subjects=2"], None, THINGS_PRESET_SMALL),
    "subjects_things_loso": (
        ["ldm=frozen_global", "dataset.test_subject=1", "encoder.subject_layer=token"],
        None,
        THINGS_PRESET_SMALL,
    ),
    "sampling_selection_imagenet": (
        ["seed=0", "ldm.sampling.controlnet_scale=1.5", "ldm.sampling.map_temperature=0.25"],
        None,
        IMAGENET_PRESET_SMALL,
    ),
    "encoder_epochs_selection_things": (
        ["encoder.max_epochs=1", "seed=0"],
        None,
        [p for p in THINGS_PRESET_SMALL if not p.startswith("encoder.max_epochs=")],  # its job sets the swept length
    ),
    "encoder_comparison": (
        ["seed=0", "dataset=synthetic_things", "encoder=shallow"],
        None,
        [*THINGS_PRESET_SMALL, "encoder.batch_size=8"],
    ),
    "maps_sam_vs_superpixel": (["seed=0", "regionmap=slic"], _eeg_imagenet, REAL_SMALL),
    "dreamdiffusion_eeg_imagenet": (["seed=0"], _eeg_imagenet_sd15, REAL_SMALL),
    "regional_eeg_imagenet": (["seed=0"], _eeg_imagenet_sd15, REAL_SMALL),
    "things_intra_subject": (["ldm=frozen_regional", "dataset.subjects=[2]"], _things, REAL_SMALL),
    "things_inter_subject": (
        ["ldm=frozen_global", "dataset.leave_out_subject=2", "encoder.subject_layer=token"],
        _things,
        [*REAL_SMALL, "dataset.subjects=[1,2]"],
    ),
}


#: the metric a finished job must have logged, where it is not eval/ssim: experiments that stop before the
#: evaluation, and those whose report's claim reads another (the real data's layout, scored by SLIC)
LAST_METRIC = {
    "encoder_comparison": "pretrain/val_retrieval_top1",
    "things_intra_subject": "eval/region_alignment_miou",
}


def test_every_experiment_has_a_smoke_job():
    assert set(ONE_JOB) | {"ablation_regions"} == set(EXPERIMENTS)  # ablation_regions: tests/test_report.py


@pytest.mark.slow
@pytest.mark.parametrize("experiment", sorted(ONE_JOB))
def test_one_job_of_the_experiment_runs(experiment, run_cli, tmp_path):
    job, fixture, small = ONE_JOB[experiment]
    data = fixture(tmp_path) if fixture else []
    run_cli(f"experiment={experiment}", *job, *data, *small)
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}")
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id])
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId")]
    parents = [r for r in runs if r.data.tags.get("regionaldiff.role") == "sweep"]
    metric = LAST_METRIC.get(experiment, "eval/ssim")
    assert len(children) == 1 and children[0].info.status == "FINISHED" and metric in children[0].data.metrics
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
