"""Metric arithmetic on hand-built inputs with known answers."""

import numpy as np
import pytest

from regionaldiff.artifacts import ArtifactStore
from regionaldiff.data.base import EEGDataModule, EEGSplit
from regionaldiff.evaluation.image_metrics import pixcorr, ssim
from regionaldiff.evaluation.known_truth import dominant_class, region_and_class_metrics
from regionaldiff.evaluation.region import mean_iou
from regionaldiff.evaluation.suite import evaluate_images


def images(n=4, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 16, 16, 3), dtype=np.uint8)


def test_identical_images_score_one():
    x = images()
    assert ssim(x, x, resolution=16) == pytest.approx(1.0)
    assert pixcorr(x, x, resolution=16) == pytest.approx(1.0)


def test_unrelated_images_score_near_zero_and_inverted_negative():
    x, y = images(seed=0), images(seed=1)
    assert abs(pixcorr(x, y, resolution=16)) < 0.1
    assert ssim(x, y, resolution=16) < 0.2
    assert pixcorr(x, 255 - x, resolution=16) == pytest.approx(-1.0)


def test_mean_iou_by_hand():
    target = np.array([[[0, 1, 1], [0, 2, 2]]])
    pred = np.array([[[0, 1, 2], [0, 2, 2]]])
    # label 1: I=1, U=2 -> 0.5 ; label 2: I=2, U=3 -> 2/3 ; background excluded
    assert mean_iou(pred, target, num_labels=3) == pytest.approx((0.5 + 2 / 3) / 2)
    # background: I=2, U=2 -> 1
    assert mean_iou(pred, target, num_labels=3, include_background=True) == pytest.approx((1 + 0.5 + 2 / 3) / 3)
    assert mean_iou(target, target, num_labels=3) == 1.0


def test_mean_iou_rejects_out_of_range_labels():
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        mean_iou(np.array([3]), np.array([0]), num_labels=3)


def test_suite_averages_samples_and_skips_unknown_metrics_with_reason():
    x = images()
    generated = np.stack([x, 255 - x], axis=1)  # sample 0 identical (1), sample 1 inverted (-1)
    result = evaluate_images(generated, x, cfg={"metrics": ["pixcorr", "fid"], "resolution": 16})
    assert result.metrics["eval/pixcorr"] == pytest.approx(0.0, abs=1e-6)
    assert "eval/fid" in result.skipped and "eval/fid" not in result.metrics


def test_dominant_class():
    maps = np.array([[[0, 2, 2], [1, 0, 0]], [[0, 0, 0], [0, 0, 0]]])
    assert dominant_class(maps, num_classes=2).tolist() == [1, -1]


def test_eeg_top1_is_scored_only_for_a_trained_class_head():
    from regionaldiff.steps.evaluate import eeg_top1

    arrays = {"eeg_pred": np.array([0, 1, 2, 2]), "labels": np.array([0, 1, 2, 0])}
    assert eeg_top1(arrays, w_cls=1.0) == ({"eval/eeg_top1": 0.75}, {})
    metrics, skipped = eeg_top1(arrays, w_cls=0.0)
    assert metrics == {} and "encoder.w_cls=0" in skipped["eval/eeg_top1"]
    # unseen concepts are the reason whatever the head: the zero-shot presets set w_cls=0 too
    for w_cls in (0.0, 1.0):
        assert eeg_top1(arrays, w_cls=w_cls, unseen="3 of the 3 classes never appear") == (
            {},
            {"eval/eeg_top1": "3 of the 3 classes never appear"},
        )


def test_grid_shows_the_maps_that_conditioned_generation():
    from regionaldiff.steps.generate import grid_maps

    probs = np.zeros((3, 4, 2, 2), dtype=np.float16)
    probs[:, 2] = 1.0  # every cell predicted as label 2
    reference = np.ones((3, 8, 8), dtype=np.int16)
    arrays = {"region_probs": probs, "region_maps": reference}
    maps, title = grid_maps(arrays, "predicted", 2, 8)
    assert title == "map from EEG" and maps.shape == (2, 8, 8) and (maps == 2).all()
    maps, title = grid_maps(arrays, "oracle", 2, 8)
    assert title == "true map (oracle)" and maps.shape == (2, 8, 8) and (maps == 1).all()
    assert grid_maps({"region_maps": reference[:0]}, "oracle", 2, 8) == (None, "")


