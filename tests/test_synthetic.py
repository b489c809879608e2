"""The synthetic benchmark: data contract, determinism, known truth, and that it is neither trivial nor impossible."""

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from regionaldiff.data.synthetic import SyntheticDataModule
from regionaldiff.data.synthetic.datamodule import class_shares, retinotopic_coverage
from regionaldiff.data.synthetic.forward import RETINO_GRID, build_head_model
from regionaldiff.data.synthetic.scenes import CLASS_STYLES, render_scene, shape_mask

SMALL = dict(n_train=40, n_val=8, n_test=8, image_size=32)


def test_batches_follow_the_data_contract():
    dm = SyntheticDataModule(**SMALL, batch_size=4)
    dm.set_region_maps(dm.ground_truth_region_maps())
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["eeg"].dtype == torch.float32 and batch["eeg"].shape == (4, dm.n_chans, dm.n_times) == (4, 17, 100)
    assert batch["image"].dtype == torch.float32 and batch["image"].shape == (4, 3, 32, 32)
    assert batch["image"].min() >= -1 and batch["image"].max() <= 1
    assert batch["label"].dtype == torch.int64 and batch["subject"].dtype == torch.int64
    assert batch["region_map"].dtype == torch.int64 and batch["region_map"].shape == (4, 32, 32)
    assert isinstance(batch["image_id"], list) and batch["image_id"][0].startswith("syn_")
    assert dm.ch_names[:3] == ["O1", "Oz", "O2"] and dm.sfreq == 100.0 and dm.num_classes == 5
    assert dm.class_names[0] == "red_disc"


def test_deterministic_from_seed_and_seeds_differ():
    a = SyntheticDataModule(**SMALL, seed=3).get_split("train")
    b = SyntheticDataModule(**SMALL, seed=3).get_split("train")
    c = SyntheticDataModule(**SMALL, seed=4).get_split("train")
    assert np.array_equal(a.eeg, b.eeg) and a.image_ids == b.image_ids
    assert not np.allclose(a.eeg, c.eeg)


def test_region_maps_match_the_pixels_and_the_label():
    dm = SyntheticDataModule(**SMALL)
    maps = dm.ground_truth_region_maps()
    split = dm.get_split("train")
    for i, image_id in enumerate(split.image_ids[:20]):
        image, region = split.images[image_id], maps[image_id]
        for cls in np.unique(region[region > 0]) - 1:
            pixels = image[region == cls + 1].astype(int)
            colours = np.asarray(CLASS_STYLES[cls].colours)
            # every pixel of the region has one of the class's colours
            assert np.all(np.abs(pixels[:, None, :] - colours[None]).sum(-1).min(1) == 0)
        assert not np.any(np.all(image[region == 0] == np.asarray(CLASS_STYLES[0].colours[0]), axis=-1))
        counts = np.bincount(region.ravel(), minlength=6)[1:]
        assert split.labels[i] == counts.argmax()


def test_shapes_are_never_empty_and_scenes_have_objects():
    assert shape_mask("star", 0.2, 0.2, 0.3, 8).sum() >= 1
    scene = render_scene(np.random.default_rng(0), 5, 32, 1, 3)
    assert 1 <= len(scene.objects) <= 3 and (scene.region_map > 0).any()


def test_retinotopic_coverage_and_class_shares_by_hand():
    maps = np.zeros((1, 12, 12), dtype=np.uint8)
    maps[0, :2, :2] = 1  # top-left cell (2x2 px at grid 6) fully covered by class 0
    maps[0, 10:, 10:] = 2  # bottom-right cell by class 1
    maps[0, 10:, :1] = 2  # half of the bottom-left cell
    cov = retinotopic_coverage(maps, grid=6).reshape(6, 6)
    assert cov[0, 0] == 1.0 and cov[5, 5] == 1.0 and cov[5, 0] == 0.5 and cov.sum() == 2.5
    assert np.allclose(class_shares(maps, 2), [[4 / 10, 6 / 10]])


def test_splits_are_disjoint_by_image():
    dm = SyntheticDataModule(**SMALL)
    ids = {s: set(dm.get_split(s).image_ids) for s in ("train", "val", "test")}
    assert not ids["train"] & ids["test"] and not ids["val"] & ids["test"] and not ids["train"] & ids["val"]


def test_repetitions_kept_or_averaged():
    kept = SyntheticDataModule(**SMALL, n_repetitions=3, average_repetitions=False).get_split("test")
    averaged = SyntheticDataModule(**SMALL, n_repetitions=3).get_split("test")
    assert len(kept) == 3 * len(averaged) and kept.image_ids[:3] == [averaged.image_ids[0]] * 3
    # the average of the kept repetitions is the averaged trial
    assert np.allclose(kept.eeg[:3].mean(0), averaged.eeg[0], atol=1e-5)


