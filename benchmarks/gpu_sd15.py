"""The GPU check of the SD-1.5 path, one command, no downloads, a few minutes on one H100/A100:

1. training: the full-size SD-1.5 UNet and a ControlNet made from it (random weights from SD-1.5's config), our
   default recipe (UNet LoRA rank 8, ControlNet and conditioner-sized context trained, cached latents: random
   64x64 latents stand in for them), bf16 autocast, SDPA attention, fused AdamW, batch 8 at 512 px; 20 timed steps
   after warm-up -> samples/s, peak GPU memory, and model FLOPs utilisation (FLOPs of one step counted by
   ``torch.utils.flop_counter``, against ``--peak-tflops``);
2. sampling: UNet (+ ControlNet) evaluations/s with classifier-free guidance, batch 8, DPM++ 2M 25 steps;
3. region maps: SAM ViT-H map generation in images/s with the batched image encoder (``benchmarks/bench_sam.py``).

Usage (on the GPU machine, in the repository, with the project installed: ``pip install -e .``)::

    python benchmarks/gpu_sd15.py --out gpu_sd15.json
    python benchmarks/gpu_sd15.py --device cpu --dry-run     # tiny shapes: checks the script itself on a CPU
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path


def build(dry_run: bool, device: str):
    import torch
    from diffusers import ControlNetModel, UNet2DConditionModel

    from regionaldiff.config import LoraConfig
    from regionaldiff.ldm.sd15 import SD15_UNET, unet_config
    from regionaldiff.ldm.trainable import add_lora

    config = unet_config(0.05, cross_attention_dim=32) if dry_run else dict(SD15_UNET)
    if dry_run:
        config["layers_per_block"] = 1
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**config)
    controlnet = ControlNetModel.from_unet(
        unet, conditioning_embedding_out_channels=(16, 32, 96, 256), conditioning_channels=41
    )
    add_lora(unet, LoraConfig(rank=8, alpha=8, dropout=0.0, target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    for name, param in unet.named_parameters():
        param.requires_grad_("lora_" in name)
    controlnet.requires_grad_(True)
    for module in (unet, controlnet):
        module.to(device, memory_format=torch.channels_last)
        module.enable_gradient_checkpointing()
    return unet, controlnet, int(config["cross_attention_dim"])


def train_benchmark(args) -> dict:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    device = torch.device(args.device)
    unet, controlnet, cross_dim = build(args.dry_run, args.device)
    params = [p for m in (unet, controlnet) for p in m.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-5, fused=device.type == "cuda")
    batch, side = (2, 8) if args.dry_run else (args.batch, 64)
    latents = torch.randn(batch, 4, side, side, device=device)
    context = torch.randn(batch, 77, cross_dim, device=device)
    cond = torch.rand(batch, 41, side * 8, side * 8, device=device) * 2 - 1
    steps_t = torch.randint(0, 1000, (batch,), device=device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32

    def step() -> None:
        with torch.autocast(device.type, dtype=dtype, enabled=device.type == "cuda"):
            down, mid = controlnet(
                latents, steps_t, encoder_hidden_states=context, controlnet_cond=cond, return_dict=False
            )
            pred = unet(
                latents,
                steps_t,
                encoder_hidden_states=context,
                down_block_additional_residuals=down,
                mid_block_additional_residual=mid,
            ).sample
        loss = torch.nn.functional.mse_loss(pred.float(), latents)
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
        "batch": batch,
        "latent_side": side,
        "s_per_step": seconds,
        "samples_per_s": batch / seconds,
        "tflop_per_step": flops / 1e12,
        "achieved_tflops": flops / seconds / 1e12,
        "mfu": flops / seconds / (args.peak_tflops * 1e12),
        "trained_params": sum(p.numel() for p in params),
    }
    if device.type == "cuda":
        out["peak_gpu_gb"] = torch.cuda.max_memory_allocated() / 2**30

    # sampling: guided UNet + ControlNet evaluations (the conditional and null halves in one batch)
    unet.eval()
    controlnet.eval()
    evals = 0
    with torch.no_grad(), torch.autocast(device.type, dtype=dtype, enabled=device.type == "cuda"):
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
    p.add_argument("--skip-sam", action="store_true")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    import torch

    result: dict = {"device": torch.cuda.get_device_name() if args.device.startswith("cuda") else args.device}
    result["train_and_sample"] = train_benchmark(args)
    if not args.skip_sam:
        sam_args = ["--device", args.device, "--images", "4" if args.dry_run else "32"]
        sam_args += (
            ["--model", "vit_b", "--batch-size", "1"] if args.dry_run else ["--model", "vit_h", "--batch-size", "8"]
        )
        proc = subprocess.run(
            [sys.executable, str(Path(__file__).with_name("bench_sam.py")), *sam_args], capture_output=True, text=True
        )
        result["sam"] = (
            json.loads(proc.stdout[proc.stdout.index("{") :]) if proc.returncode == 0 else proc.stderr[-2000:]
        )
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
