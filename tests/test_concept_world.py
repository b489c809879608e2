"""The realistic presets of the synthetic benchmark (regionaldiff.data.synthetic.concept_world): concepts from
attributes, zero-shot and closed-set splits, an attribute code that makes unseen concepts predictable, location
before category, subjects of their own, repetitions to average."""

from __future__ import annotations

import numpy as np
import pytest

from regionaldiff.data.synthetic.concept_world import ConceptWorldDataModule
from regionaldiff.data.synthetic.concepts import MAX_CONCEPTS, N_ATTRIBUTES, attribute_matrix, draw_concepts
from regionaldiff.errors import ConfigError

SMALL = dict(
    n_concepts=24, n_val_concepts=6, n_test_concepts=12, images_per_concept=2, n_repetitions=2, test_repetitions=5
)


def test_concepts_are_distinct_attribute_combinations():
    concepts = draw_concepts(MAX_CONCEPTS, np.random.default_rng(0))
    assert len({(c.shape, c.colour, c.texture) for c in concepts}) == MAX_CONCEPTS == 640
    assert len({c.style.name for c in concepts}) == MAX_CONCEPTS
    matrix = attribute_matrix(concepts[:5])
    assert matrix.shape == (5, N_ATTRIBUTES) and (matrix.sum(1) == 3).all()
    with pytest.raises(ValueError, match="640"):
        draw_concepts(MAX_CONCEPTS + 1, np.random.default_rng(0))


def test_zero_shot_splits_never_show_a_test_concept_in_training():
    dm = ConceptWorldDataModule(**SMALL)
    train, val, test = (dm.get_split(s) for s in ("train", "val", "test"))
    assert set(train.labels) == set(range(24)) and set(val.labels) == set(range(24, 30))
    assert set(test.labels) == set(range(30, 42)) and dm.num_classes == 42
    assert train.eeg.shape == (48, 17, 100)  # 24 concepts x 2 images, repetitions averaged
    assert test.eeg.shape == (12, 17, 100)  # one trial per test image: its 5 repetitions averaged
    maps = dm.ground_truth_region_maps()
    train_labels = {int(v) for i in train.image_ids for v in np.unique(maps[i])}
    assert train_labels <= set(range(25))  # background and training concepts only, the clutter included
    assert {int(v) for i in test.image_ids for v in np.unique(maps[i])} <= {0, *range(31, 43)}
    # the named object is whole: its label covers pixels of every scene
    assert all((maps[i] == label + 1).any() for i, label in zip(test.image_ids, test.labels, strict=True))


def test_closed_set_shows_the_same_classes_in_every_split_and_keeps_single_trials():
    dm = ConceptWorldDataModule(
        protocol="closed_set", n_concepts=8, images_per_concept=3, val_images_per_concept=1,
        test_images_per_concept=2, n_repetitions=1, test_repetitions=1, region_labels="class",
    )  # fmt: skip
    splits = {s: dm.get_split(s) for s in ("train", "val", "test")}
    assert dm.num_classes == 8 and dm.num_region_labels == 9
    assert all(set(split.labels) == set(range(8)) for split in splits.values())
    assert [len(s) for s in splits.values()] == [24, 8, 16]
    assert not set(splits["train"].image_ids) & set(splits["test"].image_ids)
    # random presentation order, not blocks of one class
    assert (np.diff(splits["train"].labels) != 0).mean() > 0.5