def test_cache_round_trip(tmp_path):
    first = SyntheticDataModule(**SMALL, cache_dir=str(tmp_path)).get_split("train")
    files = list(tmp_path.glob("synthetic_*.npz"))
    assert len(files) == 1 and not list(tmp_path.glob("*.partial.npz"))
    second = SyntheticDataModule(**SMALL, cache_dir=str(tmp_path)).get_split("train")
    assert np.array_equal(first.eeg, second.eeg)
    SyntheticDataModule(**SMALL, snr=0.5, cache_dir=str(tmp_path)).get_split("train")
    assert len(list(tmp_path.glob("synthetic_*.npz"))) == 2, "another config must not reuse the cache"


@pytest.mark.parametrize("montage, n", [("things63", 63), ("biosemi128", 128)])
def test_other_montages_through_the_forward_model(montage, n):
    head = build_head_model(montage, 3, np.random.default_rng(0))
    assert len(head.ch_names) == n
    assert head.retino.shape == (n, RETINO_GRID**2) and head.category.shape == (n, 3) and head.background.shape[0] == n
    assert np.abs(head.retino).max() > 0 and np.isfinite(head.retino).all()
    dm = SyntheticDataModule(**SMALL, montage=montage)
    assert dm.n_chans == n and dm.get_split("val").eeg.shape[1] == n


def test_a_large_subject_jitter_keeps_every_source_in_the_brain():
    """dataset.subject_jitter=0.3 moved some dipoles past the brain's surface, where MNE's forward model leaves them
    out (it ended in "cannot reshape array"): they are pulled back inside it."""
    from regionaldiff.data.synthetic.forward import MIN_DIST_MM, head_sphere, source_layout

    sphere = head_sphere("things17")
    origin, radius = np.asarray(sphere["r0"], dtype=float), float(sphere["layers"][0]["rad"])
    args = (40, radius, origin, np.random.default_rng(0), "patch")
    still, _ = source_layout(*args)
    moved, _ = source_layout(*args[:3], np.random.default_rng(0), "patch", 0.3, np.random.default_rng(1))
    for group in ("retino", "category"):
        distance = np.linalg.norm(moved[group] - origin, axis=1)
        assert distance.max() <= radius - MIN_DIST_MM / 1000 and not np.allclose(moved[group], still[group])
    head = build_head_model("things17", 40, np.random.default_rng(0), "patch", 0.3, np.random.default_rng(1))
    assert head.retino.shape == (17, RETINO_GRID**2) and head.category.shape == (17, 40)
    assert np.isfinite(head.category).all() and np.abs(head.category).max() > 0


def test_retinotopy_left_field_drives_right_hemisphere():
    head = build_head_model("things17", 3, np.random.default_rng(0))
    names = head.ch_names
    g = RETINO_GRID
    left_field = np.abs(head.retino[:, [r * g for r in range(g)]]).sum(1)  # leftmost column of the visual field
    right_field = np.abs(head.retino[:, [r * g + g - 1 for r in range(g)]]).sum(1)
    assert left_field[names.index("PO8")] > left_field[names.index("PO7")]
    assert right_field[names.index("PO7")] > right_field[names.index("PO8")]


@pytest.mark.parametrize(
    "key, value",
    [("n_classes", 1), ("n_train", 0), ("snr", -1.0), ("montage", "nope"), ("min_objects", 4), ("tmax", -0.1)],
)
def test_bad_values_name_the_key(key, value):
    with pytest.raises(ValueError, match=f"dataset.{key}"):
        SyntheticDataModule(**{**SMALL, key: value})


def _decode(snr):
    dm = SyntheticDataModule(n_train=600, n_val=10, n_test=300, snr=snr)
    tr, te = dm.get_split("train"), dm.get_split("test")
    x_tr, x_te = tr.eeg.reshape(len(tr), -1), te.eeg.reshape(len(te), -1)
    cls = LogisticRegression(max_iter=2000, C=0.05).fit(x_tr, tr.labels).score(x_te, te.labels)

    def side(s):
        return (s.extras["centroid"][:, 1] > 0.5).astype(int)

    pos = LogisticRegression(max_iter=2000, C=0.05).fit(x_tr, side(tr)).score(x_te, side(te))
    chance_cls = np.bincount(te.labels).max() / len(te)
    chance_pos = max(side(te).mean(), 1 - side(te).mean())
    return cls, chance_cls, pos, chance_pos


def test_benchmark_is_learnable_but_not_trivial():
    cls, chance_cls, pos, chance_pos = _decode(snr=1.0)
    assert chance_cls + 0.2 < cls < 0.97, (cls, chance_cls)
    assert chance_pos + 0.15 < pos < 0.95, (pos, chance_pos)


def test_benchmark_is_at_chance_without_signal():
    cls, chance_cls, pos, chance_pos = _decode(snr=0.0)
    assert cls < chance_cls + 0.08, (cls, chance_cls)
    assert pos < chance_pos + 0.08, (pos, chance_pos)
