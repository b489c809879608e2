"""EEG-ImageNet from files in the official format (written by tests/official_formats.py)."""

from __future__ import annotations

import hydra
import numpy as np
import pytest
import torch
from scipy.interpolate import interp1d

from official_formats import write_corrupt_image, write_eeg_imagenet
from regionaldiff.data.eeg_imagenet import BLOCK_DESIGN_WARNING, EEGImageNetDataModule
from regionaldiff.data.images import ImageFileError
from regionaldiff.data.safe_load import DataFormatError, UnsafeFileError

# trial 0 too short, trial 5 too long (both dropped by 450 <= T <= 600); trial 7 too short for the 20:460 crop
LENGTHS = {0: 430, 5: 620, 7: 455}


@pytest.fixture
def fixture(tmp_path):
    return write_eeg_imagenet(tmp_path / "eeg_imagenet", lengths=LENGTHS)


def make(fx, tmp_path, **kw):
    kw.setdefault("image_size", 16)
    kw.setdefault("batch_size", 4)
    return EEGImageNetDataModule(root=str(fx.root), cache_dir=str(tmp_path / "cache"), **kw)


def test_hydra_config_and_contract(fixture, compose_cfg):
    cfg = compose_cfg(
        "dataset=eeg_imagenet", f"dataset.root={fixture.root}", "dataset.image_size=16", "dataset.batch_size=4"
    )
    dm = hydra.utils.instantiate(cfg.dataset)
    assert isinstance(dm, EEGImageNetDataModule)
    dm.setup("fit")
    assert (dm.n_chans, dm.n_times, dm.sfreq) == (128, 440, 1000.0) and dm.n_times % 4 == 0
    assert dm.class_names == fixture.labels and dm.num_classes == 3 and len(dm.ch_names) == 128
    batch = next(iter(dm.train_dataloader()))
    assert batch["eeg"].dtype == torch.float32 and batch["eeg"].shape[1:] == (128, 440)
    assert batch["image"].shape[1:] == (3, 16, 16) and batch["image"].min() >= -1 and batch["image"].max() <= 1
    assert batch["label"].dtype == torch.int64 and batch["subject"].dtype == torch.int64
    assert all(i in fixture.images for i in batch["image_id"])
    assert dm.run_tags["data.warning"] == BLOCK_DESIGN_WARNING and "Li et al. 2020" in BLOCK_DESIGN_WARNING
    assert dm.leak_counts == {"train_test": 0, "val_test": 0, "train_val": 0}
    report = dm.data_report
    assert (
        report["n_trials_file"] == 18 and report["n_dropped_length"] == 2 and report["n_dropped_short_for_crop"] == 1
    )
    sizes = {s: len(dm.get_split(s)) for s in ("train", "val", "test")}
    # 18 trials: 6 test, 6 val, 6 train; trial 0 (test), 5 (train), 7 (val) are dropped
    assert sizes == {"train": 5, "val": 5, "test": 5}
    assert dm.describe()["n_times"] == 440


def test_values_crop_and_resampling(fixture, tmp_path):
    data = torch.load(fixture.eeg_file, weights_only=True)
    dm = make(fixture, tmp_path)
    dm.setup()
    split = dm.get_split("train")
    i = int(split.extras["file_index"][0])
    expected = data["dataset"][i]["eeg"].numpy()[:, 20:460]
    np.testing.assert_allclose(split.eeg[0], expected, rtol=1e-6)
    assert split.labels[0] == data["dataset"][i]["label"] and split.subjects[0] == data["dataset"][i]["subject"]
    assert split.image_ids[0] == data["images"][data["dataset"][i]["image"]]

    lin = make(fixture, tmp_path, resample=512)
    lin.setup()
    s = lin.get_split("train")
    j = int(s.extras["file_index"][0])
    x = data["dataset"][j]["eeg"].numpy()[:, 20:460].astype(np.float64)
    reference = interp1d(np.linspace(0, 1, 440), x)(np.linspace(0, 1, 512))  # DreamDiffusion's interpolation
    np.testing.assert_allclose(s.eeg[0], reference, rtol=1e-5, atol=1e-5)
    assert lin.n_times == 512 and lin.sfreq == pytest.approx(1000 * 512 / 440)
    fft = make(fixture, tmp_path, resample=512, resample_method="fft", l_freq=5.0, h_freq=95.0)
    fft.setup()
    assert fft.n_times == 512 and np.isfinite(fft.get_split("test").eeg[0]).all()


def test_subject_filter_and_split_files(fixture, tmp_path):
    single = make(fixture, tmp_path, subject=1, split_file="block_splits_by_image_single.pth")
    single.setup()
    assert all((single.get_split(s).subjects == 1).all() for s in ("train", "val", "test"))
    assert len(single.get_split("test")) == 2  # subject 1's 3 test trials minus trial 0 (too short)
    with pytest.raises(DataFormatError, match="split_index_base=full"):
        make(fixture, tmp_path, subject=2).setup()
    full = make(fixture, tmp_path, subject=2, split_index_base="full")
    full.setup()
    assert (full.get_split("train").subjects == 2).all() and len(full.get_split("test")) == 3
    with pytest.raises(ValueError, match="no trial of this subject"):
        make(fixture, tmp_path, subject=9, split_index_base="full").setup()
    with pytest.raises(ValueError, match="split_num=5"):
        make(fixture, tmp_path, split_num=5).setup()


