"""A full-size dress rehearsal through ``regionaldiff`` on one GPU: every step at the scale a THINGS-EEG2 user brings.

One command, no downloads. It writes, under ``--workdir``:

- THINGS-EEG2 in its official format at full trial count (1,654 training concepts x 10 images, 200 test concepts,
  2 subjects, 17 channels, 100 Hz; random values: ``bench_things_full.write_things``);
- random-weight models at their real shapes, in the layouts the project reads: SD-1.5 (``unet/``, ``vae/``, ...,
  and ``text_encoder/`` + ``tokenizer/`` for IP-Adapter's empty prompt: one layer at SD-1.5's width, it runs once),
  CLIP ViT-L/14's vision tower with projection, IP-Adapter SD-1.5 with its image encoder (OpenCLIP ViT-H/14) in
  h94/IP-Adapter's layout (``IP-Adapter/models/``, docs/setup.md), SAM ViT-H, and the metric backbones (AlexNet,
  Inception-v3, EfficientNet-B1, SwAV ResNet-50). Random weights cost the same time as trained ones; no quality
  figure is read.

Then it runs the entrypoint as users do, each logged to MLflow:

1. SAM ViT-H's maps, ``regionaldiff pipeline.steps=[prepare] regionmap=sam regionmap.points_per_side=N`` for N = 32
   and 16 on the same subset of the images (``--sam-images`` training images + 20 test images; the map cache is
   keyed by the generator's settings, so each grid computes its own maps). Mapping all 16,740 images is the part a
   user runs once: its time is projected from the prepare step's seconds per image;
2. the frozen recipe, one job of its own (its alignment is not the sweep's)::

       regionaldiff -m ldm=sd15_frozen_regional dataset=things_eeg2 encoder=dreamdiffusion encoder/align=ip_adapter
           regionmap=slic trainer.limit_train_batches=... pipeline.steps=[prepare,pretrain,finetune,generate]

   SD-1.5 and IP-Adapter frozen, the region ControlNet trained once on the images and their maps from the latent
   cache (``ldm.train.latent_cache: true``), the encoder aligned to IP-Adapter's image encoder; no evaluate (the
   sweep's jobs score as many images with the same metrics);
3. the seed's recipe, both variants as one multirun::

       regionaldiff -m ldm=sd15_global,sd15_regional dataset=things_eeg2 encoder=dreamdiffusion encoder/align=clip
           regionmap=slic eval=things trainer=gpu trainer.limit_train_batches=... ...

Jobs 2 and 3 run with the same step limits (``trainer.limit_train_batches``, one epoch each). It prints, per pipeline
step and job: wall time, throughput, GPU utilisation and memory (MLflow's system metrics over the step's window),
and writes ``rehearsal.json`` (rows and projection, rewritten after each phase: a run cut short keeps what it
measured) with the projected hours: SAM's maps of 16,740 images at each grid; each training step with its recipe's
epochs; the frozen recipe's ControlNet over 16,540 training images x its ``ldm.max_epochs`` (10) from the measured
samples/s, and its latent cache of 16,540 images; generation of a whole study's 2,000 test images (10 x 200).

Device time. The GPU machines are lent for 15 minutes in all, start included, and 10 minutes a command. Expected
extra minutes on one H100 over the rehearsal before the frozen job and the second SAM grid (estimated from the GPU
check's rates in docs/benchmarks.md, not measured):

- SAM at 16 points per side: about 1 more (140 images at about 0.26 s/image if the mask decoder's part scales with
  the points, and a process start); the default subset went from 240 + 20 to 120 + 20 images, which gives about as
  much back at 32 points (140 x 0.54 s instead of 260 x 0.54 s);
- the frozen job: about 7-8 more: writing the IP-Adapter files (the ViT-H/14 image encoder, 2.5 GB) about 0.5;
  a process start about 0.3 (its prepare builds the dataset and map caches, which the sweep then reuses instead);
  ViT-H/14's embeddings of the 16,740 images and 200 encoder batches about 1-1.5; the VAE latents of about 15,700
  training images at 512 px about 2-3 (the least known); 200 ControlNet batches about 0.5; 400 test images
  (2 subjects x 200) at about 2.9 images/s about 2.3.

By the same rates the sweep alone (the latent cache of 16,540 images, then two jobs that each generate and score
400 test images) is likely to pass one command's 10 minutes: plan to run the same command twice on the same warm
machine, or ``--skip-frozen``, which leaves the frozen job out. The same command again in the same ``--workdir`` goes
on where a run was cut: the models are not written again (a stamp file), finished SAM runs are read back (running
one again would time its cache), and the multiruns resume their finished jobs.

On a CPU, ``--dry-run`` runs the same commands at small shapes (a few concepts, a narrow SD-1.5 and IP-Adapter, a
tiny CLIP, the DreamDiffusion encoder's recipe at the tiny encoder's size, a SAM with a 2-block image encoder
registered in the SAM processes at 4 and 2 points per side, ``trainer=cpu``): it checks the rehearsal end to end in
about 2 minutes on 2 cores (``tests/test_gpu_rehearsal.py``); its times mean nothing.

The GPU machine needs the project's pure-Python dependencies it lacks (diffusers, hydra-core, omegaconf, mlflow,
segment-anything, ...): ``pip download --no-deps`` them into a folder that git ignores and install them there first
(docs/benchmarks.md, "The GPU check", has the commands for what ``gpu_sd15.py`` needed; this script needs more of the
project's dependencies). The frozen job needs no package the other jobs do not (diffusers loads IP-Adapter).

Usage::

    python benchmarks/speed/gpu_rehearsal.py --workdir /scratch/rehearsal          # one GPU
    python benchmarks/speed/gpu_rehearsal.py --workdir /scratch/rehearsal --skip-frozen
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
#: IP-Adapter SD-1.5's image encoder (h94/IP-Adapter ``models/image_encoder``: OpenCLIP ViT-H/14, 1024-d embeddings)
VIT_H14 = {
    "hidden_size": 1280, "intermediate_size": 5120, "num_hidden_layers": 32, "num_attention_heads": 16,
    "image_size": 224, "patch_size": 14, "hidden_act": "gelu", "layer_norm_eps": 1e-5, "projection_dim": 1024,
}  # fmt: skip
#: the dry run's: a narrow SD-1.5 (context width 32) and a tiny image encoder for its IP-Adapter
DRY_CROSS_DIM = 32
DRY_IMAGE_ENCODER = {
    "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2, "image_size": 32,
    "patch_size": 16, "projection_dim": 16,
}  # fmt: skip
#: the dry run's DreamDiffusion encoder: its recipe at the tiny encoder's width and depth (full size, a CPU step
#: takes seconds and the two encoders' checkpoints 7.5 GB)
DRY_ENCODER = [
    "encoder.net.embed_dim=64", "encoder.net.depth=2", "encoder.net.num_heads=4", "encoder.net.decoder_embed_dim=32",
    "encoder.net.decoder_depth=1", "encoder.net.decoder_num_heads=4",
]  # fmt: skip
#: SAM's point grids (points per side), the first the released default; the dry run's stand-ins at a CPU's size
SAM_POINTS, SAM_POINTS_DRY = (32, 16), (4, 2)
TINY_SAM = "vit_tiny"  # the dry run's SAM (registered by register_tiny_sam in the processes that use it)
#: ``python -c`` program that runs the entrypoint with :data:`TINY_SAM` registered: the dry run's SAM jobs (a CLI
#: process cannot be monkeypatched); the GPU run uses ``python -m regionaldiff`` for every job
TINY_SAM_LAUNCHER = (
    "import sys; sys.path.insert(0, {here!r}); from gpu_rehearsal import register_tiny_sam; register_tiny_sam(); "
    "from regionaldiff.cli import main; main()"
)
#: what the projection scales to: THINGS-EEG2's images (maps), its training images (the frozen recipe's EEG-free
#: ControlNet), and the test images of a whole study (10 subjects x 200)
ALL_IMAGES, TRAIN_IMAGES, STUDY_TEST_IMAGES = 16740, 16540, 2000


def register_tiny_sam() -> None:
    """Register :data:`TINY_SAM` in segment-anything's registry (the dry run's SAM: a 2-block, 32-wide image encoder
    and SAM's own prompt encoder and mask decoder; ViT-B costs about 40 s an image on a CPU)."""
    from segment_anything.build_sam import _build_sam, sam_model_registry

    def build(checkpoint=None):
        return _build_sam(
            encoder_embed_dim=32, encoder_depth=2, encoder_num_heads=2, encoder_global_attn_indexes=[1],
            checkpoint=checkpoint,
        )  # fmt: skip

    sam_model_registry[TINY_SAM] = build


