"""The decoding-ceiling benchmark (``benchmarks/analyses/decoding_ceiling.py``) on tiny data."""

from __future__ import annotations

import csv
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from regionaldiff.data.synthetic import SyntheticDataModule

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "analyses" / "decoding_ceiling.py"


@pytest.fixture(scope="module")
def ceiling() -> ModuleType:
    """The benchmark script as a module (``benchmarks`` is not a package)."""
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
        direct = SyntheticDataModule(
            **ceiling.DATASET, seed=3, n_train=12, n_val=4, n_test=4, n_repetitions=3, snr=0.5,
            average_repetitions=averaged, montage="things17", cache_dir=None,
        ).generate_arrays()  # fmt: skip
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