class _TruthDataModule(EEGDataModule):
    """Six 16 px stimuli of two classes (a square of colour ``label``), with or without their true maps."""

    name = "tiny_truth"
    num_classes = 2

    def __init__(self, with_truth: bool, region_labels: str = "class") -> None:
        super().__init__(batch_size=4, image_size=16, region_labels=region_labels)
        self.with_truth = with_truth
        self.maps = {}
        self.images = {}
        for i in range(6):
            label = i % 2
            grid = np.zeros((16, 16), np.int64)
            grid[2 + i : 10 + i, 4:12] = label + 1
            image = np.zeros((16, 16, 3), np.uint8)
            image[..., label] = np.where(grid > 0, 255, 0)
            self.maps[f"s{i}"], self.images[f"s{i}"] = grid, image

    def build_split(self, split: str) -> EEGSplit:
        ids = list(self.images)
        return EEGSplit(
            eeg=np.zeros((len(ids), 2, 8), np.float32),
            labels=np.array([i % 2 for i in range(len(ids))]),
            image_ids=ids,
            subjects=np.ones(len(ids), np.int64),
            images=self.images,
        )

    def ground_truth_region_maps(self):
        return self.maps if self.with_truth else None


def test_known_truth_metrics_take_explicit_arguments_and_keep_the_judge(tmp_path):
    store = ArtifactStore(tmp_path)
    key = {"name": "tiny_truth"}
    dm = _TruthDataModule(with_truth=True)
    ids = list(dm.images)
    reference = np.stack([dm.images[i] for i in ids])
    probs = np.stack([np.eye(3)[dm.maps[i][::4, ::4]].transpose(2, 0, 1) for i in ids])
    arrays = {
        "generated": reference[:, None],
        "reference": reference,
        "labels": np.array([i % 2 for i in range(len(ids))]),
        "image_ids": np.array(ids),
        "region_probs": probs,
        "region_maps": np.stack([dm.maps[i] for i in ids]),
    }
    metrics, skipped = region_and_class_metrics(arrays, dm, store, key)
    assert not skipped
    assert set(metrics) == {
        "eval/region_miou",
        "eval/recon_class_acc",
        "eval/recon_region_miou",
        "eval/judge_stimulus_acc",
        "eval/judge_stimulus_miou",
    }
    # reconstructions identical to the stimuli score what the judge scores on the stimuli
    assert metrics["eval/recon_class_acc"] == metrics["eval/judge_stimulus_acc"]
    (judge_dir,) = (tmp_path / "judge").iterdir()
    assert (judge_dir / "DONE").is_file()
    again, _ = region_and_class_metrics(arrays, dm, store, key)  # the kept judge: the same numbers
    assert again == pytest.approx(metrics)

    without = {k: v for k, v in arrays.items() if k not in ("region_probs", "region_maps")}
    metrics, skipped = region_and_class_metrics(without, _TruthDataModule(with_truth=False), store, key)
    assert metrics == {} and "eval/region_miou" in skipped
    assert "tiny_truth" in skipped["eval/recon_class_acc"]


def test_known_truth_metrics_on_layout_labels_score_the_layout_and_skip_the_classes(tmp_path):
    """Zero-shot concepts (dataset.region_labels=layout): the judge learns object / background; the class scores,
    which would name concepts the judge never saw, are skipped with the reason."""
    dm = _TruthDataModule(with_truth=True, region_labels="layout")
    ids = list(dm.images)
    reference = np.stack([dm.images[i] for i in ids])
    layouts = np.stack([(dm.maps[i] > 0).astype(np.int64) for i in ids])
    arrays = {
        "generated": np.stack([reference, np.zeros_like(reference)], axis=1),  # sample 2: an empty image
        "reference": reference,
        "labels": np.array([i % 2 for i in range(len(ids))]),
        "image_ids": np.array(ids),
        "region_probs": np.stack([np.eye(2)[m[::4, ::4]].transpose(2, 0, 1) for m in layouts]),
        "region_maps": layouts,
    }
    metrics, skipped = region_and_class_metrics(arrays, dm, ArtifactStore(tmp_path), {"name": "tiny_layout"})
    assert set(skipped) == {"eval/recon_class_acc", "eval/judge_stimulus_acc"}
    assert "region_labels=layout" in skipped["eval/recon_class_acc"]
    assert metrics["eval/judge_stimulus_miou"] > 0.6  # all background would score about 0.38
    # the mean of a perfect sample and an empty one: below the judge's own score
    assert metrics["eval/recon_region_miou"] < metrics["eval/judge_stimulus_miou"] - 0.1
    (judge_dir,) = (tmp_path / "judge").iterdir()
    assert '"layout"' in (judge_dir / "key.json").read_text()