def write_weights(weights: Path, dry_run: bool) -> dict[str, str]:
    """Random-weight models in the layouts ``regionaldiff`` reads; returns the overrides that point at them.

    Written once per ``weights`` folder (a stamp file; same seeds, so a rerun in the same ``--workdir`` finds the same
    files and the caches keyed by them)."""
    sam_type = TINY_SAM if dry_run else "vit_h"
    sam_path = weights / "sam" / f"sam_{sam_type}_random.pth"
    overrides = {"sam_checkpoint": str(sam_path), "sam_type": sam_type}
    stamp = weights / f".written-{'dry' if dry_run else 'full'}"
    if stamp.is_file():
        return overrides

    import torch
    import torchvision
    from diffusers import UNet2DConditionModel
    from segment_anything import sam_model_registry
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from regionaldiff.ldm.adapter import save_ip_adapter_layout
    from regionaldiff.ldm.sd15 import save_sd15_layout, save_text_encoder_layout

    torch.manual_seed(0)
    sd_folder = weights / "stable-diffusion-v1-5"
    if dry_run:
        save_sd15_layout(sd_folder, width=0.05, cross_attention_dim=DRY_CROSS_DIM, layers_per_block=1)
        clip = CLIPVisionConfig(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32,
            patch_size=8, projection_dim=32,
        )  # fmt: skip
        register_tiny_sam()
    else:
        save_sd15_layout(sd_folder)
        clip = CLIPVisionConfig(  # ViT-L/14's vision tower
            hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16, image_size=224,
            patch_size=14, projection_dim=768,
        )  # fmt: skip
    CLIPVisionModelWithProjection(clip).save_pretrained(weights / "clip-vit-large-patch14")
    # IP-Adapter for SD-1.5 (ldm=sd15_frozen_*): SD-1.5's text encoder and tokenizer for the empty prompt (one layer:
    # it runs once per model build; the width, 768, is SD-1.5's), the adapter's projection and image attention for
    # this UNet, and its image encoder (OpenCLIP ViT-H/14), in h94/IP-Adapter's layout (docs/setup.md)
    save_text_encoder_layout(sd_folder, hidden_size=DRY_CROSS_DIM if dry_run else 768)
    unet = UNet2DConditionModel.from_pretrained(str(sd_folder), subfolder="unet")
    image_encoder = DRY_IMAGE_ENCODER if dry_run else VIT_H14
    save_ip_adapter_layout(weights / "IP-Adapter", unet, image_encoder["projection_dim"], image_encoder=image_encoder)
    del unet
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
    stamp.write_text("")
    return overrides


