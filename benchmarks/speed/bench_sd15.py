"""Stable Diffusion 1.5 path: training throughput, generation time and peak memory, measured side by side.

Everything is built through the project's own code (``ldm=sd15_*`` composed from ``conf/``, the components,
``LDMFinetuneModule``, ``denoise``) on an SD-1.5-layout folder with random weights
(:func:`regionaldiff.ldm.sd15.save_sd15_layout`): narrowed for a CPU (``--width``), or full size.

Measurements (each in a fresh subprocess, so peak memory is the step's own):

``train``     samples/s of our default SD recipe (LoRA UNet and conditioner trained, latents and CLIP embeddings
              from the latent cache, condition dropout with a learned null context) against DreamDiffusion's recipe
              as its code runs it (fp32, the VAE encodes each image at every step, CLIP runs at every step, every
              UNet weight requires grad while only the conditioner, ``attn2`` and ``norm2`` are stepped), on the
              same model (``ldm=sd15_global``, DreamDiffusion's: no ControlNet); and our regional model
              (``ldm=sd15_regional``, + the ControlNet trained) for reference. Batch ``--batch``, ``--size`` px.
``sample``    seconds per image of our default sampler (DPM++ 2M, 25 steps, guidance 3) against DreamDiffusion's
              PLMS, 250 steps, no guidance, on the same model (at ``--sample-size`` px: the ratio is set by the
              UNet evaluations, 50 against 250; 250 of them at 512 px take the better part of an hour on 2 cores).
``memory``    peak resident memory of one training step for each trainable UNet subset.
``fullsize``  one training step of the full-size SD-1.5 UNet (random weights from SD-1.5's config, LoRA, batch 1,
              64x64 latents): time and peak memory, proof that the real shapes run.

Usage::

    python benchmarks/speed/bench_sd15.py                        # everything, narrow model (width 0.1), 512 px
    python benchmarks/speed/bench_sd15.py --only train sample --width 0.1 --size 256 --steps 5
    python benchmarks/speed/bench_sd15.py --only fullsize

Results as JSON on stdout (and ``--out FILE``); docs/benchmarks.md records them with the command.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CLIP_DIM = 32  # the stand-in CLIP's projection width


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def write_weights(root: Path, width: float, cross_dim: int) -> None:
    """A narrow SD-1.5-layout folder and a small CLIP vision tower where the sd15 configs look for them."""
    import torch
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from regionaldiff.ldm.sd15 import save_sd15_layout

    if not (root / "stable-diffusion-v1-5" / "model_index.json").is_file():
        save_sd15_layout(root / "stable-diffusion-v1-5", width=width, cross_attention_dim=cross_dim)
    if not (root / "clip-vit-large-patch14" / "config.json").is_file():
        torch.manual_seed(0)
        config = CLIPVisionConfig(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            image_size=224,
            patch_size=32,
            projection_dim=CLIP_DIM,
        )
        CLIPVisionModelWithProjection(config).save_pretrained(root / "clip-vit-large-patch14")


def compose_ldm(weights: Path, size: int, cross_dim: int, *overrides: str):
    from regionaldiff.config import compose_config
    from regionaldiff.validation import validate

    cfg = compose_config(
        [
            f"paths.root_dir={weights.parent}",
            f"paths.weights_dir={weights}",
            f"ldm.image_size={size}",
            f"ldm.unet.cross_attention_dim={cross_dim}",
            *overrides,
        ]
    )
    return validate(cfg).ldm


def build_module(recipe: str, weights: Path, size: int, cross_dim: int, batch: int, unet_mode: str | None = None):
    """The LDM, its training module and a batch for ``recipe``: ``ours`` or ``dreamdiffusion``."""
    import numpy as np
    import torch

    from regionaldiff.data.base import image_to_tensor
    from regionaldiff.encoder.mae import EEGMaskedAutoencoder
    from regionaldiff.ldm.clip_alignment import ClipImageEmbedder
    from regionaldiff.ldm.latent_cache import compute_latent_cache
    from regionaldiff.ldm.module import LDMFinetuneModule
    from regionaldiff.reconstruction import build_ldm_and_codec

    torch.manual_seed(0)
    n_classes = 40
    encoder = EEGMaskedAutoencoder(
        128,
        440,
        1000.0,
        n_classes,
        embed_dim=64,
        depth=2,
        num_heads=4,
        decoder_embed_dim=32,
        decoder_depth=1,
        decoder_num_heads=4,
        region_grid=16,
    )
    images = (np.random.default_rng(0).random((batch, size, size, 3)) * 255).astype(np.uint8)
    ids = [f"img{i}" for i in range(batch)]
    batch_dict = {
        "eeg": torch.randn(batch, 128, 440),
        "image": torch.stack([image_to_tensor(im) for im in images]),
        "image_id": ids,
        "label": torch.randint(0, n_classes, (batch,)),
    }
    if recipe in ("ours", "ours_global"):
        extra = [f"ldm.train.unet={unet_mode}"] if unet_mode else []
        variant = "sd15_regional" if recipe == "ours" else "sd15_global"  # global: DreamDiffusion's model
        cfg = compose_ldm(weights, size, cross_dim, f"ldm={variant}", *extra)
        ldm, codec = build_ldm_and_codec(cfg, encoder, size)
        clip = ClipImageEmbedder(str(cfg.clip_loss.pretrained))
        cache = compute_latent_cache(ids, list(images), codec, size, clip)  # once, before training (an artifact)
        module = LDMFinetuneModule(
            encoder,
            ldm,
            codec,
            cfg.lr,
            cfg.weight_decay,
            "predicted",
            latent_cache=cache,
            clip_weight=cfg.clip_loss.weight,
        )
        from regionaldiff.ldm.trainable import apply_speed_options

        apply_speed_options([m for m in (ldm.unet, ldm.controlnet) if m is not None], cfg.train)
        optimizer = module.configure_optimizers()
    else:  # DreamDiffusion as its code runs it
        cfg = compose_ldm(
            weights,
            size,
            cross_dim,
            "ldm=sd15_global",
            "ldm.train.unet=full",
            "ldm.null_condition=zeros",
            "ldm.train.latent_cache=false",
        )
        ldm, codec = build_ldm_and_codec(cfg, encoder, size)
        ldm.unet.enable_gradient_checkpointing()
        clip = ClipImageEmbedder(str(cfg.clip_loss.pretrained))
        module = LDMFinetuneModule(
            encoder, ldm, codec, cfg.lr, cfg.weight_decay, "predicted", clip=clip, clip_weight=cfg.clip_loss.weight
        )
        stepped = [p for n, p in ldm.unet.named_parameters() if ".attn2." in f".{n}" or ".norm2." in f".{n}"]
        head = list(module.clip_head.parameters()) if module.clip_head is not None else []
        optimizer = torch.optim.AdamW([*stepped, *ldm.conditioner.parameters(), *head], lr=cfg.lr)
    module.train()
    return module, optimizer, batch_dict


def train_steps(module, optimizer, batch: dict, steps: int, warmup: int = 1) -> float:
    """Seconds per training step (forward, backward, optimiser step) after ``warmup`` steps."""
    times = []
    for i in range(warmup + steps):
        start = time.perf_counter()
        loss = module._loss(batch, module.train_maps)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return sum(times) / len(times)


def child(args: argparse.Namespace) -> dict:
    """One measurement, in this (fresh) process."""
    import torch

    torch.set_num_threads(args.threads)
    weights = Path(args.weights) if args.weights else Path(".")  # fullsize builds from config, reads no folder
    base_rss = peak_rss_mb()
    if args.child == "train":
        module, optimizer, batch = build_module(args.recipe, weights, args.size, args.cross_dim, args.batch, args.unet)
        rss_built = peak_rss_mb()
        seconds = train_steps(module, optimizer, batch, args.steps)
        trained = sum(p.numel() for p in module.ldm.parameters() if p.requires_grad)
        return {
            "recipe": args.recipe,
            "unet": args.unet,
            "s_per_step": seconds,
            "samples_per_s": args.batch / seconds,
            "peak_rss_mb": peak_rss_mb(),
            "rss_before_build_mb": base_rss,
            "rss_built_mb": rss_built,
            "params_requiring_grad": trained,
        }
    if args.child == "sample":
        from regionaldiff.ldm.sampling import denoise, make_sampler

        module, _, batch = build_module("ours", weights, args.size, args.cross_dim, 1)
        ldm = module.ldm.eval()
        with torch.no_grad():
            out = module.encoder(batch["eeg"])
            context = ldm.conditioner(out["codes"], out["class_logits"])
            probs = out["region_logits"].softmax(1)
        result = {}
        for name, sampler, steps, guidance in (("ours", "dpmpp_2m", 25, 3.0), ("plms250", "pndm", 250, 1.0)):
            gen = torch.Generator().manual_seed(0)
            side = args.size // module.codec.downsample
            latents = (
                torch.randn(1, 4, side, side, generator=gen)
                * make_sampler(ldm, sampler, steps, torch.device("cpu")).init_noise_sigma
            )
            start = time.perf_counter()
            final = denoise(ldm, context, probs, latents, steps, guidance, gen, sampler=sampler)
            module.codec.decode(final)
            result[name] = {
                "sampler": sampler,
                "steps": steps,
                "guidance": guidance,
                "unet_evals": steps * (2 if guidance != 1.0 else 1),
                "s_per_image": time.perf_counter() - start,
            }
        return result
    if args.child == "fullsize":
        from diffusers import UNet2DConditionModel

        from regionaldiff.config import LoraConfig
        from regionaldiff.ldm.sd15 import SD15_UNET
        from regionaldiff.ldm.trainable import add_lora

        torch.manual_seed(0)
        unet = UNet2DConditionModel(**SD15_UNET)
        add_lora(unet, LoraConfig(rank=8, alpha=8, dropout=0.0, target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
        for n, p in unet.named_parameters():
            p.requires_grad_("lora_" in n)
        unet.enable_gradient_checkpointing()
        unet.train()
        optimizer = torch.optim.AdamW([p for p in unet.parameters() if p.requires_grad], lr=1e-4)
        latents, context = torch.randn(1, 4, 64, 64), torch.randn(1, 77, 768)
        t = torch.tensor([500])
        start = time.perf_counter()
        loss = (unet(latents, t, encoder_hidden_states=context).sample - latents).pow(2).mean()
        loss.backward()
        optimizer.step()
        return {
            "s_per_step": time.perf_counter() - start,
            "peak_rss_mb": peak_rss_mb(),
            "params_total": sum(p.numel() for p in unet.parameters()),
            "params_trained": sum(p.numel() for p in unet.parameters() if p.requires_grad),
            "finite_loss": bool(torch.isfinite(loss)),
        }
    raise ValueError(args.child)


def run_child(argv: list[str]) -> dict:
    proc = subprocess.run([sys.executable, __file__, *argv], capture_output=True, text=True, cwd=REPO)
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark child {argv} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", nargs="*", default=["train", "sample", "memory", "fullsize"])
    p.add_argument("--width", type=float, default=0.1, help="channel scale of the SD-1.5-layout model (1 = full)")
    p.add_argument("--cross-dim", type=int, default=96, help="context width of the narrow model (SD-1.5: 768)")
    p.add_argument("--size", type=int, default=512, help="image side (px) of training")
    p.add_argument("--sample-size", type=int, default=128, help="image side (px) of the sampler comparison")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--steps", type=int, default=3, help="timed training steps (after one warm-up step)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--workdir", default=None)
    p.add_argument("--out", default=None)
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--recipe", default="ours", help=argparse.SUPPRESS)
    p.add_argument("--unet", default=None, help=argparse.SUPPRESS)
    p.add_argument("--weights", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench_sd15_"))
    weights = workdir / "weights"
    write_weights(weights, args.width, args.cross_dim)
    common = [
        "--weights",
        str(weights),
        "--size",
        str(args.size),
        "--cross-dim",
        str(args.cross_dim),
        "--batch",
        str(args.batch),
        "--steps",
        str(args.steps),
        "--threads",
        str(args.threads),
    ]
    results: dict = {
        "machine": f"{__import__('os').cpu_count()} CPUs",
        "width": args.width,
        "size": args.size,
        "batch": args.batch,
        "cross_dim": args.cross_dim,
    }

    def save() -> None:  # after each part: a long run keeps what it measured
        if args.out:
            Path(args.out).write_text(json.dumps(results, indent=2))

    if "train" in args.only:
        # the same model (SD-1.5 without a ControlNet, DreamDiffusion's) trained by both recipes, and our regional
        # model (UNet + ControlNet) for reference
        ours = run_child(["--child", "train", "--recipe", "ours_global", *common])
        dream = run_child(["--child", "train", "--recipe", "dreamdiffusion", *common])
        regional = run_child(["--child", "train", "--recipe", "ours", *common])
        results["train"] = {
            "ours_same_model": ours,
            "dreamdiffusion": dream,
            "ours_regional": regional,
            "speedup_same_model": ours["samples_per_s"] / dream["samples_per_s"],
        }
        save()
    if "sample" in args.only:
        sample_common = [*common]
        sample_common[sample_common.index("--size") + 1] = str(args.sample_size)
        sample = run_child(["--child", "sample", *sample_common])
        sample["speedup"] = sample["plms250"]["s_per_image"] / sample["ours"]["s_per_image"]
        results["sample"] = sample
        save()
    if "memory" in args.only:
        results["memory"] = {
            mode: run_child(
                [
                    "--child",
                    "train",
                    "--recipe",
                    "ours",
                    "--unet",
                    mode,
                    *common[:-4],
                    "--steps",
                    "1",
                    "--threads",
                    str(args.threads),
                ]
            )
            for mode in ("frozen", "cross_attention", "lora", "full")
        }
        save()
    if "fullsize" in args.only:
        results["fullsize"] = run_child(["--child", "fullsize", "--threads", str(args.threads)])
    print(json.dumps(results, indent=2))
    save()


if __name__ == "__main__":
    main()
