"""THINGS-EEG2 from files in the official formats (written by tests/official_formats.py)."""

from __future__ import annotations

import re

import hydra
import numpy as np
import pytest
import torch

from official_formats import THINGS63, write_things_eeg2, write_things_raw
from regionaldiff.data.images import ImageFileError
from regionaldiff.data.mvnn import RawConfig, noise_covariance, whitener
from regionaldiff.data.safe_load import DataFormatError, UnsafeFileError
from regionaldiff.data.things_eeg2 import ThingsEEG2DataModule


@pytest.fixture
def fx(tmp_path):
    return write_things_eeg2(tmp_path / "things")


def make(fx, tmp_path, **kw):
    kw.setdefault("image_size", 16)
    kw.setdefault("batch_size", 4)
    kw.setdefault("subjects", [1, 2])
    kw.setdefault("val_fraction", 0.25)
    return ThingsEEG2DataModule(root=str(fx.root), cache_dir=str(tmp_path / "cache"), **kw)


def concepts_of(dm, split):
    return {dm.class_names[i] for i in np.unique(dm.get_split(split).labels)}


def test_hydra_config_and_contract(fx, compose_cfg):
    cfg = compose_cfg(
        "dataset=things_eeg2",
        f"dataset.root={fx.root}",
        "dataset.subjects=[1,2]",
        "dataset.image_size=16",
        "dataset.val_fraction=0.25",
        "dataset.batch_size=4",
    )
    dm = hydra.utils.instantiate(cfg.dataset)
    dm.setup("fit")
    assert (dm.n_chans, dm.n_times, dm.sfreq) == (17, 100, 100.0) and dm.ch_names[:3] == ["O1", "Oz", "O2"]
    # labels: training concepts first, then test concepts (names without the numeric prefix)
    assert dm.class_names == ["aardvark", "abacus", "accordion", "acorn", "aircraft_carrier", "antelope"]
    sizes = {s: len(dm.get_split(s)) for s in ("train", "val", "test")}
    assert sizes == {"train": 12, "val": 4, "test": 4}  # averaged repetitions; 1 of 4 concepts held out; 2 subjects
    assert concepts_of(dm, "test") == {"aircraft_carrier", "antelope"}
    assert not concepts_of(dm, "val") & concepts_of(dm, "train")
    assert dm.leak_counts["concepts_train_test"] == 0 and dm.leak_counts["train_test"] == 0
    batch = next(iter(dm.train_dataloader()))
    assert batch["eeg"].shape[1:] == (17, 100) and batch["eeg"].dtype == torch.float32
    assert batch["image"].shape[1:] == (3, 16, 16) and set(batch["subject"].tolist()) <= {1, 2}
    # values: the average of the file's repetitions
    data = np.load(fx.root / "preprocessed_data" / "sub-01" / "preprocessed_eeg_test.npy", allow_pickle=True).item()
    test = dm.get_split("test")
    np.testing.assert_allclose(test.eeg[0], data["preprocessed_eeg_data"][0].mean(axis=0), rtol=1e-5, atol=1e-6)
    assert test.image_ids[0] == "aircraft_carrier_06s" and test.labels[0] == 4


def test_repetitions_and_loso(fx, tmp_path):
    dm = make(fx, tmp_path, train_repetitions="separate", test_repetitions="separate", leave_out_subject=2)
    dm.setup()
    assert len(dm.get_split("train")) == 6 * 4 and len(dm.get_split("val")) == 2 * 4  # subject 1 only
    assert len(dm.get_split("test")) == 2 * 5 and set(dm.get_split("test").subjects.tolist()) == {2}
    assert set(dm.get_split("train").subjects.tolist()) == {1}
    assert dm.run_tags["data.test_subjects"] == "2"
    with pytest.raises(ValueError, match="leave_out_subject"):
        make(fx, tmp_path, subjects=[1], leave_out_subject=1)


def test_val_by_images(fx, tmp_path):
    dm = make(fx, tmp_path, val_holdout="images", val_fraction=0.25, subjects=[1])
    dm.setup()
    assert len(dm.get_split("val")) == 2 and len(dm.get_split("train")) == 6
    assert not set(dm.get_split("val").image_ids) & set(dm.get_split("train").image_ids)
    assert dm.leak_counts["concepts_train_test"] == 0


def test_63_channel_250hz_variant(tmp_path):
    fx = write_things_eeg2(tmp_path / "t63", subjects=(1,), variant="63ch", eeg_dir="preprocessed_250hz")
    dm = make(fx, tmp_path, subjects=[1], eeg_dir="preprocessed_250hz")
    assert (dm.n_chans, dm.n_times, dm.sfreq) == (63, 248, 250.0)  # 250 samples cut to a multiple of 4
    window = make(
        fx, tmp_path, subjects=[1], eeg_dir="preprocessed_250hz", tmin=0.0, tmax=0.8, channels=["O1", "Oz", "O2"]
    )
    assert (window.n_chans, window.n_times) == (3, 200) and window.ch_names == ["O1", "Oz", "O2"]
    with pytest.raises(ValueError, match=r"dataset.channels: \['Xz'\]"):
        make(fx, tmp_path, subjects=[1], eeg_dir="preprocessed_250hz", channels=["Xz"]).setup()


def test_concept_leak_raises(tmp_path):
    fx = write_things_eeg2(tmp_path / "leaky", test_overlap=True)
    with pytest.raises(ValueError, match=r"Concept leak.*aardvark"):
        make(fx, tmp_path).setup("test")


