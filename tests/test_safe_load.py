"""Safe loading: torch files with weights_only, np.save'd dicts through the restricted unpickler."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from regionaldiff.data.safe_load import (
    DataFormatError,
    UnsafeFileError,
    expect_array,
    expect_keys,
    load_numpy_dict,
    load_torch,
)


class Payload:
    """Unpickling this runs ``touch <marker>``: a loader that executes it fails the test."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_numpy_dict_round_trip(tmp_path):
    data = {
        "preprocessed_eeg_data": np.zeros((2, 3, 4, 5)),
        "ch_names": ["O1", "Oz"],
        "times": np.arange(5.0),
        "sfreq": np.float64(100.0),
        "n": 3,
        "nested": {"a": (1, 2), "s": {1, 2}},
    }
    np.save(tmp_path / "d.npy", data)
    out = load_numpy_dict(tmp_path / "d.npy", required=("preprocessed_eeg_data", "ch_names", "times"))
    assert out["preprocessed_eeg_data"].shape == (2, 3, 4, 5) and out["ch_names"] == ["O1", "Oz"]
    assert out["sfreq"] == 100.0 and out["nested"]["s"] == {1, 2}


def test_numpy_dict_refuses_code(tmp_path):
    marker = tmp_path / "pwned"
    np.save(tmp_path / "evil.npy", {"x": Payload(marker)})
    with pytest.raises(UnsafeFileError, match=r"evil\.npy.*posix\.system|evil\.npy.*system"):
        load_numpy_dict(tmp_path / "evil.npy")
    assert not marker.exists()


def test_numpy_dict_bad_inputs(tmp_path):
    np.save(tmp_path / "plain.npy", np.zeros(3))
    with pytest.raises(DataFormatError, match=r"plain\.npy.*dict saved with np.save"):
        load_numpy_dict(tmp_path / "plain.npy")
    np.save(tmp_path / "list.npy", np.array([1, "a"], dtype=object))
    with pytest.raises(DataFormatError, match="list.npy"):
        load_numpy_dict(tmp_path / "list.npy")
    (tmp_path / "junk.npy").write_bytes(b"not numpy at all")
    with pytest.raises(DataFormatError, match=r"junk\.npy is not a \.npy file"):
        load_numpy_dict(tmp_path / "junk.npy")
    np.save(tmp_path / "d.npy", {"a": np.zeros(1000)})
    raw = (tmp_path / "d.npy").read_bytes()
    (tmp_path / "trunc.npy").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataFormatError, match=r"trunc\.npy.*truncated"):
        load_numpy_dict(tmp_path / "trunc.npy")
    with pytest.raises(DataFormatError, match=r"lacks the key\(s\) \['times'\]"):
        load_numpy_dict(tmp_path / "d.npy", required=("a", "times"))
    with pytest.raises(FileNotFoundError, match="missing.npy"):
        load_numpy_dict(tmp_path / "missing.npy")


@pytest.mark.parametrize("legacy", [True, False])
def test_torch_round_trip(tmp_path, legacy):
    data = {
        "dataset": [{"eeg": torch.ones(3, 4), "image": 0, "label": 1, "subject": 4}],
        "labels": ["n1"],
        "images": ["n1_2"],
    }
    torch.save(data, tmp_path / "f.pth", _use_new_zipfile_serialization=not legacy)
    out = load_torch(tmp_path / "f.pth")
    assert out["dataset"][0]["subject"] == 4 and torch.equal(out["dataset"][0]["eeg"], torch.ones(3, 4))


def test_torch_refuses_code_and_junk(tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"x": Payload(marker)}, tmp_path / "evil.pth")
    with pytest.raises(UnsafeFileError, match=r"evil\.pth.*no code from it was run"):
        load_torch(tmp_path / "evil.pth")
    assert not marker.exists()
    (tmp_path / "junk.pth").write_bytes(b"garbage" * 20)
    with pytest.raises(DataFormatError, match=r"junk\.pth is not a readable"):
        load_torch(tmp_path / "junk.pth")


def test_field_checks(tmp_path):
    with pytest.raises(DataFormatError, match=r"f\.npy: field 'x' has shape \(2, 3\); expected \[4, \*\]"):
        expect_array(np.zeros((2, 3)), tmp_path / "f.npy", "x", shape=(4, None))
    with pytest.raises(DataFormatError, match="dtype <U1"):
        expect_array(np.array(["a"]), "f", "x", ndim=1)
    assert expect_array(torch.zeros(2, 2), "f", "x", ndim=2).shape == (2, 2)
    with pytest.raises(DataFormatError, match="expected .* dict"):
        expect_keys([1], ["a"], "f", "thing")
