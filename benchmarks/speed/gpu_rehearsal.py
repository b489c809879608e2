"""A full-size dress rehearsal through ``regionaldiff`` on one GPU: every step at the scale a THINGS-EEG2 user brings.

One command, no downloads. It writes, under ``--workdir``:

- THINGS-EEG2 in its official format at full trial count (1,654 training concepts x 10 images, 200 test concepts,
  2 subjects, 17 channels, 100 Hz; random values: ``bench_things_full.write_things``);
- random-weight models at their real shapes, in the layouts the project reads: SD-1.5 (``unet/``, ``vae/``, ...),
  CLIP ViT-L/14's vision tower with projection, SAM ViT-H, and the metric backbones (AlexNet, Inception-v3,
  EfficientNet-B1, SwAV ResNet-50). Random weights cost the same time as trained ones; no quality figure is read.

Then it runs the entrypoint as users do, as one multirun logged to MLflow::

    regionaldiff -m ldm=sd15_global,sd15_regional dataset=things_eeg2 encoder=dreamdiffusion encoder/align=clip
        regionmap=slic eval=things trainer=gpu trainer.limit_train_batches=... ...

with step limits (``trainer.limit_train_batches``, one epoch each) that make it fit in minutes, and SAM ViT-H's maps
through ``regionaldiff pipeline.steps=[prepare] regionmap=sam`` on a subset of the images (mapping all 16,740 images
is the part a user runs once; its time is projected). It prints, per pipeline step and job: wall time, throughput,
GPU utilisation and memory (MLflow's system metrics over the step's window), and the projected hours of a full run
with the recipe's epochs.

On a CPU, ``--dry-run`` runs the same commands at small shapes (a few concepts, a narrow SD-1.5, a tiny CLIP, SAM
ViT-B with few points, ``trainer=cpu``): it checks the rehearsal end to end; its times mean nothing.

The GPU machine needs the project's pure-Python dependencies it lacks (diffusers, hydra-core, omegaconf, mlflow,
...): ``pip download --no-deps`` them into a folder that git ignores and install them there first.

Usage::

    python benchmarks/speed/gpu_rehearsal.py --workdir /scratch/rehearsal          # one GPU
    python benchmarks/speed/gpu_rehearsal.py --dry-run                             # CPU, small shapes
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_things_full import write_things  # noqa: E402

STEPS = ("prepare", "pretrain", "finetune", "generate", "evaluate")
#: torchvision architectures of the metric backbones, and the file each is read from under paths.weights_dir
TORCHVISION = {
    "alexnet": "torchvision/alexnet-owt-7be5be79.pth",
    "inception_v3": "torchvision/inception_v3_google-0cc3c7bd.pth",
    "efficientnet_b1": "torchvision/efficientnet_b1-c27df63c.pth",
}


def write_weights(weights: Path, dry_run: bool) -> dict[str, str]:
    """Random-weight models in the layouts ``regionaldiff`` reads; returns the overrides that point at them."""
    import torch
    import torchvision
    from segment_anything import sam_model_registry
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from regionaldiff.ldm.sd15 import save_sd15_layout

    torch.manual_seed(0)
    if dry_run:
        save_sd15_layout(weights / "stable-diffusion-v1-5", width=0.05, cross_attention_dim=32, layers_per_block=1)
        clip = CLIPVisionConfig(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32,
            patch_size=8, projection_dim=32,
        )  # fmt: skip
    else:
        save_sd15_layout(weights / "stable-diffusion-v1-5")
        clip = CLIPVisionConfig(  # ViT-L/14's vision tower
            hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16, image_size=224,
            patch_size=14, projection_dim=768,
        )  # fmt: skip
    CLIPVisionModelWithProjection(clip).save_pretrained(weights / "clip-vit-large-patch14")
    sam_type = "vit_b" if dry_run else "vit_h"
    sam_path = weights / "sam" / f"sam_{sam_type}_random.pth"
    sam_path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(sam_model_registry[sam_type](checkpoint=None).state_dict(), sam_path)
    for arch, name in TORCHVISION.items():
        path = weights / name
        path.parent.mkdir(parents=True, exist_ok=True)
        kwargs = {"aux_logits": True, "init_weights": False} if arch == "inception_v3" else {}
        torch.save(getattr(torchvision.models, arch)(weights=None, **kwargs).state_dict(), path)
    swav = weights / "swav" / "swav_800ep_pretrain.pth.tar"
    swav.parent.mkdir(parents=True, exist_ok=True)
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), swav)
    return {"sam_checkpoint": str(sam_path), "sam_type": sam_type}


def run(args: list[str], cwd: Path, log: Path) -> float:
    """``regionaldiff ARGS`` in a fresh process (output to ``log``); its wall time in seconds."""
    start = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.run([sys.executable, "-m", "regionaldiff", *args], cwd=cwd, stdout=out, stderr=out)
    if proc.returncode:
        raise SystemExit(f"regionaldiff failed ({proc.returncode}); see {log}")
    return time.perf_counter() - start


def window_mean(client, run_id: str, key: str, start_ms: int, end_ms: int) -> float | None:
    """Mean of a system metric over ``[start_ms, end_ms]`` (None when it was not recorded: no GPU, no pynvml)."""
    values = [m.value for m in client.get_metric_history(run_id, key) if start_ms <= m.timestamp <= end_ms]
    return sum(values) / len(values) if values else None


def step_rows(tracking_uri: str, experiment: str, batches: int, batch_sizes: dict[str, int]) -> list[dict]:
    """One row per (job, step): wall time, throughput, GPU utilisation and memory over the step's window.

    ``batches``: the training batches each training step ran (the limit); ``batch_sizes``: per training step."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    runs = [r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("mlflow.parentRunId")]
    rows = []
    encoders_seen: set[str] = set()  # a later job of the sweep reuses the encoder artifact of an earlier one
    for run in sorted(runs, key=lambda r: r.info.start_time):
        encoder = run.data.tags.get("artifact.encoder", "")
        reused = {"pretrain"} if encoder in encoders_seen else set()
        encoders_seen.add(encoder)
        m, p = run.data.metrics, run.data.params
        ldm = p.get("ldm.name", run.data.tags.get("mlflow.runName", "?"))
        n_train = m.get("data/n_train", 0)
        trained = {step: min(batches * size, n_train) for step, size in batch_sizes.items()}
        work = {
            "prepare": (n_train + m.get("data/n_val", 0) + m.get("data/n_test", 0), "trials"),
            "pretrain": (trained["pretrain"], "training samples"),
            "finetune": (trained["finetune"], "training samples"),
            "generate": (m.get("data/n_test", 0) * float(p.get("ldm.sampling.samples_per_eeg", 1)), "images"),
            "evaluate": (m.get("data/n_test", 0), "trials"),
        }
        for step in STEPS:
            history = client.get_metric_history(run.info.run_id, f"time/{step}_s")
            if not history:
                continue
            seconds, end_ms = history[-1].value, history[-1].timestamp
            start_ms = int(end_ms - 1000 * seconds)
            amount, unit = work[step]
            if step in reused:
                amount, unit = 0, "reused"
            rows.append(
                {
                    "job": ldm,
                    "step": step,
                    "seconds": seconds,
                    "n_train": n_train,
                    "samples": amount,
                    "throughput": f"{amount / seconds:.1f} {unit}/s" if amount else unit if step in reused else "",
                    "gpu_util_%": window_mean(
                        client, run.info.run_id, "system/gpu_0_utilization_percentage", start_ms, end_ms
                    ),
                    "gpu_mem_mb": window_mean(
                        client, run.info.run_id, "system/gpu_0_memory_usage_megabytes", start_ms, end_ms
                    ),
                    "cpu_util_%": window_mean(
                        client, run.info.run_id, "system/cpu_utilization_percentage", start_ms, end_ms
                    ),
                }
            )
    return rows