def test_nonfinite_repetitions(tmp_path):
    fx = write_things_eeg2(tmp_path / "nan", nan_at=(1, 2, 1))
    with pytest.raises(DataFormatError, match=r"NaN or Inf.*\[0, 2, 1\].*on_bad_trial=drop"):
        make(fx, tmp_path, on_bad_trial="fail").setup()
    avg = make(fx, tmp_path, subjects=[1])
    avg.setup()
    assert avg.data_report["n_nonfinite_reps_sub01"] == 1 and all(
        np.isfinite(avg.get_split(s).eeg[i]).all() for s in ("train", "val") for i in range(len(avg.get_split(s)))
    )
    sep = make(fx, tmp_path, subjects=[1], train_repetitions="separate")
    sep.setup()
    assert sep.data_report["n_train_dropped_nonfinite"] + sep.data_report["n_val_dropped_nonfinite"] == 1


def test_bad_files(fx, tmp_path):
    path = fx.root / "preprocessed_data" / "sub-01" / "preprocessed_eeg_training.npy"
    good = np.load(path, allow_pickle=True).item()
    np.save(path, {**good, "preprocessed_eeg_data": good["preprocessed_eeg_data"][:5]})
    with pytest.raises(
        DataFormatError,
        match=r"preprocessed_eeg_training\.npy: field 'preprocessed_eeg_data' has shape \(5, 4, 17, 100\); expected \[8, \*, \*, \*\]",
    ):
        make(fx, tmp_path).setup()
    np.save(path, {**good, "ch_names": good["ch_names"][:3]})
    with pytest.raises(DataFormatError, match="ch_names has 3 names but preprocessed_eeg_data has 17 channels"):
        make(fx, tmp_path).setup()
    np.save(path, {"preprocessed_eeg_data": good["preprocessed_eeg_data"]})
    with pytest.raises(DataFormatError, match=r"lacks the key\(s\) \['ch_names', 'times'\]"):
        make(fx, tmp_path).setup()

    class Payload:
        def __reduce__(self):
            return (print, ("code ran",))

    np.save(path, {"preprocessed_eeg_data": Payload()})
    with pytest.raises(UnsafeFileError, match="builtins.print"):
        make(fx, tmp_path).setup()
    with pytest.raises(FileNotFoundError, match="sub-03"):
        make(fx, tmp_path, subjects=[3]).setup()
    np.save(fx.root / "image_set" / "image_metadata.npy", {"train_img_files": ["a.jpg"]})
    with pytest.raises(DataFormatError, match=r"image_metadata\.npy.*lacks the key"):
        make(fx, tmp_path).setup()


def test_missing_image(fx, tmp_path):
    (fx.root / "image_set" / "training_images" / fx.train_concepts[0] / fx.train_files[0]).unlink()
    with pytest.raises(ImageFileError, match="aardvark_01b: missing file"):
        make(fx, tmp_path, on_missing_image="fail").setup()
    dm = make(fx, tmp_path)
    dm.setup()
    assert dm.data_report["n_skipped_images"] == 1 and dm.data_report["n_skipped_trials_missing_image"] == 2


def test_mvnn_whitens():
    rng = np.random.default_rng(0)
    mixing = rng.normal(size=(5, 5)) + 2 * np.eye(5)
    conditions = {c: np.einsum("cd,rdt->rct", mixing, rng.normal(size=(200, 5, 8))) for c in range(6)}
    w = whitener(noise_covariance(conditions, "time"))
    whitened = {c: np.einsum("rct,cd->rdt", x, w) for c, x in conditions.items()}

    def max_corr(sigma):
        d = np.sqrt(np.diag(sigma))
        return np.abs(sigma / d[:, None] / d[None, :] - np.eye(len(d))).max()

    assert max_corr(noise_covariance(conditions, "time")) > 0.4
    assert max_corr(noise_covariance(whitened, "time")) < 0.2  # Ledoit-Wolf shrinkage leaves a little
    with pytest.raises(ValueError, match="unknown key"):
        RawConfig.from_mapping({"sfreq": 100, "notch": 50})
    with pytest.raises(ValueError, match="dataset.raw.mvnn"):
        RawConfig.from_mapping({"mvnn": "test"})


def test_raw_files_with_mne(fx, tmp_path):
    write_things_raw(fx.root, subject=1)
    raw = {"sessions": [1, 2], "mvnn_dim": "epochs"}
    dm = make(
        fx, tmp_path, subjects=[1], source="raw", raw=raw, train_repetitions="separate", test_repetitions="separate"
    )
    dm.setup()
    assert (dm.n_chans, dm.n_times, dm.sfreq) == (17, 100, 100.0)  # official 17 channels, -0.2..0.8 s at 100 Hz
    assert dm.ch_names == [c for c in THINGS63 if re.match("^O *|^P *", c)] and len(dm.ch_names) == 17
    # 2 sessions x 2 repetitions of each training image, 2 x 3 of each test image (targets rejected)
    assert len(dm.get_split("train")) + len(dm.get_split("val")) == 8 * 4 and len(dm.get_split("test")) == 2 * 6
    assert dm.run_tags["data.mvnn"] == "fitted on the training partition only"
    trans = make(fx, tmp_path, subjects=[1], source="raw", raw={**raw, "mvnn": "transductive"})
    trans.setup()
    assert trans.run_tags["data.mvnn"].startswith("TRANSDUCTIVE")
    assert not np.allclose(trans.get_split("test").eeg[0], dm.get_split("test").eeg[:6].mean(axis=0))