def test_test_repetitions_average_as_asked():
    dm = ConceptWorldDataModule(**SMALL)
    full = dm.get_split("test").eeg
    raw = dm._load()["test_eeg_s0"]
    assert raw.shape == (12, 5, 17, 100)
    np.testing.assert_allclose(dm.averaged_split("test", 5).eeg, full, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(dm.averaged_split("test", 2).eeg, raw[:, :2].mean(1), rtol=1e-5, atol=1e-6)
    # averaging shrinks the noise: one repetition is noisier than five
    assert dm.averaged_split("test", 1).eeg.std() > 1.5 * full.std()
    with pytest.raises(ConfigError, match="dataset.test_repetitions"):
        dm.averaged_split("test", 6)


def test_kept_training_repetitions_average_to_the_averaged_trials():
    kept = ConceptWorldDataModule(**SMALL, average_repetitions=False).get_split("train")
    averaged = ConceptWorldDataModule(**SMALL).get_split("train")
    assert len(kept) == 2 * len(averaged) and kept.image_ids[0] == kept.image_ids[1]
    np.testing.assert_allclose(kept.eeg.reshape(len(averaged), 2, 17, 100).mean(1), averaged.eeg, atol=1e-5)


def _noise_free(dm: ConceptWorldDataModule) -> tuple[np.ndarray, np.ndarray]:
    """Noise-free signal of every scene of every split (subject 0) and each scene's label."""
    a = dm._load()
    maps = np.concatenate([a[f"{s}_maps"] for s in ("train", "val", "test")])
    labels = np.concatenate([a[f"{s}_labels"] for s in ("train", "val", "test")])
    return dm.simulate_signal(maps, dm.head_model(0)), labels


@pytest.mark.parametrize(("idiosyncratic", "predictable"), [(0.0, True), (1.0, False)])
def test_unseen_concepts_signal_follows_their_attributes(idiosyncratic, predictable):
    """Without location signal and clutter, a scene's signal is its concept's: with idiosyncratic=0 it is linear in
    the concept's attributes (a fit on training concepts predicts the test concepts'), with 1 it is not."""
    dm = ConceptWorldDataModule(
        **{**SMALL, "n_concepts": 120}, location_weight=0.0, max_clutter=0, idiosyncratic=idiosyncratic
    )
    signal, labels = _noise_free(dm)
    x = attribute_matrix(dm.concepts)[labels]
    y = signal.reshape(len(signal), -1)
    train = labels < 120
    w, *_ = np.linalg.lstsq(x[train], y[train], rcond=None)
    test = labels >= 126
    residual = ((x[test] @ w - y[test]) ** 2).sum() / ((y[test] - y[test].mean(0)) ** 2).sum()
    r2 = 1 - residual
    assert (r2 > 0.99) if predictable else (r2 < 0.1), r2  # attributes at half weight would give about 0.28


def test_location_signal_arrives_before_the_category_signal():
    where = ConceptWorldDataModule(**SMALL, category_weight=0.0)
    what = ConceptWorldDataModule(**SMALL, location_weight=0.0)
    times = where.times
    peak_where = times[np.sqrt((_noise_free(where)[0] ** 2).mean(axis=(0, 1))).argmax()]
    peak_what = times[np.sqrt((_noise_free(what)[0] ** 2).mean(axis=(0, 1))).argmax()]
    assert 0.08 <= peak_where <= 0.13 and peak_what >= 0.15 and peak_what > peak_where


def test_subjects_have_forward_models_of_their_own_and_the_inter_subject_split():
    dm = ConceptWorldDataModule(**SMALL, n_subjects=3, test_subject=2)
    heads = [dm.head_model(s) for s in range(3)]
    corr = np.corrcoef(heads[0].retino.ravel(), heads[1].retino.ravel())[0, 1]
    assert 0.5 < corr < 0.999  # alike (one layout), not equal (each subject's folding)
    assert set(dm.get_split("train").subjects) == {1, 2} and set(dm.get_split("test").subjects) == {3}
    intra = ConceptWorldDataModule(**SMALL, n_subjects=2)
    assert len(intra.get_split("test")) == 2 * 12


def test_one_subjects_trials_are_selected_as_things_eeg2_selects_them(tmp_path):
    """``subjects`` picks whose trials make the splits (one model per subject); the EEG is the one the full world
    generates (one cache), and the subject numbers the data declares follow the selection."""
    world = ConceptWorldDataModule(**SMALL, n_subjects=3, cache_dir=str(tmp_path))
    one = ConceptWorldDataModule(**SMALL, n_subjects=3, subjects=1, cache_dir=str(tmp_path))
    assert world.subject_ids == [1, 2, 3] and one.subject_ids == [2]
    for split in ("train", "val", "test"):
        full, only = world.get_split(split), one.get_split(split)
        assert set(only.subjects) == {2}
        np.testing.assert_array_equal(only.eeg, full.eeg[full.subjects == 2])
    assert len(list(tmp_path.glob("synthetic_concepts_*.npz"))) == 1
    loso = ConceptWorldDataModule(**SMALL, n_subjects=3, subjects=[0, 2], test_subject=2)
    assert loso.subject_ids == [1, 3]  # the left-out subject is declared: the encoder's table has its row
    assert set(loso.get_split("train").subjects) == {1} and set(loso.get_split("test").subjects) == {3}


@pytest.mark.parametrize("layer", ["token", "linear"])
def test_leave_one_subject_out_reads_the_left_out_subject_as_the_mean_subject(layer, caplog):
    """The encoder is built for the subjects the world declares (the left-out one included), trains on the others
    through the pretraining objective, and scores the left-out subject's test trials as the average trained subject:
    finite outputs, one warning naming the subject."""
    import torch

    from regionaldiff.components import build_encoder
    from regionaldiff.encoder.module import EncoderPretrainModule

    dm = ConceptWorldDataModule(**SMALL, n_subjects=3, test_subject=1)
    net = {"_target_": "regionaldiff.encoder.shallow.LinearEncoder", "num_tokens": 2, "embed_dim": 8, "region_grid": 0}
    encoder = build_encoder(
        net, n_chans=dm.n_chans, n_times=dm.n_times, sfreq=dm.sfreq, num_classes=dm.num_classes,
        subject_layer=layer, subject_ids=dm.subject_ids,
    )  # fmt: skip
    module = EncoderPretrainModule(
        encoder, lr=1e-3, weight_decay=0.0, w_mae=0.0, w_cls=1.0, w_region=0.0, max_epochs=1
    )
    module.train()
    for batch in dm.loader("train", shuffle=False):
        module._losses(batch)["loss"].backward()
    assert encoder.subject_trained.tolist() == [True, False, True]  # subjects 1 and 3 (0-based 0 and 2)
    encoder.eval()
    with torch.no_grad(), caplog.at_level("WARNING", logger="regionaldiff.encoder.base"):
        outs = [encoder(b["eeg"], b["subject"])["class_logits"] for b in dm.loader("test", shuffle=False)]
    assert torch.isfinite(torch.cat(outs)).all()
    warnings = [r.getMessage() for r in caplog.records if "not trained on" in r.getMessage()]
    assert len(warnings) == 1 and "([2]; trained on [1, 3])" in warnings[0]


def test_subjects_can_differ_in_latency_and_snr_and_by_default_do_not(tmp_path):
    """``subject_latency_jitter`` delays each subject's evoked responses by its own draw and ``subject_snr_spread``
    scales its signal: the EEG differs from the plain world's by exactly that (the noise is drawn as before). At 0
    (the presets' value) nothing changes, the data cache's key included, so earlier caches and artifacts are found."""
    plain = ConceptWorldDataModule(**SMALL, n_subjects=2)
    assert "subject_latency_jitter" not in plain.config and "subject_snr_spread" not in plain.config
    assert [plain.subject_profile(s) for s in range(2)] == [(0.0, 0.3), (0.0, 0.3)]
    assert "subject_profiles" not in plain.describe()

    snr_world = ConceptWorldDataModule(**SMALL, n_subjects=2, subject_snr_spread=0.5)
    snrs = [snr_world.subject_profile(s)[1] for s in range(2)]
    # each subject's draw is in the run's tags
    assert (
        snr_world.describe()["subject_profiles"]
        == f"subject 1: +0.0 ms, snr {snrs[0]:.3f}; subject 2: +0.0 ms, snr {snrs[1]:.3f}"
    )
    assert snrs[0] != snrs[1] and all(0.3 * np.exp(-2.0) < v < 0.3 * np.exp(2.0) for v in snrs)
    base, scaled = plain.get_split("test"), snr_world.get_split("test")
    arrays = snr_world.generate_arrays()
    every_map = np.concatenate([arrays[f"{split}_maps"] for split in ("train", "val", "test")])
    signal = snr_world.simulate_signal(every_map, snr_world.head_model(1))[-len(arrays["test_maps"]) :]
    second = base.subjects == 2
    # subject 2's trials are the plain ones plus (its snr - 0.3) times its noise-free signal (unit RMS over the world)
    np.testing.assert_allclose(scaled.eeg[second] - base.eeg[second], (snrs[1] - 0.3) * signal, atol=2e-5)

    late = ConceptWorldDataModule(**SMALL, subject_latency_jitter=0.03)
    delay = late.subject_profile(0)[0]
    assert delay != 0.0 and late.config["subject_latency_jitter"] == 0.03
    maps, head = late.generate_arrays()["test_maps"], late.head_model(0)
    shift = 3  # samples at 100 Hz: the response 30 ms later
    on_time, delayed = late.simulate_signal(maps, head), late.simulate_signal(maps, head, delay=shift / late.sfreq)
    corr = np.corrcoef(on_time[..., :-shift].ravel(), delayed[..., shift:].ravel())[0, 1]
    assert corr > 0.999 and np.corrcoef(on_time.ravel(), delayed.ravel())[0, 1] < 0.9
    assert not np.array_equal(late.get_split("test").eeg, ConceptWorldDataModule(**SMALL).get_split("test").eeg)


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        ({"subjects": [3]}, r"dataset.subjects must be null \(all\) or distinct subjects in \[0, 3\)"),
        ({"subjects": [0, 0]}, "dataset.subjects must be"),
        ({"subjects": [0, 1], "test_subject": 2}, r"dataset.test_subject=2 must be one of dataset.subjects=\[0, 1\]"),
    ],
)
def test_a_bad_subject_selection_names_the_key(extra, match):
    with pytest.raises(ConfigError, match=match):
        ConceptWorldDataModule(**{**SMALL, "n_subjects": 3, **extra})


