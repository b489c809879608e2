"""The Stable Diffusion 1.5 path on SD-1.5-layout folders written with ``save_pretrained`` (random weights, narrow):
trainable subsets and LoRA, the latent cache, CLIP alignment, the learned null condition, the samplers, bad
weights folders, and the full-size SD-1.5 shapes on the meta device (no memory)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import TINY, build_test_ldm, tiny_encoder, write_tiny_clip
from regionaldiff.config import LDMConfig
from regionaldiff.ldm.latent_cache import compute_latent_cache
from regionaldiff.ldm.sd15 import SD15_UNET, SD15_UNET_PARAMETERS, save_sd15_layout
from regionaldiff.ldm.trainable import count_parameters
from regionaldiff.validation import validate

CROSS_DIM = 32  # the narrow folders' context width (SD-1.5: 768)


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    """``weights/`` with a narrow SD-1.5-layout folder and a tiny CLIP, at the paths the sd15 configs read."""
    root = tmp_path_factory.mktemp("weights")
    save_sd15_layout(root / "stable-diffusion-v1-5", width=0.05, cross_attention_dim=CROSS_DIM, layers_per_block=1)
    write_tiny_clip(root / "clip-vit-large-patch14")
    return root


def sd_overrides(weights: Path, *extra: str) -> list[str]:
    return [
        "ldm=sd15_regional",
        f"paths.weights_dir={weights}",
        f"ldm.unet.cross_attention_dim={CROSS_DIM}",
        "ldm.image_size=64",  # 64 px -> 8x8 latents through the 3 halvings of the VAE
        *extra,
    ]


def typed_ldm(compose_cfg, weights: Path, *extra: str) -> LDMConfig:
    return validate(compose_cfg(*sd_overrides(weights, *extra))).ldm


def build(cfg: LDMConfig):
    return build_test_ldm(cfg)


def one_step(ldm, codec) -> dict[str, torch.Tensor]:
    """Parameters before one AdamW step on the denoising loss; returns the ones that moved, by name."""
    torch.manual_seed(1)
    before = {n: p.detach().clone() for n, p in ldm.named_parameters()}
    opt = torch.optim.AdamW([p for p in ldm.parameters() if p.requires_grad], lr=1e-2)
    context = ldm.conditioner(torch.randn(2, 25, 16), torch.randn(2, 5))
    latents = codec.training_latents(torch.rand(2, 3, 64, 64) * 2 - 1)
    probs = torch.rand(2, 6, 8, 8).softmax(1) if ldm.controlnet is not None else None
    ldm.training_loss(latents, context, probs).backward()
    opt.step()
    return {n: p for n, p in ldm.named_parameters() if not torch.equal(before[n], p.detach())}


@pytest.mark.parametrize("mode", ["frozen", "cross_attention", "lora", "full"])
def test_each_trainable_subset_changes_exactly_what_it_names(compose_cfg, weights, mode):
    ldm, codec = build(typed_ldm(compose_cfg, weights, f"ldm.train.unet={mode}", "ldm.train.controlnet=false"))
    ldm.cond_drop_prob = 0.0
    trainable = {n for n, p in ldm.named_parameters() if p.requires_grad}
    unet_trainable = {n for n in trainable if n.startswith("unet.")}
    if mode == "frozen":
        assert not unet_trainable
    elif mode == "cross_attention":
        assert unet_trainable and all((".attn2." in n or ".norm2." in n) for n in unet_trainable)
    elif mode == "lora":
        assert unet_trainable and all("lora_" in n for n in unet_trainable)
    else:
        assert unet_trainable == {n for n, _ in ldm.named_parameters() if n.startswith("unet.")}
    assert not any(n.startswith("controlnet.") for n in trainable)  # ldm.train.controlnet=false
    assert all(p.requires_grad for p in ldm.conditioner.parameters())
    if mode == "lora":  # LoRA B starts at zero: open it as training would, so that A gets a gradient too
        for n, p in ldm.unet.named_parameters():
            if "lora_B" in n:
                torch.nn.init.normal_(p, std=0.01)
    moved = one_step(ldm, codec)
    assert set(moved) <= trainable  # nothing frozen moved
    assert {n for n in moved if n.startswith("conditioner.")}  # the conditioner trains
    if mode != "frozen":
        assert {n for n in moved if n.startswith("unet.")}
    # no gradient was computed for a frozen weight
    assert all(p.grad is None for n, p in ldm.named_parameters() if n not in trainable)


def test_lora_adapters_save_and_reload_to_the_same_outputs(compose_cfg, weights, tmp_path):
    cfg = typed_ldm(compose_cfg, weights, "ldm.train.unet=lora")
    ldm, _ = build(cfg)
    for n, p in ldm.unet.named_parameters():
        if "lora_" in n:
            torch.nn.init.normal_(p, std=0.05)
    torch.save({"state_dict": ldm.state_dict()}, tmp_path / "ldm.pt")
    again, _ = build(cfg)
    missing = again.load_state_dict(torch.load(tmp_path / "ldm.pt", weights_only=True)["state_dict"])
    assert not missing.missing_keys and not missing.unexpected_keys
    args = (torch.randn(1, 4, 8, 8), torch.tensor([500]), torch.randn(1, 77, CROSS_DIM), torch.rand(1, 6, 8, 8))
    with torch.no_grad():
        a, b = ldm.eval().model_output(*args), again.eval().model_output(*args)
        plain, _ = build(typed_ldm(compose_cfg, weights, "ldm.train.unet=frozen"))
        c = plain.eval().model_output(*args)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)  # the adapters change the output


def test_the_learned_null_condition_replaces_dropped_conditions_and_guides_sampling(compose_cfg, weights):
    from regionaldiff.ldm.sampling import denoise

    ldm, _ = build(typed_ldm(compose_cfg, weights, "ldm.null_condition=learned"))
    assert ldm.null_context is not None and ldm.null_context.shape == (77, CROSS_DIM)
    with torch.no_grad():
        ldm.null_context.normal_()
    context = torch.randn(3, 77, CROSS_DIM)
    ldm.cond_drop_prob = 0.999999
    dropped, probs = ldm._drop(context, torch.rand(3, 6, 8, 8), torch.Generator().manual_seed(0))
    assert torch.equal(dropped, ldm.null_context.expand(3, -1, -1)) and probs is not None and probs.abs().sum() == 0
    # guidance contrasts the condition with the learned null context: another null context, another sample
    latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    kwargs = dict(num_steps=2, guidance_scale=3.0, sampler="dpmpp_2m")
    a = denoise(ldm.eval(), context[:1], torch.rand(1, 6, 8, 8), latents.clone(), **kwargs)
    with torch.no_grad():
        ldm.null_context.zero_()
    b = denoise(ldm, context[:1], torch.rand(1, 6, 8, 8), latents.clone(), **kwargs)
    assert not torch.allclose(a, b)


@pytest.mark.parametrize("sampler", ["ddim", "dpmpp_2m", "unipc", "euler", "pndm"])
def test_every_sampler_runs_and_is_deterministic_for_a_seed(compose_cfg, weights, sampler):
    from regionaldiff.ldm.sampling import denoise, make_sampler

    ldm, _ = build(typed_ldm(compose_cfg, weights))
    ldm.eval()
    context, probs = torch.randn(2, 77, CROSS_DIM), torch.rand(2, 6, 8, 8).softmax(1)

    def run(seed: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed)
        sigma = make_sampler(ldm, sampler, 3, torch.device("cpu")).init_noise_sigma
        latents = torch.randn(2, 4, 8, 8, generator=gen) * sigma
        return denoise(ldm, context, probs, latents, 3, 2.0, gen, sampler=sampler)

    a, b, c = run(0), run(0), run(1)
    assert a.shape == (2, 4, 8, 8) and torch.isfinite(a).all()
    assert torch.equal(a, b) and not torch.allclose(a, c)


def test_cached_latents_give_the_on_the_fly_loss(compose_cfg, weights):
    """The cache keeps the VAE posterior; sampling it with the same noise gives the same latents and loss."""
    from regionaldiff.ldm.clip_alignment import ClipImageEmbedder
    from regionaldiff.ldm.module import LDMFinetuneModule

    cfg = typed_ldm(compose_cfg, weights)
    ldm, codec = build(cfg)
    encoder = tiny_encoder(n_chans=17, n_times=100, num_classes=5, region_grid=8)
    images = (np.random.default_rng(0).random((3, 32, 32, 3)) * 255).astype(np.uint8)
    clip = ClipImageEmbedder(str(weights / "clip-vit-large-patch14"))
    cache = compute_latent_cache(["a", "b", "c"], list(images), codec, 64, clip)
    assert cache.mean.shape == cache.logvar.shape == (3, 4, 8, 8) and cache.clip is not None
    assert cache.clip.shape == (3, 12)
    from regionaldiff.data.base import image_to_tensor

    batch = {
        "eeg": torch.randn(3, 17, 100),
        "image": torch.stack([image_to_tensor(im) for im in images]),
        "image_id": ["a", "b", "c"],
    }
    cached = LDMFinetuneModule(encoder, ldm, codec, 1e-4, 0.0, "predicted", latent_cache=cache, clip_weight=1.0)
    live = LDMFinetuneModule(encoder, ldm, codec, 1e-4, 0.0, "predicted", clip=clip, clip_weight=1.0)
    live.clip_head = cached.clip_head  # the same trained head
    a = cached._loss(batch, "predicted", torch.Generator().manual_seed(3))
    b = live._loss(batch, "predicted", torch.Generator().manual_seed(3))
    assert torch.allclose(a["denoise"], b["denoise"], atol=1e-5) and torch.allclose(a["clip"], b["clip"], atol=1e-5)
    total = a["denoise"].detach() + a["clip"].detach()
    assert float(a["loss"].detach()) == pytest.approx(float(total), rel=1e-6)
    # the posterior is sampled, not its mode: another seed, other latents
    assert not torch.equal(cached.latents(batch, torch.Generator().manual_seed(3)), cached.latents(batch))


def test_full_size_sd15_parameter_counts_on_the_meta_device():
    """The full SD-1.5 UNet and ControlNet from config, on the meta device: what each subset trains."""
    from diffusers import ControlNetModel, UNet2DConditionModel

    from regionaldiff.config import LoraConfig, TrainConfig, UNetTraining
    from regionaldiff.ldm.trainable import add_lora, set_trainable

    counts = {}
    for mode in UNetTraining:
        with torch.device("meta"):
            unet = UNet2DConditionModel(**SD15_UNET)
            controlnet = ControlNetModel.from_unet(
                unet,
                conditioning_embedding_out_channels=(16, 32, 96, 256),
                load_weights_from_unet=False,
                conditioning_channels=41,
            )
            lora = LoraConfig(rank=8, alpha=8, dropout=0.0, target_modules=["to_q", "to_k", "to_v", "to_out.0"])
            train = TrainConfig(
                unet=mode,
                controlnet=True,
                lora=lora,
                gradient_checkpointing=False,
                channels_last=False,
                compile=False,
                fused_adamw=False,
                latent_cache=True,
            )
            if mode == UNetTraining.lora:
                add_lora(unet, lora)
            set_trainable(unet, controlnet, train)
        counts[mode.value] = count_parameters({"unet": unet, "controlnet": controlnet})
    assert counts["full"]["params/unet_total"] == SD15_UNET_PARAMETERS
    assert counts["full"]["params/unet_trained"] == SD15_UNET_PARAMETERS
    assert counts["frozen"]["params/unet_trained"] == 0
    assert 40e6 < counts["cross_attention"]["params/unet_trained"] < 50e6  # DreamDiffusion's ~45M
    assert 1e6 < counts["lora"]["params/unet_trained"] < 5e6  # rank-8 adapters on the attention projections
    assert counts["full"]["params/controlnet_trained"] == counts["full"]["params/controlnet_total"] > 3e8


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("none", r"No VAE at .*stable-diffusion-v1-5/vae .*huggingface-cli download"),
        ("unet_config", r"No UNet at .*stable-diffusion-v1-5/unet \(expected config.json"),
        ("in_channels", r"UNet at .* takes 8 latent channels, but the VAE \(ldm.latent\) gives 4"),
        ("cross_attention_dim", r"has cross_attention_dim=32; ldm.unet expects 768"),
    ],
)
def test_bad_weights_folders_say_what_is_wrong_and_what_to_do(compose_cfg, weights, tmp_path, damage, message):
    folder = tmp_path / "weights"
    if damage != "none":
        shutil.copytree(weights, folder)
    sd = folder / "stable-diffusion-v1-5"
    extra: list[str] = []
    if damage == "unet_config":
        (sd / "unet" / "config.json").unlink()
    elif damage == "in_channels":
        config = json.loads((sd / "unet" / "config.json").read_text())
        (sd / "unet" / "config.json").write_text(json.dumps({**config, "in_channels": 8}))
    elif damage == "cross_attention_dim":
        extra = ["ldm.unet.cross_attention_dim=768"]
    overrides = sd_overrides(folder, *extra)
    if damage == "cross_attention_dim":
        overrides = [o for o in overrides if not o.startswith("ldm.unet.cross_attention_dim=32")]
    cfg = validate(compose_cfg(*overrides)).ldm
    with pytest.raises((FileNotFoundError, ValueError), match=message):
        build(cfg)


@pytest.mark.slow
def test_sd15_regional_trains_with_the_default_subset_and_samples_with_the_default_solver(run_cli, weights, tmp_path):
    """`regionaldiff ldm=sd15_regional paths.weights_dir=<folder>`: LoRA UNet + ControlNet + conditioner, latent
    cache, CLIP loss, learned null condition, DPM-Solver++ (the sd15 defaults), end to end on the CPU."""
    from regionaldiff.reconstruction import RegionalDiffPipeline

    proc = run_cli(
        *TINY, *sd_overrides(weights), "ldm.batch_size=8", "ldm.sampling.num_steps=2", "hydra.run.dir=outputs/runs/sd"
    )
    job = tmp_path / "outputs" / "runs" / "sd"
    metrics = json.loads((job / "metrics.json").read_text())
    assert 0.0 <= metrics["eval/ssim"] <= 1.0
    log = proc.stdout + proc.stderr
    assert "latent cache of 60 images" in log
    model_dir = Path(json.loads((job / "model.json").read_text())["model_dir"])
    card = json.loads((model_dir / "pipeline.json").read_text())
    assert card["ldm"]["train"]["unet"] == "lora" and card["ldm"]["sampling"]["scheduler"] == "dpmpp_2m"
    assert (tmp_path / "outputs" / "artifacts" / "latent_cache").is_dir()
    pipe = RegionalDiffPipeline.from_pretrained(job)
    assert any("lora_" in n for n, _ in pipe.ldm.unet.named_parameters())
    assert pipe.ldm.null_context is not None and pipe.ldm.null_context.abs().sum() > 0  # trained by dropout
    out = pipe(torch.randn(1, 17, 100), num_inference_steps=2, generator=torch.Generator().manual_seed(0))
    assert out.images.shape == (1, 1, 64, 64, 3)
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}")
    run = client.search_runs([client.get_experiment_by_name("regionaldiff").experiment_id])[0]
    m = run.data.metrics
    assert 0 < m["params/unet_trained"] < m["params/unet_total"]
    assert m["params/controlnet_trained"] == m["params/controlnet_total"] > 0
    assert "finetune/train_clip_loss" in m


def test_a_missing_clip_folder_says_where_and_how_to_get_it(tmp_path):
    from regionaldiff.errors import MissingFileError
    from regionaldiff.ldm.clip_alignment import ClipImageEmbedder

    with pytest.raises(MissingFileError, match=r"no CLIP model at .*nope.*huggingface-cli.*~encoder/align"):
        ClipImageEmbedder(str(tmp_path / "nope"))
