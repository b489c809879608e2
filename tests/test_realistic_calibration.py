"""The calibration of the realistic presets (``benchmarks/analyses/realistic_calibration.py``) on tiny data: it runs
the pipeline's own ``prepare`` and ``pretrain`` and scores what docs/realistic.md's tables report."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from conftest import TINY_THINGS

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "analyses" / "realistic_calibration.py"


@pytest.fixture(scope="module")
def calibration() -> ModuleType:
    spec = importlib.util.spec_from_file_location("realistic_calibration", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_a_zero_shot_point_scores_the_retrieval_curve_and_the_layout(calibration, tmp_path):
    row = calibration.calibrate_point(
        ["dataset=synthetic_things", *TINY_THINGS, "eval.retrieval.repetitions=[1,3,6]", "encoder.max_epochs=1"],
        root=tmp_path,
    )
    assert row["chance"] == pytest.approx(1 / 8)  # 8 unseen test concepts
    for key in ("retrieval_top1", "retrieval_top5", "retrieval_top1_reps1", "retrieval_top1_reps6"):
        assert 0.0 <= row[key] <= 1.0, key
    assert row["retrieval_top5"] >= row["retrieval_top1"]
    assert 0.0 <= row["region_miou"] <= 1.0 and "eeg_top1" not in row  # unseen concepts: no class score
    assert (tmp_path / "outputs" / "artifacts" / "pretrain").is_dir()  # where a full run finds the encoder


def test_a_closed_set_point_scores_the_class_head_on_test_and_validation(calibration, tmp_path):
    row = calibration.calibrate_point(
        ["dataset=synthetic_imagenet", "encoder=shallow", "encoder.max_epochs=1", "dataset.n_concepts=6"]
        + ["dataset.images_per_concept=4", "dataset.val_images_per_concept=1", "dataset.test_images_per_concept=2"],
        root=tmp_path,
    )
    assert row["chance"] == pytest.approx(1 / 6)
    assert row["eeg_top1"] in {k / 12 for k in range(13)}  # 6 classes x 2 test trials
    assert row["val_eeg_top1"] in {k / 6 for k in range(7)}
    assert "retrieval_top1" not in row and 0.0 <= row["region_miou"] <= 1.0