def test_generation_is_deterministic_and_cached(tmp_path):
    a = ConceptWorldDataModule(**SMALL, cache_dir=str(tmp_path)).get_split("train")
    assert len(list(tmp_path.glob("synthetic_concepts_*.npz"))) == 1
    b = ConceptWorldDataModule(**SMALL, cache_dir=str(tmp_path)).get_split("train")
    c = ConceptWorldDataModule(**SMALL, seed=1).get_split("train")
    np.testing.assert_array_equal(a.eeg, b.eeg)
    assert not np.array_equal(a.eeg, c.eeg)


@pytest.mark.parametrize(
    ("key", "value", "match"),
    [
        ("protocol", "open", "dataset.protocol"),
        ("n_concepts", 700, "640"),
        ("n_test_concepts", 0, "dataset.n_test_concepts"),
        ("idiosyncratic", 1.5, "dataset.idiosyncratic"),
        ("test_subject", 0, "dataset.test_subject"),
        ("snr", -1.0, "dataset.snr"),
        ("subject_latency_jitter", -0.01, "dataset.subject_latency_jitter must be >= 0"),
        ("subject_snr_spread", -0.1, "dataset.subject_snr_spread must be >= 0"),
        ("montage", "nope", "dataset.montage"),
    ],
)
def test_bad_values_name_the_key(key, value, match):
    with pytest.raises(ConfigError, match=match):
        ConceptWorldDataModule(**{**SMALL, key: value})