def run(args: list[str], cwd: Path, log: Path, tiny_sam: bool = False) -> float:
    """``regionaldiff ARGS`` in a fresh process (output to ``log``); its wall time in seconds. ``tiny_sam``: with
    :data:`TINY_SAM` registered (the dry run)."""
    if tiny_sam:
        program = ["-c", TINY_SAM_LAUNCHER.format(here=str(Path(__file__).resolve().parent))]
    else:
        program = ["-m", "regionaldiff"]
    start = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.run([sys.executable, *program, *args], cwd=cwd, stdout=out, stderr=out)
    if proc.returncode:
        raise SystemExit(f"regionaldiff failed ({proc.returncode}); see {log}")
    return time.perf_counter() - start


def window_mean(client, run_id: str, key: str, start_ms: int, end_ms: int) -> float | None:
    """Mean of a system metric over ``[start_ms, end_ms]`` (None when it was not recorded: no GPU, no pynvml)."""
    values = [m.value for m in client.get_metric_history(run_id, key) if start_ms <= m.timestamp <= end_ms]
    return sum(values) / len(values) if values else None


def make_row(client, run, job: str, step: str, seconds: float, end_ms: int, amount: float, unit: str, **extra) -> dict:
    """One table row: wall time, throughput, and GPU/CPU utilisation and GPU memory over ``seconds`` up to
    ``end_ms``."""
    start_ms = int(end_ms - 1000 * seconds)
    run_id = run.info.run_id
    if unit == "reused":
        throughput = "reused"
    else:
        throughput = f"{amount / seconds:.1f} {unit}/s" if amount and seconds > 0 else ""
    return {
        "job": job,
        "step": step,
        "seconds": seconds,
        "samples": amount,
        "unit": unit,
        "throughput": throughput,
        "gpu_util_%": window_mean(client, run_id, "system/gpu_0_utilization_percentage", start_ms, end_ms),
        "gpu_mem_mb": window_mean(client, run_id, "system/gpu_0_memory_usage_megabytes", start_ms, end_ms),
        "cpu_util_%": window_mean(client, run_id, "system/cpu_utilization_percentage", start_ms, end_ms),
        **extra,
    }