def test_cache_reuse_and_rebuild(fixture, tmp_path):
    first = make(fixture, tmp_path)
    first.setup()
    assert first.data_report["cache_hit"] == 0.0
    again = make(fixture, tmp_path)
    again.setup()
    assert again.data_report["cache_hit"] == 1.0
    np.testing.assert_array_equal(again.get_split("train").eeg[0], first.get_split("train").eeg[0])
    write_eeg_imagenet(fixture.root, seed=1, lengths=LENGTHS)  # new content in the same files
    changed = make(fixture, tmp_path)
    changed.setup()
    assert changed.data_report["cache_hit"] == 0.0
    assert not np.allclose(changed.get_split("train").eeg[0], first.get_split("train").eeg[0])


def test_missing_and_corrupt_images(fixture, tmp_path):
    missing, corrupt = fixture.images[2], fixture.images[4]
    (fixture.root / "imageNet_images" / missing.split("_")[0] / f"{missing}.JPEG").unlink()
    write_corrupt_image(fixture.root / "imageNet_images" / corrupt.split("_")[0] / f"{corrupt}.JPEG")
    with pytest.raises(
        ImageFileError, match=rf"(?s){missing}: missing file.*{corrupt}: cannot decode.*on_missing_image=skip"
    ):
        make(fixture, tmp_path, on_missing_image="fail").setup()
    dm = make(fixture, tmp_path, on_missing_image="skip")
    dm.setup()
    assert dm.data_report["n_skipped_images"] == 2
    # each image is seen once per subject (2 subjects) -> 4 trials, all still kept by the length filters
    assert dm.data_report["n_skipped_trials_missing_image"] == 4
    assert missing in dm.run_tags["data.skipped_images"] and corrupt in dm.run_tags["data.skipped_images"]
    assert not {missing, corrupt} & {i for s in ("train", "val", "test") for i in dm.get_split(s).image_ids}
    next(iter(dm.train_dataloader()))


def test_nonfinite_trials(tmp_path):
    fx = write_eeg_imagenet(tmp_path / "d", nan_trials=(2,))
    with pytest.raises(DataFormatError, match=r"NaN or Inf samples \(file indices \[2\]\).*on_bad_trial=drop"):
        make(fx, tmp_path, on_bad_trial="fail").setup()
    dm = make(fx, tmp_path)
    dm.setup()
    assert dm.data_report["n_nonfinite_trials"] == 1 and dm.data_report["n_train_dropped_nonfinite"] == 1
    assert 2 not in set(dm.get_split("train").extras["file_index"].tolist())


def test_bad_files(fixture, tmp_path):
    path = fixture.eeg_file
    torch.save({"dataset": [], "labels": ["n1"]}, path)
    with pytest.raises(DataFormatError, match=r"eeg_5_95_std\.pth.*lacks the key\(s\) \['images'\]"):
        make(fixture, tmp_path).setup()
    trial = {"eeg": torch.zeros(500), "image": 0, "label": 0, "subject": 1}
    torch.save({"dataset": [trial], "labels": ["n1"], "images": ["n1_1"]}, path)
    with pytest.raises(DataFormatError, match=r"dataset\[0\]\['eeg'\] has shape \(500,\); expected a 2-D Tensor"):
        make(fixture, tmp_path).setup()
    trial = {"eeg": torch.zeros(128, 500), "image": 0, "label": 3, "subject": 1}
    torch.save({"dataset": [trial], "labels": ["n1"], "images": ["n1_1"]}, path)
    with pytest.raises(DataFormatError, match="trial labels must index 'labels'"):
        make(fixture, tmp_path).setup()

    class Payload:
        def __reduce__(self):
            return (print, ("code ran",))

    torch.save({"dataset": [Payload()], "labels": [], "images": []}, path)
    with pytest.raises(UnsafeFileError, match="eeg_5_95_std.pth"):
        make(fixture, tmp_path).setup()
    with pytest.raises(FileNotFoundError, match="nothere.pth"):
        make(fixture, tmp_path, eeg_file="nothere.pth").setup()


def test_stimulus_leak_raises(fixture, tmp_path):
    splits = dict(fixture.splits_all)
    splits["test"] = splits["test"] + splits["train"][:1]
    torch.save({"splits": [splits]}, fixture.split_all)
    with pytest.raises(ValueError, match="Stimulus leak"):
        make(fixture, tmp_path).setup("fit")  # checked on every setup, whatever the stage


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"crop": [460, 20]}, "dataset.crop"),
        ({"resample_method": "cubic"}, "resample_method"),
        ({"on_missing_image": "ignore"}, "on_missing_image"),
        ({"split_index_base": "x"}, "split_index_base"),
        ({"n_times_multiple": 0}, "n_times_multiple"),
    ],
)
def test_config_errors(tmp_path, kw, match):
    with pytest.raises(ValueError, match=match):
        EEGImageNetDataModule(root=str(tmp_path), **kw)
