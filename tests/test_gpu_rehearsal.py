"""The GPU rehearsal (``benchmarks/speed/gpu_rehearsal.py``) end to end in its ``--dry-run`` (small shapes, CPU; about
2 minutes on 2 cores): every job it runs on a lent GPU (SAM's maps at two point grids, the frozen recipe's job, the
seed's two-variant sweep) runs through the entrypoint and is read back into ``rehearsal.json``'s rows and
projection."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from conftest import cli_env

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "speed" / "gpu_rehearsal.py"
FROZEN = "sd15_frozen_regional"


def rehearsal_module() -> ModuleType:
    """The script as a module, for its constants (``benchmarks`` is not a package; ``bench_things_full`` sits beside
    it, on the path as when the script runs)."""
    if str(SCRIPT.parent) not in sys.path:
        sys.path.insert(0, str(SCRIPT.parent))
    spec = importlib.util.spec_from_file_location("gpu_rehearsal", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_the_dry_run_measures_every_job_and_projects_sam_at_two_grids_and_the_frozen_controlnet(tmp_path):
    rehearsal = rehearsal_module()
    work = tmp_path / "work"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--dry-run", "--train-batches", "1", "--workdir", str(work)],
        cwd=tmp_path,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    logs = {p.name: p.read_text()[-3000:] for p in work.glob("*.log")}
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}\n{logs}"
    report = json.loads((work / "rehearsal.json").read_text())
    assert report["dry_run"] is True and report["train_batches_per_step"] == 1
    rows = report["rows"]
    steps = {(r["job"], r["step"]): r for r in rows}

    # the seed's two variants: every step; the second reuses the first one's encoder
    for job in ("sd15_global", "sd15_regional"):
        for step in rehearsal.STEPS:
            assert (job, step) in steps, (job, step, sorted(steps))
            assert steps[job, step]["seconds"] > 0
    assert steps["sd15_regional", "pretrain"]["throughput"] == "reused"
    assert steps["sd15_global", "pretrain"]["samples"] > 0

    # the frozen recipe's job: its steps but evaluate, and the finetune step split into the ControlNet's training
    # (one batch of ldm.batch_size=4: the limit applied) and the rest (the latent cache of every training image:
    # 12 concepts x 2 images less the 3 validation concepts, whatever the limit)
    frozen = {step for job, step in steps if job == FROZEN}
    assert frozen == {
        "prepare",
        "pretrain",
        "finetune",
        "finetune: ControlNet training",
        "finetune: latent cache, builds, saving",
        "generate",
    }, frozen
    controlnet = steps[FROZEN, "finetune: ControlNet training"]
    assert controlnet["samples"] == 4 and controlnet["unit"] == "training images" and controlnet["seconds"] > 0
    cache = steps[FROZEN, "finetune: latent cache, builds, saving"]
    assert cache["samples"] == 18 and cache["seconds"] > 0
    assert steps[FROZEN, "pretrain"]["throughput"] != "reused"  # its own encoder (aligned to IP-Adapter's images)
    assert controlnet["seconds"] + cache["seconds"] == pytest.approx(steps[FROZEN, "finetune"]["seconds"])

    # SAM at both grids on the same 4 images (3 concepts x 1 image + 1 test image)
    sam = {r["points_per_side"]: r for r in rows if r["job"].startswith("sam (")}
    assert sorted(sam) == sorted(rehearsal.SAM_POINTS_DRY)
    assert all(r["samples"] == 4 and r["seconds"] > 0 and r["process_s"] > r["seconds"] for r in sam.values())
    # each grid computed its own maps (the map cache is keyed by points_per_side)
    assert len(list((work / "outputs" / "cache" / "regionmaps").glob("sam-*"))) == 2

    projection = report["projection"]
    assert report["recipe_frozen"]["epochs"]["finetune"] == 10  # sd15_frozen_regional's ldm.max_epochs
    expected = {
        **{f"sam_{n}_points_per_side_hours_16740_images": 16740 * sam[n]["seconds"] / 4 / 3600 for n in sam},
        f"{FROZEN}_controlnet_hours_16540_images_x_10_epochs": 16540 * 10 * controlnet["seconds"] / 4 / 3600,
        f"{FROZEN}_latent_cache_hours_16540_images": 16540 * cache["seconds"] / 18 / 3600,
    }
    for job in ("sd15_global", "sd15_regional", FROZEN):
        r = steps[job, "generate"]
        expected[f"{job}_generate_hours_2000_images"] = 2000 * r["seconds"] / r["samples"] / 3600
    for key, value in expected.items():
        assert key in projection, (key, sorted(projection))
        assert math.isfinite(projection[key]) and projection[key] == pytest.approx(value), key
    for key in ("sd15_global_pretrain_hours_full_recipe", "sd15_regional_finetune_hours_full_recipe"):
        assert projection[key] > 0, key
    assert f"{FROZEN}_finetune_hours_full_recipe" not in projection  # its finetune trains nothing on EEG
