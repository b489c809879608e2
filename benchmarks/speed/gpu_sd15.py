"""The GPU check of the SD-1.5 path, one command, no downloads, a few minutes on one H100/A100:

1. training: the full-size SD-1.5 UNet and a ControlNet made from it (random weights from SD-1.5's config), our
   default recipe (UNet LoRA rank 8, ControlNet trained, cached latents: random 64x64 latents stand in for them),
   bf16 autocast, SDPA attention, fused AdamW, gradient checkpointing unless ``--no-checkpointing``, batch 8 at
   512 px; 20 timed steps after warm-up -> samples/s, peak
   GPU memory, and model FLOPs utilisation (FLOPs of one step counted by ``torch.utils.flop_counter``, against
   ``--peak-tflops``); then the same model without the ControlNet trained by our recipe and by DreamDiffusion's
   (fp32, the SD VAE encodes the 512 px images and a CLIP ViT-L/14 runs at every step, every UNet weight requires
   grad while attn2/norm2 are stepped): the training-throughput ratio at full size;
2. sampling: UNet (+ ControlNet) evaluations/s with classifier-free guidance, batch 8, DPM++ 2M 25 steps;
3. region maps: SAM ViT-H map generation in images/s with the batched image encoder (``benchmarks/speed/bench_sam.py``).

Results of one H100 and how to carry the packages a bare GPU machine lacks: ``docs/benchmarks.md`` ("The GPU
check"), raw output in ``docs/results/gpu_sd15_h100.json``. Usage (on the GPU machine, in the repository, with the project
installed, ``pip install -e .``, or ``src`` on ``PYTHONPATH``)::

    python benchmarks/speed/gpu_sd15.py --out gpu_sd15.json                       # the default recipe, all three parts
    python benchmarks/speed/gpu_sd15.py --no-checkpointing --batch 16 --recipes ours --skip-sam
    python benchmarks/speed/gpu_sd15.py --recipes dreamdiffusion --dreamdiffusion-attention plain
    python benchmarks/speed/gpu_sd15.py --device cpu --dry-run     # tiny shapes: checks the script itself on a CPU
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path


def build(dry_run: bool, device: str, recipe: str, checkpointing: bool = True, plain_attention: bool = False):
    """The full-size SD-1.5 UNet (and, for ``ours``, a ControlNet), trainable as the recipe says; for
    ``dreamdiffusion`` also the VAE and a CLIP ViT-L/14 vision tower that run at every step."""
    import torch
    from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel

    from regionaldiff.config import LoraConfig
    from regionaldiff.ldm.sd15 import SD15_UNET, SD15_VAE, unet_config, vae_config

    config = unet_config(0.05, cross_attention_dim=32) if dry_run else dict(SD15_UNET)
    if dry_run:
        config["layers_per_block"] = 1
    torch.manual_seed(0)
    with torch.device(device):  # random weights made on the device: seconds instead of a minute on the host
        unet = UNet2DConditionModel(**config)
    controlnet = None
    extras: dict = {}
    if recipe == "ours":
        with torch.device(device):
            controlnet = ControlNetModel.from_unet(
                unet, conditioning_embedding_out_channels=(16, 32, 96, 256), conditioning_channels=41
            )
        controlnet.requires_grad_(True)
    if recipe in ("ours", "ours_global"):
        from regionaldiff.ldm.trainable import add_lora

        lora = LoraConfig(rank=8, alpha=8, dropout=0.0, target_modules=["to_q", "to_k", "to_v", "to_out.0"])
        add_lora(unet, lora)
        for name, param in unet.named_parameters():
            param.requires_grad_("lora_" in name)
    else:  # DreamDiffusion: every UNet weight requires grad, only attn2/norm2 are stepped; VAE and CLIP every step
        from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

        unet.requires_grad_(True)
        if plain_attention:  # DreamDiffusion's CompVis UNet: softmax(QK^T)V in einsum, no fused SDPA kernel
            from diffusers.models.attention_processor import AttnProcessor

            unet.set_attn_processor(AttnProcessor())
        vae_kwargs = vae_config(0.05) if dry_run else dict(SD15_VAE)
        if dry_run:
            clip_config = CLIPVisionConfig(
                hidden_size=32,
                intermediate_size=64,
                num_hidden_layers=1,
                num_attention_heads=2,
                image_size=32,
                patch_size=16,
                projection_dim=32,
            )
        else:  # ViT-L/14
            clip_config = CLIPVisionConfig(
                hidden_size=1024,
                intermediate_size=4096,
                num_hidden_layers=24,
                num_attention_heads=16,
                image_size=224,
                patch_size=14,
                projection_dim=768,
            )
        with torch.device(device):
            extras["vae"] = AutoencoderKL(**vae_kwargs).requires_grad_(False).eval()
            extras["clip"] = CLIPVisionModelWithProjection(clip_config).requires_grad_(False).eval()
    for module in (unet, controlnet):
        if module is None:
            continue
        if recipe == "dreamdiffusion":
            module.to(device)
        else:
            module.to(device, memory_format=torch.channels_last)
        if checkpointing:
            module.enable_gradient_checkpointing()
    return unet, controlnet, int(config["cross_attention_dim"]), extras


def train_benchmark(args, recipe: str) -> dict:
    """Samples/s, peak memory and MFU of training steps by ``recipe`` (``ours``, ``ours_global`` or
    ``dreamdiffusion``); for ``ours`` also UNet + ControlNet evaluations/s when sampling with guidance."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    device = torch.device(args.device)
    unet, controlnet, cross_dim, extras = build(
        args.dry_run, args.device, recipe, not args.no_checkpointing, args.dreamdiffusion_attention == "plain"
    )
    modules = [m for m in (unet, controlnet) if m is not None]
    if recipe == "dreamdiffusion":  # stepped: attn2 and norm2 only (the conditioner is left out on both sides)
        params = [p for n, p in unet.named_parameters() if ".attn2." in f".{n}" or ".norm2." in f".{n}"]
    else:
        params = [p for m in modules for p in m.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-5, fused=device.type == "cuda")
    batch, side = (2, 8) if args.dry_run else (args.batch, 64)
    latents = torch.randn(batch, 4, side, side, device=device)
    images = torch.rand(batch, 3, side * 8, side * 8, device=device) * 2 - 1
    context = torch.randn(batch, 77, cross_dim, device=device)
    cond = torch.rand(batch, 41, side * 8, side * 8, device=device) * 2 - 1
    steps_t = torch.randint(0, 1000, (batch,), device=device)
    use_bf16 = device.type == "cuda" and recipe != "dreamdiffusion"  # DreamDiffusion trains in fp32

    def step() -> None:
        target = latents
        if recipe == "dreamdiffusion":
            with torch.no_grad():
                target = extras["vae"].encode(images).latent_dist.sample() * 0.18215
                clip_size = extras["clip"].config.image_size
                pixels = torch.nn.functional.interpolate(images, size=(clip_size, clip_size), mode="bicubic")
                extras["clip"](pixel_values=pixels)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
            down = mid = None
            if controlnet is not None:
                down, mid = controlnet(
                    target, steps_t, encoder_hidden_states=context, controlnet_cond=cond, return_dict=False
                )
            pred = unet(
                target,
                steps_t,
                encoder_hidden_states=context,
                down_block_additional_residuals=down,
                mid_block_additional_residual=mid,
            ).sample
        loss = torch.nn.functional.mse_loss(pred.float(), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(1 if args.dry_run else 3):
        step()
    with FlopCounterMode(display=False) as counter:
        step()
    flops = counter.get_total_flops()
    sync()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    n = 2 if args.dry_run else args.train_steps
    start = time.perf_counter()
    for _ in range(n):
        step()
    sync()
    seconds = (time.perf_counter() - start) / n
    out = {
        "recipe": recipe,
        "batch": batch,
        "latent_side": side,
        "s_per_step": seconds,
        "samples_per_s": batch / seconds,
        "tflop_per_step": flops / 1e12,
        "achieved_tflops": flops / seconds / 1e12,
        "mfu": flops / seconds / (args.peak_tflops * 1e12),
        "stepped_params": sum(p.numel() for p in params),
    }
    if device.type == "cuda":
        out["peak_gpu_gb"] = torch.cuda.max_memory_allocated() / 2**30
    if controlnet is None:
        return out

    # sampling: guided UNet + ControlNet evaluations (the conditional and null halves in one batch)
    unet.eval()
    controlnet.eval()
    evals = 0
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
        doubled = [torch.cat([x, x]) for x in (latents, context, cond)]
        t = torch.full((2 * batch,), 500, device=device)
        n_steps = 3 if args.dry_run else 25
        for i in range(n_steps + 2):
            if i == 2:
                sync()
                start = time.perf_counter()
            down, mid = controlnet(
                doubled[0], t, encoder_hidden_states=doubled[1], controlnet_cond=doubled[2], return_dict=False
            )
            unet(
                doubled[0],
                t,
                encoder_hidden_states=doubled[1],
                down_block_additional_residuals=down,
                mid_block_additional_residual=mid,
            )
            evals += 2 * batch if i >= 2 else 0
        sync()
    out["sampling_unet_evals_per_s"] = evals / (time.perf_counter() - start)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--train-steps", type=int, default=20)
    p.add_argument("--peak-tflops", type=float, default=989.0, help="dense bf16 peak of the GPU (H100 SXM: 989)")
    p.add_argument("--dry-run", action="store_true", help="tiny shapes, to check the script on a CPU")
    p.add_argument("--recipes", nargs="+", default=["ours", "ours_global", "dreamdiffusion"])
    p.add_argument("--no-checkpointing", action="store_true", help="no gradient checkpointing (big GPUs)")
    p.add_argument(
        "--dreamdiffusion-attention",
        choices=["sdpa", "plain"],
        default="sdpa",
        help="plain: DreamDiffusion's own einsum attention (its code has no SDPA); sdpa: diffusers' default",
    )
    p.add_argument("--skip-sam", action="store_true")
    p.add_argument("--sam-timeout", type=float, default=240.0, help="seconds before the SAM part is given up")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    import diffusers
    import torch

    result: dict = {
        "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else args.device,
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "gradient_checkpointing": not args.no_checkpointing,
        "dreamdiffusion_attention": args.dreamdiffusion_attention,
    }

    def save() -> None:  # after every part, so that a run stopped at its time limit keeps what it measured
        text = json.dumps(result, indent=2)
        print(text, flush=True)
        if args.out:
            Path(args.out).write_text(text)

    for recipe in args.recipes:
        try:
            result[recipe] = train_benchmark(args, recipe)
        except (torch.OutOfMemoryError, RuntimeError) as error:  # e.g. out of memory: the others still run
            result[recipe] = f"failed: {type(error).__name__}: {error}"[:2000]
        if args.device.startswith("cuda"):
            torch.cuda.empty_cache()
        save()
    if isinstance(result.get("ours_global"), dict) and isinstance(result.get("dreamdiffusion"), dict):
        result["speedup_same_model"] = (
            result["ours_global"]["samples_per_s"] / result["dreamdiffusion"]["samples_per_s"]
        )
    if not args.skip_sam:
        sam_args = ["--device", args.device, "--images", "4" if args.dry_run else "32"]
        sam_args += (
            ["--model", "vit_b", "--batch-size", "1"]
            if args.dry_run
            else ["--model", "vit_h", "--batch-size", "8", "--points-per-side", "32", "--image-size", "256"]
        )
        try:
            proc = subprocess.run(
                [sys.executable, str(Path(__file__).with_name("bench_sam.py")), *sam_args],
                capture_output=True,
                text=True,
                timeout=args.sam_timeout,
            )
            result["sam"] = (
                json.loads(proc.stdout[proc.stdout.index("{") :]) if proc.returncode == 0 else proc.stderr[-2000:]
            )
        except subprocess.TimeoutExpired:
            result["sam"] = f"not finished within {args.sam_timeout:.0f} s"
    save()


if __name__ == "__main__":
    main()