def test_the_zero_shot_preset_chooses_its_alignment_and_retrieval_and_the_command_line_wins(compose_cfg):
    cfg = compose_cfg("dataset=synthetic_things")
    assert cfg.encoder.align.image_embedder._target_.endswith("PixelImageEmbedder")
    assert "retrieval" in cfg.eval.metrics and list(cfg.eval.retrieval.repetitions) == [1, 5, 10, 20, 80]
    assert cfg.dataset.region_labels == "layout"
    chosen = compose_cfg("dataset=synthetic_things", "eval=synthetic", "~encoder/align")
    assert "retrieval" not in chosen.eval.metrics and chosen.encoder.get("align") is None
    closed = compose_cfg("dataset=synthetic_imagenet")
    assert closed.dataset.protocol == "closed_set" and closed.encoder.get("align") is None
    # the default world is untouched
    assert compose_cfg().encoder.get("align") is None


def test_the_zero_shot_preset_drops_the_class_objective_and_its_token_for_every_arm_of_the_method(compose_cfg):
    def objectives(cfg):
        return cfg.encoder.w_cls, cfg.ldm.conditioner.use_class_token

    assert objectives(compose_cfg("dataset=synthetic_things")) == (0.0, False)
    assert objectives(compose_cfg("dataset=synthetic_things", "encoder=shallow")) == (0.0, False)
    # the method's arms take the dataset's choice; the arm that is about the class keeps it
    for arm in ("regional_predicted", "regional_predicted_mixed", "regional_oracle"):
        assert objectives(compose_cfg("dataset=synthetic_things", f"ablation={arm}")) == (0.0, False)
    assert objectives(compose_cfg("dataset=synthetic_things", "ablation=global_cls")) == (1.0, True)
    # the command line wins, and the closed-set preset and the default world keep the class
    assert objectives(compose_cfg("dataset=synthetic_things", "~dataset/objectives")) == (1.0, True)
    assert objectives(compose_cfg("dataset=synthetic_things", "encoder.w_cls=0.5"))[0] == 0.5
    assert objectives(compose_cfg("dataset=synthetic_imagenet", "ablation=regional_predicted")) == (1.0, True)
    assert objectives(compose_cfg("ablation=regional_predicted")) == (1.0, True)