def last_metric(client, run_id: str, key: str):
    """The last recorded value of ``key`` (with its timestamp), or None."""
    history = client.get_metric_history(run_id, key)
    return history[-1] if history else None


def done_info(folder: str | None) -> dict:
    """The ``DONE`` record of an artifact folder (empty when there is none)."""
    try:
        return json.loads((Path(str(folder)) / "DONE").read_text())
    except (OSError, ValueError, TypeError):
        return {}


def step_rows(tracking_uri: str, experiment: str, batches: int, batch_sizes: dict[str, int]) -> list[dict]:
    """One row per (job, step) of a multirun's jobs: wall time, throughput, GPU utilisation and memory over the step's
    window. A frozen-recipe job (``ldm=sd15_frozen_*``) adds, after its ``finetune``, the EEG-free ControlNet's
    training (its own seconds and samples) and the rest of that step (the latent cache of the training images, the
    model builds, saving).

    ``batches``: the training batches each training step ran (the limit); ``batch_sizes``: per training step."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    runs = [r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("mlflow.parentRunId")]
    rows = []
    encoders_seen: set[str] = set()  # a later job of the sweep reuses the encoder artifact of an earlier one
    for run in sorted(runs, key=lambda r: r.info.start_time):
        encoder = run.data.tags.get("artifact.encoder", "")
        reused = {"pretrain"} if encoder in encoders_seen else set()
        encoders_seen.add(encoder)
        m, p, tags = run.data.metrics, run.data.params, run.data.tags
        ldm = p.get("ldm.name", tags.get("mlflow.runName", "?"))
        n_train = m.get("data/n_train", 0)
        trained = {step: min(batches * size, n_train) for step, size in batch_sizes.items()}
        work = {
            "prepare": (n_train + m.get("data/n_val", 0) + m.get("data/n_test", 0), "trials"),
            "pretrain": (trained["pretrain"], "training samples"),
            "finetune": (trained["finetune"], "training samples"),
            "generate": (m.get("data/n_test", 0) * float(p.get("ldm.sampling.samples_per_eeg", 1)), "images"),
            "evaluate": (m.get("data/n_test", 0), "trials"),
        }
        controlnet = last_metric(client, run.info.run_id, "frozen/region_controlnet_train_seconds")
        if controlnet is not None:  # the frozen recipe trains nothing on EEG: its finetune is the EEG-free parts
            work["finetune"] = (0, "")
            if tags.get("frozen.region_controlnet") == "reused":
                reused.add("finetune")
        for step in STEPS:
            history = client.get_metric_history(run.info.run_id, f"time/{step}_s")
            if not history:
                continue
            seconds, end_ms = history[-1].value, history[-1].timestamp
            amount, unit = (0, "reused") if step in reused else work[step]
            rows.append(make_row(client, run, ldm, step, seconds, end_ms, amount, unit, n_train=n_train))
            if step != "finetune" or controlnet is None or step in reused:
                continue
            samples = m.get("frozen/region_controlnet_train_samples", 0)
            part = "finetune: ControlNet training"
            rows.append(
                make_row(client, run, ldm, part, controlnet.value, controlnet.timestamp, samples, "training images")
            )
            # the rest of the step, before the ControlNet's training: the latent cache of every training image (all
            # of them whatever the batch limit), SD-1.5 + IP-Adapter + ControlNet built, the model folder saved
            cached = int(done_info(tags.get("artifact.frozen_latent_cache")).get("n", 0))
            rest, rest_end_ms = max(seconds - controlnet.value, 0.0), int(end_ms - 1000 * controlnet.value)
            part = "finetune: latent cache, builds, saving"
            rows.append(make_row(client, run, ldm, part, rest, rest_end_ms, cached, "images (latent cache)"))
    return rows


def sam_row(tracking_uri: str, experiment: str, points: int, process_s: float | None) -> dict | None:
    """The row of a ``pipeline.steps=[prepare] regionmap=sam`` run: its prepare step (SAM's maps of every image,
    SAM's loading, and the subset's dataset cache: a few seconds at this size) and its images."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return None
    runs = client.search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"], max_results=1)
    prepare = last_metric(client, runs[0].info.run_id, "time/prepare_s") if runs else None
    if prepare is None:
        return None
    m = runs[0].data.metrics
    images = m.get("data/n_train", 0) + m.get("data/n_val", 0) + m.get("data/n_test", 0)  # 1 subject: a trial an image
    job = f"sam ({points} points per side)"
    return make_row(
        client, runs[0], job, "prepare", prepare.value, prepare.timestamp, images, "images", points_per_side=points,
        process_s=process_s,
    )  # fmt: skip


