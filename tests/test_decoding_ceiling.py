"""The decoding-ceiling benchmark (``benchmarks/analyses/decoding_ceiling.py``) on tiny data."""

from __future__ import annotations

import csv
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import hydra
import numpy as np
import pytest

from regionaldiff.config import compose_config

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "analyses" / "decoding_ceiling.py"


@pytest.fixture(scope="module")
def ceiling() -> ModuleType:
    """The benchmark script as a module (``benchmarks`` is not a package; its package ``ceiling/`` sits beside it,
    on the path as when the script runs)."""
    if str(SCRIPT.parent) not in sys.path:
        sys.path.insert(0, str(SCRIPT.parent))
    spec = importlib.util.spec_from_file_location("decoding_ceiling", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


def test_conditions_equal_what_generate_arrays_makes(ceiling):
    """Signal + noise from the two generate_arrays calls reproduce a direct call, single-trial and averaged."""
    splits = ceiling.Splits(12, 4, 4)
    comp = ceiling.simulate("things17", splits, seed=3, n_repetitions=3, time_bin=1, verbose=False)
    for averaged in (False, True):
        cfg = compose_config(
            ["dataset.seed=3", "dataset.n_train=12", "dataset.n_val=4", "dataset.n_test=4", "dataset.n_repetitions=3"]
            + ["dataset.snr=0.5", f"dataset.average_repetitions={averaged}", "dataset.montage=things17"]
        )
        direct = hydra.utils.instantiate(cfg.dataset, cache_dir=None).generate_arrays()
        expected = direct["eeg"][:, 0]  # averaged: the one averaged trial; single: repetition 0
        np.testing.assert_allclose(ceiling.condition_eeg(comp, 0.5, averaged), expected, atol=2e-5)
        np.testing.assert_array_equal(comp.maps, direct["maps"])


def test_probes_read_the_map_at_high_snr_and_not_at_zero(ceiling, tmp_path):
    argv = ["--montages", "things17", "--snrs", "--n-train", "400", "--n-val", "100", "--n-test", "100"]
    argv += ["--epochs", "15", "--batch-size", "64", "--hidden", "64", "--out-dir", str(tmp_path)]
    paths = ceiling.main(argv)
    for ext in ("csv", "json", "png", "md"):
        assert paths[ext] == tmp_path / f"decoding_ceiling.{ext}" and paths[ext].stat().st_size > 0
    rows = {r["kind"]: r for r in csv.DictReader(paths["csv"].open())}
    assert set(rows) >= {"snr0", "noise_free", "chance_prior_majority", "oracle_true_coarse_8x8"}
    noise_free, zero = float(rows["noise_free"]["ceiling_miou"]), float(rows["snr0"]["ceiling_miou"])
    assert noise_free > zero + 0.1, (noise_free, zero)
    assert float(rows["noise_free"]["class_top1"]) > float(rows["snr0"]["class_top1"]) + 0.3
    meta = json.loads(paths["json"].read_text())["meta"]
    assert meta["n_train"] == 400 and "decoding_ceiling.py" in meta["command"]
    assert "| things17 |" in paths["md"].read_text()
    # re-rendering from the JSON keeps a hand-written reading
    paths["md"].write_text(paths["md"].read_text() + "\n## Reading\n\nBy hand.\n")
    ceiling.main(["--render-only", "--out-dir", str(tmp_path)])
    text = paths["md"].read_text()
    assert text.count("| things17 |") == 2 and text.endswith("## Reading\n\nBy hand.\n")


TINY_PRESET = {
    "synthetic_things": [
        "dataset.n_concepts=60", "dataset.n_val_concepts=20", "dataset.n_test_concepts=30",
        "dataset.images_per_concept=2", "dataset.test_repetitions=3",
    ],
    "synthetic_imagenet": [
        "dataset.n_concepts=4", "dataset.images_per_concept=30", "dataset.val_images_per_concept=8",
        "dataset.test_images_per_concept=8",
    ],
}  # fmt: skip


@pytest.mark.parametrize("preset", sorted(TINY_PRESET))
def test_preset_world_equals_what_the_pipeline_reads(ceiling, preset):
    """Signal + averaged noise at the preset's snr reproduce the datamodule's own arrays, every split."""
    overrides = [*TINY_PRESET[preset], "dataset.test_repetitions=3"]  # the closed set too: several test repetitions
    world = ceiling.simulate_preset(preset, overrides, time_bin=1, verbose=False)
    cfg = compose_config([f"dataset={preset}", *overrides])
    direct = hydra.utils.instantiate(cfg.dataset, cache_dir=None).generate_arrays()
    expected = np.concatenate([direct[f"{s}_eeg_s0"].mean(axis=1) for s in ("train", "val", "test")])
    np.testing.assert_allclose(world.eeg(world.snr), expected, atol=2e-5)
    np.testing.assert_allclose(world.eeg(world.snr, 1)[world.splits.test], direct["test_eeg_s0"][:, 0], atol=2e-5)
    maps = np.concatenate([direct[f"{s}_maps"] for s in ("train", "val", "test")])
    layout = preset == "synthetic_things"
    np.testing.assert_array_equal(world.maps, (maps > 0) if layout else maps)
    assert world.n_labels == (2 if layout else 5) and world.n_classes == (None if layout else 4)
    assert world.snr == cfg.dataset.snr


def test_preset_ceilings_read_the_map_without_noise_and_not_at_zero(ceiling, tmp_path):
    argv = ["--preset", "synthetic_imagenet", "--preset-overrides", *TINY_PRESET["synthetic_imagenet"]]
    argv += ["--images-factor", "2"]
    argv += ["--epochs", "15", "--batch-size", "64", "--hidden", "64", "--pca-dim", "32", "--out-dir", str(tmp_path)]
    paths = ceiling.main(argv)
    for ext in ("csv", "json", "png", "md"):
        assert paths[ext] == tmp_path / f"decoding_ceiling_presets.{ext}" and paths[ext].stat().st_size > 0
    rows = {r["condition"]: r for r in csv.DictReader(paths["csv"].open())}
    # single trials (one test repetition): no single_test_trial row
    assert set(rows) == {
        "preset",
        "more_training_images",
        "snr0",
        "noise_free",
        "chance_prior_majority",
        "chance_random_train_map",
        "oracle_true_coarse_8x8",
    }
    assert int(rows["more_training_images"]["n_train"]) == 2 * int(rows["preset"]["n_train"]) == 240
    noise_free, zero = float(rows["noise_free"]["ceiling_miou"]), float(rows["snr0"]["ceiling_miou"])
    assert noise_free > zero + 0.1, (noise_free, zero)
    assert float(rows["noise_free"]["class_top1"]) > float(rows["snr0"]["class_top1"]) + 0.4
    text = paths["md"].read_text()
    assert "## `synthetic_imagenet`" in text and "The region head on this preset" in text
    paths["md"].write_text(text + "\n## Reading\n\nBy hand.\n")
    ceiling.main(["--preset", "synthetic_imagenet", "--render-only", "--out-dir", str(tmp_path)])
    assert paths["md"].read_text().endswith("## Reading\n\nBy hand.\n")