@pytest.mark.parametrize(
    ("experiment", "arm"),
    [
        ("region_claims_things", "global_mae"),
        ("region_claims_things", "regional_predicted_mixed"),
        ("region_claims_imagenet", "global_cls"),
        ("region_claims_imagenet", "regional_predicted_mixed"),
        ("region_claims_imagenet", "frozen_regional"),
    ],
)
def test_the_region_claims_compose_on_each_preset(compose_cfg, experiment, arm):
    """Each preset's claims experiment: every arm passes the checks a run makes first, and the closed-set preset runs
    both arms on the encoder the validation split chose (shallow), the same objective with and without the maps."""
    from regionaldiff.validation import validate

    cfg = compose_cfg(f"experiment={experiment}", f"ablation={arm}")
    assert cfg.dataset._target_.endswith("ConceptWorldDataModule") and cfg.ablation_arm == arm
    validate(cfg)
    if experiment == "region_claims_imagenet":
        assert cfg.encoder.net._target_.endswith("ShallowEncoder") and cfg.encoder.w_cls == 1.0


def test_the_closed_set_preset_chooses_the_shallow_encoder_and_the_command_line_another(compose_cfg):
    assert compose_cfg("dataset=synthetic_imagenet").encoder.net._target_.endswith("ShallowEncoder")
    assert compose_cfg("dataset=synthetic_imagenet", "encoder=tiny").encoder.net._target_.endswith("MaskedAutoencoder")
    assert compose_cfg().encoder.net._target_.endswith("MaskedAutoencoder")  # the default world keeps the MAE


def test_the_closed_set_preset_samples_at_the_controlnet_weight_its_validation_split_chose(compose_cfg):
    """sampling_selection_imagenet at the recalibrated level: 1.0 beat 1.5 on every seed; the other worlds keep 1.5,
    and the command line and every recipe still set their own."""
    assert compose_cfg("dataset=synthetic_imagenet").ldm.sampling.controlnet_scale == 1.0
    assert compose_cfg("dataset=synthetic_imagenet", "ldm=frozen_regional").ldm.sampling.controlnet_scale == 1.0
    assert (
        compose_cfg("dataset=synthetic_imagenet", "ldm.sampling.controlnet_scale=1.5").ldm.sampling.controlnet_scale
        == 1.5
    )
    assert compose_cfg("dataset=synthetic_things").ldm.sampling.controlnet_scale == 1.5
    assert compose_cfg().ldm.sampling.controlnet_scale == 1.5


def test_an_encoder_with_no_objective_is_refused_unless_it_aligns(compose_cfg):
    """Global-only by masked recovery (ablation=global_mae) on an encoder without it trains nothing: refused with
    what to choose instead; with an alignment (the zero-shot preset) the contrastive term trains it, as NICE's."""
    from regionaldiff.errors import ConfigError
    from regionaldiff.validation import validate

    with pytest.raises(ConfigError, match="nothing to train.*ablation=global_cls"):
        validate(compose_cfg("dataset=synthetic_imagenet", "ablation=global_mae"))
    cfg = compose_cfg("dataset=synthetic_things", "encoder=shallow", "ablation=global_mae")
    assert cfg.encoder.w_mae == cfg.encoder.w_cls == cfg.encoder.w_region == 0 and cfg.encoder.align is not None
    validate(cfg)