def recipe(overrides: list[str]) -> dict[str, dict[str, int]]:
    """Epochs and batch sizes of the recipe a full run uses (the composed config without the rehearsal's limits)."""
    from regionaldiff.config import compose_config

    cfg = compose_config(overrides)
    return {
        "epochs": {"pretrain": int(cfg.encoder.max_epochs), "finetune": int(cfg.ldm.max_epochs)},
        "batch_size": {"pretrain": int(cfg.dataset.batch_size), "finetune": int(cfg.ldm.batch_size)},
    }


def project(rows: list[dict], recipes: dict[str, dict]) -> dict[str, float]:
    """Hours of the full recipes from the measured rows (each a rate: a one-time cache or warm-up in a measured step
    makes its projection an upper bound).

    - SAM: ``sam_<n>_points_per_side_hours_16740_images``, all of THINGS-EEG2's images at each point grid;
    - training steps: ``<job>_<step>_hours_full_recipe``, the recipe's epochs over all training trials;
    - the frozen recipe's EEG-free ControlNet: ``<job>_controlnet_hours_16540_images_x_<epochs>_epochs`` (its
      ``ldm.max_epochs``), and ``<job>_latent_cache_hours_16540_images`` (the rest of its finetune step, per image);
    - generation: ``<job>_generate_hours_2000_images``, a whole study's test images (10 subjects x 200)."""
    out: dict[str, float] = {}
    for r in rows:
        job, step, seconds, amount = r["job"], r["step"], r["seconds"], r["samples"]
        if not amount or seconds <= 0:
            continue
        per_item = seconds / amount
        full = recipes.get(job)
        if job.startswith("sam ("):
            out[f"sam_{r['points_per_side']}_points_per_side_hours_{ALL_IMAGES}_images"] = ALL_IMAGES * per_item / 3600
        elif step == "finetune: ControlNet training" and full is not None:
            epochs = full["epochs"]["finetune"]
            out[f"{job}_controlnet_hours_{TRAIN_IMAGES}_images_x_{epochs}_epochs"] = (
                TRAIN_IMAGES * epochs * per_item / 3600
            )
        elif step == "finetune: latent cache, builds, saving":
            out[f"{job}_latent_cache_hours_{TRAIN_IMAGES}_images"] = TRAIN_IMAGES * per_item / 3600
        elif step == "generate":
            out[f"{job}_generate_hours_{STUDY_TEST_IMAGES}_images"] = STUDY_TEST_IMAGES * per_item / 3600
        elif full is not None and step in full["epochs"]:
            # the measured step (one-time caches included) scaled to the recipe's epochs over all training trials
            out[f"{job}_{step}_hours_full_recipe"] = per_item * r["n_train"] * full["epochs"][step] / 3600
    return out