def recipe(overrides: list[str]) -> dict[str, dict[str, int]]:
    """Epochs and batch sizes of the recipe a full run uses (the composed config without the rehearsal's limits)."""
    from regionaldiff.config import compose_config

    cfg = compose_config(overrides)
    return {
        "epochs": {"pretrain": int(cfg.encoder.max_epochs), "finetune": int(cfg.ldm.max_epochs)},
        "batch_size": {"pretrain": int(cfg.dataset.batch_size), "finetune": int(cfg.ldm.batch_size)},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="small shapes on the CPU (checks the rehearsal)")
    parser.add_argument("--workdir", type=Path, default=None, help="where inputs and outputs go (default: temp)")
    parser.add_argument("--train-batches", type=int, default=200, help="training batches per step (limit)")
    parser.add_argument("--sam-images", type=int, default=240, help="images SAM ViT-H maps (its time is projected)")
    parser.add_argument("--keep", action="store_true", help="keep the inputs and outputs")
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="rehearsal-"))
    work.mkdir(parents=True, exist_ok=True)
    dry = args.dry_run
    try:
        start = time.perf_counter()
        root, sam_root, weights = work / "things_eeg2", work / "things_eeg2_sam", work / "weights"
        subjects = 1 if dry else 2
        if not (root / "image_set" / "image_metadata.npy").is_file():
            write_things(root, subjects, 12 if dry else 1654, 2 if dry else 10, 6 if dry else 200)
        n_sam = max(2, args.sam_images // 10)
        if not (sam_root / "image_set" / "image_metadata.npy").is_file():
            write_things(sam_root, 1, 4 if dry else n_sam, 2 if dry else 10, 2 if dry else 20)
        sam = write_weights(weights, dry)
        print(f"inputs written in {time.perf_counter() - start:.0f} s under {work}")

        common = [
            "dataset=things_eeg2",
            f"dataset.subjects=[{','.join(str(s) for s in range(1, subjects + 1))}]",
            "encoder=dreamdiffusion",
            "encoder/align=clip",
            "eval=things",
            f"paths.weights_dir={weights}",
            f"paths.root_dir={work}",
            f"trainer={'cpu' if dry else 'gpu'}",
            "trainer.enable_progress_bar=false",
        ]
        # the narrow SD-1.5 of the dry run (its batch size also enters the projection)
        small_ldm = ["ldm.image_size=64", "ldm.unet.cross_attention_dim=32", "ldm.batch_size=4"] if dry else []
        common += small_ldm
        if dry:
            common += [
                "dataset.val_fraction=0.25",
                "ldm.sampling.num_steps=2",
                "ldm.sampling.samples_per_eeg=1",
                "eval.retrieval.repetitions=[1,5]",
            ]
        # 1. SAM ViT-H maps through the entrypoint, on a subset of the images (time per image -> projection)
        sam_args = [
            *common,
            f"dataset.root={sam_root}",
            "regionmap=sam",
            f"regionmap.checkpoint={sam['sam_checkpoint']}",
            f"regionmap.model_type={sam['sam_type']}",
            *(["regionmap.points_per_side=4"] if dry else []),
            "pipeline.steps=[prepare]",
            "logger.experiment_name=rehearsal_sam",
        ]
        sam_s = run(sam_args, work, work / "sam.log")
        n_sam_images = (4 * 2 + 2) if dry else (n_sam * 10 + 20)
        # 2. the two SD-1.5 variants as one multirun, every step, limited batches
        limits = ["encoder.max_epochs=1", "ldm.max_epochs=1", f"trainer.limit_train_batches={args.train_batches}"]
        sweep = [
            "-m",
            "ldm=sd15_global,sd15_regional",
            *common,
            f"dataset.root={root}",
            "regionmap=slic",
            *limits,
            "logger.experiment_name=rehearsal",
        ]
        sweep_s = run(sweep, work, work / "sweep.log")

        tracking = f"sqlite:///{work / 'outputs' / 'mlflow.db'}"
        full = recipe(["dataset=things_eeg2", "encoder=dreamdiffusion", "ldm=sd15_regional", *small_ldm])
        rows = step_rows(tracking, "rehearsal", args.train_batches, full["batch_size"])
        print(
            f"\n{'DRY RUN (CPU, small shapes): times mean nothing' if dry else 'GPU rehearsal'}; sweep {sweep_s:.0f} s"
        )
        print("| job | step | wall (s) | throughput | GPU util (%) | GPU memory (GB) | CPU util (%) |")
        print("| --- | --- | --- | --- | --- | --- | --- |")
        for r in rows:
            gpu = "n/a" if r["gpu_util_%"] is None else f"{r['gpu_util_%']:.0f}"
            mem = "n/a" if r["gpu_mem_mb"] is None else f"{r['gpu_mem_mb'] / 1024:.1f}"
            cpu = "n/a" if r["cpu_util_%"] is None else f"{r['cpu_util_%']:.0f}"
            print(f"| {r['job']} | {r['step']} | {r['seconds']:.1f} | {r['throughput']} | {gpu} | {mem} | {cpu} |")
        per_image = sam_s / n_sam_images  # includes the process start and the dataset cache: an upper bound
        projection: dict[str, object] = {
            "sam_maps_hours_for_16740_images": 16740 * per_image / 3600,
            "recipe": full,
            "train_batches_per_step": args.train_batches,
        }
        for r in rows:
            if r["step"] in full["epochs"] and r["samples"]:
                # the measured step (one-time caches included) scaled to the recipe's epochs over all training trials
                hours = r["seconds"] / r["samples"] * r["n_train"] * full["epochs"][r["step"]] / 3600
                projection[f"{r['job']}_{r['step']}_hours_full_recipe"] = hours
        print(json.dumps(projection, indent=2))
        (work / "rehearsal.json").write_text(json.dumps({"rows": rows, "projection": projection}, indent=2))
    finally:
        if not args.keep and args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
