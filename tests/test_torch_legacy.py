"""The streaming legacy-torch reader gives what torch.load gives, reads nothing it is not asked for, runs no code."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from regionaldiff.data.safe_load import DataFormatError, UnsafeFileError, load_torch_streamed
from regionaldiff.data.torch_legacy import LazyTensor, is_legacy_torch_file


class Payload:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_lazy_tensors_equal_torch_load(tmp_path):
    base = torch.arange(60, dtype=torch.float32).reshape(6, 10)
    data = {
        "dataset": [
            {"eeg": base, "image": 3, "label": torch.tensor(2), "subject": 1},
            {"eeg": base[2:4], "image": 4, "label": 1, "subject": 2},  # a view with an offset
            {"eeg": base.t(), "image": 5, "label": 0, "subject": 2},  # non-contiguous
        ],
        "labels": ["n1", "n2", "n3"],
        "images": ["a", "b", "c", "d", "e", "f"],
        "ints": torch.arange(5, dtype=torch.int64),
        "half": torch.ones(3, dtype=torch.float16),
    }
    path = tmp_path / "legacy.pth"
    torch.save(data, path, _use_new_zipfile_serialization=False)
    assert is_legacy_torch_file(path)
    expected = torch.load(path, weights_only=True)
    lazy, close = load_torch_streamed(path, what="test file")
    try:
        for got, want in zip(lazy["dataset"], expected["dataset"]):
            assert isinstance(got["eeg"], LazyTensor) and got["eeg"].shape == tuple(want["eeg"].shape)
            np.testing.assert_array_equal(np.asarray(got["eeg"]), want["eeg"].numpy())
        assert lazy["dataset"][0]["label"].item() == 2 and lazy["dataset"][1]["label"] == 1
        np.testing.assert_array_equal(np.asarray(lazy["ints"]), np.arange(5))
        assert np.asarray(lazy["half"]).dtype == np.float16
        assert lazy["labels"] == ["n1", "n2", "n3"]
    finally:
        close()


def test_zip_files_still_load(tmp_path):
    path = tmp_path / "zip.pth"
    torch.save({"x": torch.ones(2, 3)}, path)
    data, close = load_torch_streamed(path)
    assert tuple(data["x"].shape) == (2, 3)
    close()


def test_code_in_a_legacy_file_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"x": Payload(marker), "t": torch.ones(2)}, path, _use_new_zipfile_serialization=False)
    with pytest.raises(UnsafeFileError, match="evil.pth"):
        load_torch_streamed(path)
    assert not marker.exists()


def test_truncated_legacy_file_is_a_format_error(tmp_path):
    path = tmp_path / "cut.pth"
    torch.save({"x": torch.ones(1000)}, path, _use_new_zipfile_serialization=False)
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataFormatError, match="truncated"):
        load_torch_streamed(path)


def test_legacy_file_with_a_newer_pickle_protocol(tmp_path):
    path = tmp_path / "p4.pth"
    torch.save({"x": torch.arange(6.0).reshape(2, 3)}, path, _use_new_zipfile_serialization=False, pickle_protocol=4)
    assert is_legacy_torch_file(path)
    data, close = load_torch_streamed(path)
    np.testing.assert_array_equal(np.asarray(data["x"]), np.arange(6.0).reshape(2, 3))
    close()
