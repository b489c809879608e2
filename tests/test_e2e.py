"""End-to-end runs of the real CLI on the embedded default, shrunk (the ``slow`` marker).

As in diffusers' example tests: a tiny model, the real entrypoint, assertions on the files and runs produced.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REAL_TINY, TINY, TINY_THINGS, cli_env, mlflow_runs

pytestmark = pytest.mark.slow


def _job_dir(out: str) -> Path:
    line = next(line for line in out.splitlines() if line.startswith("Done. Results in "))
    return Path(line.removeprefix("Done. Results in ").strip())


def test_default_pipeline_runs_end_to_end_and_logs_to_mlflow(run_cli, tmp_path):
    proc = run_cli(*TINY)
    job = _job_dir(proc.stdout)
    assert "mlflow ui --backend-store-uri sqlite:///" in proc.stdout
    assert re.search(
        r"open the runs: http://127\.0\.0\.1:5000/#/experiments/\d+\?workflowType=machine_learning", proc.stdout
    )

    metrics = json.loads((job / "metrics.json").read_text())
    for name in (
        "eval/ssim",
        "eval/pixcorr",
        "eval/eeg_top1",
        "eval/region_miou",
        "eval/recon_class_acc",
        "eval/recon_region_miou",
    ):
        assert isinstance(metrics[name], float), name
    assert -1.0 <= metrics["eval/pixcorr"] <= 1.0 and 0.0 <= metrics["eval/recon_class_acc"] <= 1.0
    assert isinstance(metrics["skipped"], dict)
    for figure in ("reconstructions.png", "stimuli.png", "config_resolved.yaml"):
        assert (job / figure).stat().st_size > 0

    client, runs = mlflow_runs(tmp_path)
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.metrics["eval/ssim"] == pytest.approx(metrics["eval/ssim"])
    assert "pretrain/train_loss" in run.data.metrics and "finetune/train_loss" in run.data.metrics
    # the region head's background bias was fitted on the validation split and did not lower its map mIoU
    m = run.data.metrics
    assert m["pretrain/val_region_miou"] >= m["pretrain/val_region_miou_uncalibrated"]
    assert -3.0 <= m["pretrain/region_background_bias"] <= 1.0
    assert ("eval/region_miou_uncalibrated" in metrics) == (m["pretrain/region_background_bias"] != 0.0)
    assert run.data.params["ldm.name"] == "regional" and run.data.params["dataset.n_train"] == "48"
    assert run.data.tags["regionaldiff.test_maps"] == "predicted"
    assert Path(run.data.tags["checkpoint.encoder"]).is_file() and Path(run.data.tags["checkpoint.ldm"]).is_file()
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "figures")}
    assert "figures/reconstructions.png" in artifacts

    # the generated and reference folders can be scored by folder evaluation
    generated = Path(run.data.tags["artifact.generated"])
    assert (
        len(list((generated / "generated").glob("*.png"))) == 12 == len(list((generated / "reference").glob("*.png")))
    )

    # a second run with the same config reuses every trained artifact
    again = run_cli(*TINY)
    log = again.stdout + again.stderr  # Hydra's job logging writes to stdout
    assert "reusing encoder" in log and "reusing LDM" in log and "reusing reconstructions" in log

    # pipeline.eval_split=val reconstructs and scores the validation trials with the same trained model
    val = run_cli(*TINY, "pipeline.eval_split=val")
    log = val.stdout + val.stderr
    assert "reusing LDM" in log and "reusing reconstructions" not in log
    _, runs = mlflow_runs(tmp_path)
    val_run = max(runs, key=lambda r: r.info.start_time)
    assert val_run.data.tags["regionaldiff.eval_split"] == "val"
    val_generated = Path(val_run.data.tags["artifact.generated"])
    assert val_generated != generated
    ids = sorted(p.stem.split("_", 1)[1] for p in (val_generated / "reference").glob("*.png"))
    assert ids == [f"syn_{i:06d}" for i in range(48, 60)]  # the 12 validation images follow the 48 training ones
    assert "eval/recon_region_miou" in json.loads((_job_dir(val.stdout) / "metrics.json").read_text())


def test_sweep_is_one_parent_with_two_children_and_pretrains_once(run_cli, tmp_path):
    run_cli("-m", "ldm=global,regional", *TINY)
    client, runs = mlflow_runs(tmp_path)
    parents = [r for r in runs if r.data.tags.get("regionaldiff.role") == "sweep"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId")]
    assert len(parents) == 1 and len(children) == 2
    assert parents[0].info.run_name.startswith("sweep: ldm=global,regional ")  # named after what was swept
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parents[0].info.run_id}
    assert sorted(c.data.params["ldm.name"] for c in children) == ["global", "regional"]
    assert all("eval/ssim" in c.data.metrics for c in children)
    # the shared encoder was pretrained once, the two LDMs separately
    artifacts = tmp_path / "outputs" / "artifacts"
    assert len([p for p in (artifacts / "pretrain").iterdir() if (p / "DONE").is_file()]) == 1
    assert len([p for p in (artifacts / "finetune").iterdir() if (p / "DONE").is_file()]) == 2


def test_interrupted_training_resumes_from_its_last_checkpoint(tmp_path):
    args = [*TINY, "dataset.n_train=200", "encoder.max_epochs=12", "pipeline.steps=[prepare,pretrain]", "logger=none"]
    cmd = [sys.executable, "-m", "regionaldiff", *args]
    proc = subprocess.Popen(
        cmd, cwd=tmp_path, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    deadline = time.monotonic() + 300
    ckpts: list[Path] = []
    while time.monotonic() < deadline and proc.poll() is None:
        ckpts = list((tmp_path / "outputs" / "artifacts" / "pretrain").glob("*/checkpoints/last.ckpt"))
        if ckpts:
            break
        time.sleep(0.05)
    assert ckpts and proc.poll() is None, "the run ended before a checkpoint could be interrupted"
    proc.send_signal(signal.SIGKILL)  # a crash: no clean shutdown
    proc.wait()
    slot = ckpts[0].parent.parent
    assert not (slot / "DONE").exists()

    import torch

    epoch_before = torch.load(ckpts[0], map_location="cpu", weights_only=False)["epoch"]
    resumed = subprocess.run(cmd, cwd=tmp_path, env=cli_env(), capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from" in resumed.stdout + resumed.stderr
    assert (slot / "DONE").is_file() and (slot / "encoder.pt").is_file()
    final = torch.load(slot / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert final["epoch"] >= 11 and final["epoch"] > epoch_before


def test_pipeline_on_eeg_imagenet_fixture_with_superpixel_maps(run_cli, tmp_path):
    """The official EEG-ImageNet layout, region-aware: maps from the weight-free generator, predicted at test time."""
    from official_formats import write_eeg_imagenet

    fixture = write_eeg_imagenet(tmp_path / "eeg_imagenet")
    proc = run_cli(
        "dataset=eeg_imagenet", f"dataset.root={fixture.root}", "regionmap=slic", "ldm=regional", *REAL_TINY
    )
    metrics = json.loads((_job_dir(proc.stdout) / "metrics.json").read_text())
    assert {"eval/ssim", "eval/region_miou", "eval/region_alignment_miou"} <= set(metrics)
    assert "eval/fid" in metrics["skipped"] and "eval/recon_class_acc" in metrics["skipped"]
    _, runs = mlflow_runs(tmp_path)
    assert "block" in runs[0].data.tags["data.warning"].lower()
    assert runs[0].data.tags["skipped.eval/fid"] == metrics["skipped"]["eval/fid"]


def test_pipeline_on_things_eeg2_fixture_global(run_cli, tmp_path):
    from official_formats import write_things_eeg2

    fixture = write_things_eeg2(tmp_path / "things")
    proc = run_cli(
        "dataset=things_eeg2",
        f"dataset.root={fixture.root}",
        "dataset.subjects=[1,2]",
        "dataset.val_fraction=0.25",
        "regionmap=none",
        "ldm=global",
        *REAL_TINY,
    )
    metrics = json.loads((_job_dir(proc.stdout) / "metrics.json").read_text())
    assert "eval/ssim" in metrics and "eval/region_miou" in metrics["skipped"]
    # the test concepts are never seen in training: no class accuracy over them, and no retrieval without alignment
    assert "never appear in training" in metrics["skipped"]["eval/eeg_top1"] and "eval/eeg_top1" not in metrics


def test_things_eeg2_zero_shot_retrieval_of_noise_eeg_is_at_chance(run_cli, tmp_path):
    """THINGS-EEG2's protocol on official-format files whose EEG is pure noise: the pipeline computes 40-way
    zero-shot retrieval from the EEG embedding aligned to a local (tiny) CLIP, at chance, with the repetitions
    curve; class accuracy over unseen concepts is not reported; the region maps are 2-label layouts."""
    import numpy as np

    from conftest import write_tiny_clip
    from official_formats import write_things_eeg2
    from regionaldiff import RegionalDiffPipeline
    from regionaldiff.evaluation.retrieval import chance_band

    fixture = write_things_eeg2(
        tmp_path / "things", n_train_concepts=8, n_test_concepts=40, test_reps=5, signal=0.0, seed=1
    )
    write_tiny_clip(tmp_path / "weights" / "clip-vit-large-patch14")
    proc = run_cli(
        "dataset=things_eeg2",
        f"dataset.root={fixture.root}",
        "dataset.subjects=[1,2]",
        "dataset.val_fraction=0.25",
        f"paths.weights_dir={tmp_path / 'weights'}",
        "encoder/align=clip",
        "regionmap=slic",
        "ldm=regional",
        "eval.metrics=[retrieval,ssim]",
        "eval.retrieval.repetitions=[1,5]",
        *REAL_TINY[:-1],
    )
    job = _job_dir(proc.stdout)
    metrics = json.loads((job / "metrics.json").read_text())
    _, low, high = chance_band(40, 80, k=1, z=3.0)  # 2 subjects x 40 test images
    assert low <= metrics["eval/retrieval_top1"] <= high
    assert metrics["eval/retrieval_top5"] <= chance_band(40, 80, k=5, z=3.0)[2]
    assert abs(metrics["eval/retrieval_2way"] - 0.5) < 0.1
    assert {"eval/retrieval_top1_reps1", "eval/retrieval_top5_reps5"} <= set(metrics)
    assert (job / "retrieval_repetitions.png").stat().st_size > 0
    assert "eval/eeg_top1" not in metrics and "never appear in training" in metrics["skipped"]["eval/eeg_top1"]
    assert "eval/region_miou" in metrics and "eval/region_alignment_miou" in metrics  # object / background layouts
    pipe = RegionalDiffPipeline.from_pretrained(job)
    assert pipe.encoder.num_region_labels == 2 and pipe.encoder.align_dim == 12
    out = pipe(np.zeros((1, 17, 100), dtype=np.float32), num_inference_steps=1)
    assert out.region_probs.shape[1] == 2


def test_realistic_zero_shot_preset_runs_and_scores_retrieval_and_layouts(run_cli, tmp_path):
    """dataset=synthetic_things at tiny sizes through the whole pipeline: the preset chooses the pixel alignment and
    the retrieval curve; class scores over its unseen concepts are skipped, the judge scores object / background."""
    proc = run_cli(
        "dataset=synthetic_things",
        *TINY_THINGS,
        *TINY[3:],
    )
    metrics = json.loads((_job_dir(proc.stdout) / "metrics.json").read_text())
    assert {"eval/retrieval_top1", "eval/retrieval_top1_reps1", "eval/retrieval_top1_reps6"} <= set(metrics)
    assert metrics["eval/retrieval_top1"] == metrics["eval/retrieval_top1_reps6"]  # the test split averages all 6
    skipped = metrics["skipped"]
    assert "never appear in training" in skipped["eval/eeg_top1"]
    assert "region_labels=layout" in skipped["eval/recon_class_acc"]
    assert 0.0 <= metrics["eval/recon_region_miou"] <= 1.0 and 0.0 <= metrics["eval/region_miou"] <= 1.0


def test_folder_evaluation_scores_another_methods_outputs(run_cli, tmp_path):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for folder in ("gen", "ref"):
        (tmp_path / folder).mkdir()
    for i in range(4):
        image = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
        Image.fromarray(image).save(tmp_path / "ref" / f"img{i}.png")
        Image.fromarray(image).save(tmp_path / "gen" / f"img{i}.png")  # identical: SSIM and PixCorr are 1
    proc = run_cli("evaluate", str(tmp_path / "gen"), str(tmp_path / "ref"), "eval.resolution=32")
    metrics = json.loads((_job_dir(proc.stdout) / "metrics.json").read_text())
    assert metrics["eval/ssim"] == pytest.approx(1.0) and metrics["eval/pixcorr"] == pytest.approx(1.0)
    assert not (tmp_path / "outputs" / "artifacts" / "pretrain").exists(), "folder evaluation trains nothing"
    bad = run_cli("evaluate", str(tmp_path / "nope"), str(tmp_path / "ref"), check=False)
    assert bad.returncode != 0 and "is not a folder" in bad.stdout + bad.stderr