def print_table(rows: list[dict], title: str) -> None:
    print(f"\n{title}")
    print("| job | step | wall (s) | throughput | GPU util (%) | GPU memory (GB) | CPU util (%) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        gpu = "n/a" if r["gpu_util_%"] is None else f"{r['gpu_util_%']:.0f}"
        mem = "n/a" if r["gpu_mem_mb"] is None else f"{r['gpu_mem_mb'] / 1024:.1f}"
        cpu = "n/a" if r["cpu_util_%"] is None else f"{r['cpu_util_%']:.0f}"
        print(f"| {r['job']} | {r['step']} | {r['seconds']:.1f} | {r['throughput']} | {gpu} | {mem} | {cpu} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="small shapes on the CPU (checks the rehearsal)")
    parser.add_argument("--workdir", type=Path, default=None, help="where inputs and outputs go (default: temp)")
    parser.add_argument("--train-batches", type=int, default=200, help="training batches per step (limit)")
    parser.add_argument("--sam-images", type=int, default=120, help="training images SAM maps (its time is projected)")
    parser.add_argument("--skip-frozen", action="store_true", help="leave out the frozen recipe's job (shorter)")
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
            write_things(sam_root, 1, 3 if dry else n_sam, 1 if dry else 10, 1 if dry else 20)
        sam = write_weights(weights, dry)
        wall: dict[str, float] = {"inputs": time.perf_counter() - start}
        print(f"inputs written in {wall['inputs']:.0f} s under {work}")

        common = [
            "dataset=things_eeg2",
            f"dataset.subjects=[{','.join(str(s) for s in range(1, subjects + 1))}]",
            "encoder=dreamdiffusion",
            "eval=things",
            f"paths.weights_dir={weights}",
            f"paths.root_dir={work}",
            f"trainer={'cpu' if dry else 'gpu'}",
            "trainer.enable_progress_bar=false",
        ]
        # the narrow SD-1.5 of the dry run (its batch size also enters the projection)
        small_ldm = ["ldm.image_size=64", f"ldm.unet.cross_attention_dim={DRY_CROSS_DIM}", "ldm.batch_size=4"]
        small_ldm = small_ldm if dry else []
        common += small_ldm
        if dry:
            common += [
                *DRY_ENCODER,
                "dataset.val_fraction=0.25",
                "ldm.sampling.num_steps=2",
                "ldm.sampling.samples_per_eeg=1",
                "eval.retrieval.repetitions=[1,5]",
            ]
        tracking = f"sqlite:///{work / 'outputs' / 'mlflow.db'}"
        base = ["dataset=things_eeg2", "encoder=dreamdiffusion", *small_ldm]
        full, frozen_recipe = recipe([*base, "ldm=sd15_regional"]), recipe([*base, "ldm=sd15_frozen_regional"])
        recipes = {"sd15_global": full, "sd15_regional": full, "sd15_frozen_regional": frozen_recipe}
        report: dict[str, object] = {
            "dry_run": dry,
            "train_batches_per_step": args.train_batches,
            "recipe": full,
            "recipe_frozen": frozen_recipe,
            "wall_s": wall,
        }
        sam_rows: list[dict] = []
        job_rows: list[dict] = []

        def write_report() -> None:
            """``rehearsal.json`` with what is measured so far (rewritten after each phase: a cut run keeps it)."""
            rows = sam_rows + job_rows
            report.update(rows=rows, projection=project(rows, recipes))
            (work / "rehearsal.json").write_text(json.dumps(report, indent=2))

        # 1. SAM's maps through the entrypoint, on a subset of the images, at two point grids (time per image ->
        # projection); the map cache is keyed by the generator's settings, points_per_side included, so the second
        # run computes its own maps (the subset's dataset cache, a few seconds, is built by the first)
        for points in SAM_POINTS_DRY if dry else SAM_POINTS:
            experiment = f"rehearsal_sam{points}"
            sam_args = [
                *common,
                "encoder/align=clip",
                f"dataset.root={sam_root}",
                "regionmap=sam",
                f"regionmap.checkpoint={sam['sam_checkpoint']}",
                f"regionmap.model_type={sam['sam_type']}",
                f"regionmap.points_per_side={points}",
                "pipeline.steps=[prepare]",
                f"logger.experiment_name={experiment}",
                f"hydra.run.dir=outputs/runs/{experiment}",
            ]
            # a finished run of this workdir is read back, not run again: its maps are cached, a second run would
            # time the cache
            row = sam_row(tracking, experiment, points, None) if (work / "outputs" / "mlflow.db").is_file() else None
            if row is None:
                wall[experiment] = run(sam_args, work, work / f"sam{points}.log", tiny_sam=dry)
                row = sam_row(tracking, experiment, points, wall[experiment])
            sam_rows += [row] if row else []
            write_report()
        limits = ["encoder.max_epochs=1", "ldm.max_epochs=1", f"trainer.limit_train_batches={args.train_batches}"]
        # 2. the frozen recipe (SD-1.5 and IP-Adapter frozen, the region ControlNet trained once on the images and
        # their maps from a latent cache, the encoder aligned to IP-Adapter's image encoder): its own invocation (its
        # alignment is not the sweep's), the same limits; evaluate left out (the same metrics on as many images as the
        # sweep's jobs score). Before the sweep, so that a run cut short by the device's time keeps what the frozen
        # recipe's projection lacks (the GPU check measured the seed's recipe's training rates)
        if not args.skip_frozen:
            frozen = [
                "-m",
                "ldm=sd15_frozen_regional",
                *common,
                "encoder/align=ip_adapter",
                f"dataset.root={root}",
                "regionmap=slic",
                *limits,
                "pipeline.steps=[prepare,pretrain,finetune,generate]",
                "logger.experiment_name=rehearsal_frozen",
            ]
            wall["frozen"] = run(frozen, work, work / "frozen.log")
            job_rows += step_rows(tracking, "rehearsal_frozen", args.train_batches, frozen_recipe["batch_size"])
            write_report()

        # 3. the two SD-1.5 variants as one multirun, every step, limited batches
        sweep = [
            "-m",
            "ldm=sd15_global,sd15_regional",
            *common,
            "encoder/align=clip",
            f"dataset.root={root}",
            "regionmap=slic",
            *limits,
            "logger.experiment_name=rehearsal",
        ]
        wall["sweep"] = run(sweep, work, work / "sweep.log")
        job_rows += step_rows(tracking, "rehearsal", args.train_batches, full["batch_size"])
        write_report()

        title = "DRY RUN (CPU, small shapes): times mean nothing" if dry else "GPU rehearsal"
        print_table(sam_rows + job_rows, f"{title}; " + ", ".join(f"{k} {v:.0f} s" for k, v in wall.items()))
        print(json.dumps(report["projection"], indent=2))
    finally:
        if not args.keep and args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
