"""The LDM: diffusers classes built from config, ControlNet region branch, gradients, sampling, latents."""

import pytest
import torch
from diffusers import ControlNetModel, UNet2DConditionModel
from omegaconf import OmegaConf

from conftest import tiny_encoder
from regionaldiff.components import build_codec, build_ldm
from regionaldiff.config import LDMConfig, NoiseScheduleConfig, SamplingConfig
from regionaldiff.ldm.conditioning import EEGConditioner, map_condition
from regionaldiff.ldm.latent import PixelUnshuffleCodec, VAECodec
from regionaldiff.ldm.sampling import denoise
from regionaldiff.ldm.unet import unet_from_pretrained

TINY_UNET = dict(
    sample_size=8,
    block_out_channels=[8, 16],
    down_block_types=["CrossAttnDownBlock2D", "DownBlock2D"],
    up_block_types=["UpBlock2D", "CrossAttnUpBlock2D"],
    layers_per_block=1,
    attention_head_dim=4,
    norm_num_groups=4,
)


def ldm_cfg(regions: bool, prediction_type: str = "epsilon", emb: tuple[int, ...] = (8, 16)) -> LDMConfig:
    """A tiny LDM config, every value stated (the schema has no defaults of its own)."""
    values = dict(
        name="tiny_regional" if regions else "tiny_global",
        unet={"_target_": "regionaldiff.ldm.unet.unet_from_config", "cross_attention_dim": 16, **TINY_UNET},
        conditioner={
            "_target_": "regionaldiff.ldm.conditioning.EEGConditioner",
            "n_tokens": 4,
            "use_class_token": True,
        },
        latent={"_target_": "regionaldiff.ldm.latent.PixelUnshuffleCodec", "factor": 2, "scale": 1.0},
        controlnet=(
            {
                "_target_": "regionaldiff.ldm.controlnet.controlnet_from_unet",
                "conditioning_embedding_out_channels": list(emb),
                "init_from_unet": True,
            }
            if regions
            else None
        ),
        train_maps="reference" if regions else None,
        cond_drop_prob=0.1,
        null_condition="zeros",
        image_size=None,
        train={
            "unet": "full",
            "controlnet": True,
            "lora": {"rank": 4, "alpha": 4, "dropout": 0.0, "target_modules": ["to_q"]},
            "gradient_checkpointing": False,
            "channels_last": False,
            "compile": False,
            "fused_adamw": False,
            "latent_cache": False,
        },
        clip_loss={"weight": 0.0, "pretrained": None},
        lr=3e-4,
        weight_decay=0.0,
        max_epochs=1,
        batch_size=None,
        noise_schedule=NoiseScheduleConfig(1000, "squaredcos_cap_v2", prediction_type),
        sampling=SamplingConfig("ddim", 3, 1.0, 0.0, 4, 1, False, 1.0, False, 1.0, 1.0),
    )
    obj = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(LDMConfig), values))
    assert isinstance(obj, LDMConfig)
    return obj


def build_from(cfg: LDMConfig):
    return build_ldm(cfg, latent_channels=12, code_len=10, code_dim=16, num_classes=3, image_size=16, latent_size=8)


def build(regions: bool):
    return build_from(ldm_cfg(regions))


def sample(ldm, context, probs, latent_shape, num_steps, guidance_scale, generator, **kwargs):
    """Noise -> clean latents through the one sampling code path (DDIM's initial noise scale is 1)."""
    latents = torch.randn((context.shape[0], *latent_shape), generator=generator)
    return denoise(ldm, context, probs, latents, num_steps, guidance_scale, generator, **kwargs)


def test_pixel_unshuffle_is_exactly_invertible():
    codec = PixelUnshuffleCodec(factor=2)
    images = torch.rand(2, 3, 16, 16) * 2 - 1
    latents = codec.encode(images)
    assert latents.shape == (2, 12, 8, 8)
    assert torch.equal(codec.decode(latents), images)


def test_regional_variant_is_unet_plus_controlnet():
    ldm = build(True)
    assert isinstance(ldm.unet, UNet2DConditionModel)
    assert isinstance(ldm.controlnet, ControlNetModel)
    assert ldm.controlnet.config.conditioning_channels == 4  # K + 1 labels
    assert build(False).controlnet is None


def test_map_loss_has_gradient_wrt_controlnet_and_map_changes_prediction():
    torch.manual_seed(0)
    ldm = build(True)
    # zero-initialised ControlNet outputs would hide the map: perturb them as training would
    zero_inits = [
        *ldm.controlnet.controlnet_down_blocks,
        ldm.controlnet.controlnet_mid_block,
        ldm.controlnet.controlnet_cond_embedding.conv_out,
    ]
    for block in zero_inits:
        torch.nn.init.normal_(block.weight, std=0.1)
    context = torch.randn(2, 4, 16)
    latents = torch.randn(2, 12, 8, 8)
    probs = torch.rand(2, 4, 4, 4).softmax(1)
    ldm.cond_drop_prob = 0.0
    loss = ldm.training_loss(latents, context, probs, generator=torch.Generator().manual_seed(0))
    loss.backward()
    grads = [p.grad for p in ldm.controlnet.parameters() if p.grad is not None]
    assert grads and sum(g.abs().sum() for g in grads) > 0
    t = torch.tensor([10, 10])
    with torch.no_grad():
        a = ldm.model_output(latents, t, context, probs)
        b = ldm.model_output(latents, t, context, torch.roll(probs, 1, dims=1))
    assert not torch.allclose(a, b)


def test_regional_model_refuses_missing_map():
    with pytest.raises(ValueError, match="region map"):
        build(True).model_output(torch.randn(1, 12, 8, 8), torch.tensor([1]), torch.randn(1, 4, 16), None)


def test_controlnet_downsampling_must_match_latents():
    with pytest.raises(ValueError, match="conditioning_embedding_out_channels"):
        build_from(ldm_cfg(True, emb=(8, 16, 32)))


def test_sampling_shape_and_determinism():
    ldm = build(True).eval()
    context = torch.randn(3, 4, 16)
    probs = torch.rand(3, 4, 4, 4).softmax(1)
    a = sample(
        ldm, context, probs, (12, 8, 8), num_steps=3, guidance_scale=2.0, generator=torch.Generator().manual_seed(1)
    )
    b = sample(
        ldm, context, probs, (12, 8, 8), num_steps=3, guidance_scale=2.0, generator=torch.Generator().manual_seed(1)
    )
    assert a.shape == (3, 12, 8, 8)
    assert torch.equal(a, b)


def test_conditioner_class_token_carries_class_probabilities():
    cond = EEGConditioner(
        code_len=10, code_dim=16, num_classes=3, cross_attention_dim=8, n_tokens=4, use_class_token=True
    )
    codes = torch.randn(2, 10, 16)
    a = cond(codes, torch.tensor([[9.0, 0, 0], [9.0, 0, 0]]))
    b = cond(codes, torch.tensor([[0, 9.0, 0], [0, 9.0, 0]]))
    assert a.shape == (2, 4, 8)
    assert torch.allclose(a[:, :3], b[:, :3]) and not torch.allclose(a[:, 3], b[:, 3])


def test_map_condition_range_and_size():
    probs = torch.zeros(1, 3, 2, 2)
    probs[:, 1] = 1.0
    image = map_condition(probs, 8)
    assert image.shape == (1, 3, 8, 8)
    assert torch.allclose(image[:, 1], torch.ones(1, 8, 8)) and torch.allclose(image[:, 0], -torch.ones(1, 8, 8))


def test_unet_and_vae_load_from_local_folders_like_sd15(tmp_path):
    """The SD-1.5 loading path (from_pretrained on a local folder with unet/ and vae/) on a tiny saved model."""
    from diffusers import AutoencoderKL

    unet = UNet2DConditionModel(
        in_channels=4,
        out_channels=4,
        cross_attention_dim=16,
        **{k: tuple(v) if isinstance(v, list) else v for k, v in TINY_UNET.items()},
    )
    unet.save_pretrained(tmp_path / "sd" / "unet")
    vae = AutoencoderKL(
        block_out_channels=(8, 16),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=16,
    )
    vae.save_pretrained(tmp_path / "sd" / "vae")
    loaded = unet_from_pretrained(str(tmp_path / "sd"), in_channels=4, latent_size=8, subfolder="unet")
    assert torch.equal(loaded.conv_in.weight, unet.conv_in.weight)
    codec = build_codec(
        {"_target_": "regionaldiff.ldm.latent.VAECodec", "pretrained": str(tmp_path / "sd"), "subfolder": "vae"}
    )
    assert isinstance(codec, VAECodec) and codec.downsample == 2 and codec.latent_channels == 4
    latents = codec.encode(torch.rand(1, 3, 16, 16) * 2 - 1)
    assert latents.shape == (1, 4, 8, 8)
    assert codec.decode(latents).shape == (1, 3, 16, 16)


def test_missing_local_weights_say_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="paths.weights_dir"):
        unet_from_pretrained(str(tmp_path / "nope"), in_channels=4, latent_size=8)
    with pytest.raises(FileNotFoundError, match="weights_dir"):
        VAECodec(str(tmp_path / "nope"))


def test_finetune_step_trains_unet_conditioner_and_controlnet_but_not_the_frozen_encoder():
    """The map constraint has a gradient: one optimiser step on the denoising loss moves the ControlNet (including
    its map-embedding input layer), the UNet and the EEG conditioner; the pretrained encoder stays frozen."""
    from regionaldiff.ldm.module import LDMFinetuneModule

    torch.manual_seed(0)
    encoder = tiny_encoder()
    ldm = build(True)
    ldm.cond_drop_prob = 0.0
    module = LDMFinetuneModule(encoder, ldm, PixelUnshuffleCodec(2), lr=1e-2, weight_decay=0.0, train_maps="reference")
    batch = {
        "eeg": torch.randn(4, 5, 40),
        "image": torch.rand(4, 3, 16, 16) * 2 - 1,
        "region_map": torch.randint(0, 4, (4, 16, 16)),
    }
    watched = {
        "controlnet.cond_embedding": ldm.controlnet.controlnet_cond_embedding.conv_in.weight,
        "controlnet.zero_out": ldm.controlnet.controlnet_down_blocks[0].weight,
        "unet": ldm.unet.conv_in.weight,
        "conditioner": ldm.conditioner.proj[0].weight,
        "encoder": encoder.patch_embed.weight,
    }
    before = {k: v.detach().clone() for k, v in watched.items()}
    opt = module.configure_optimizers()
    # zero convolutions: the output convs open at step 1, the map embedding's output at step 2, its input at step 3
    for _ in range(3):
        loss = ldm.training_loss(module.codec.encode(batch["image"]), *module.conditions(batch, "reference"))
        opt.zero_grad()
        loss.backward()
        opt.step()
    moved = {k: not torch.equal(before[k], v) for k, v in watched.items()}
    assert moved == {
        "controlnet.cond_embedding": True,
        "controlnet.zero_out": True,
        "unet": True,
        "conditioner": True,
        "encoder": False,
    }


def test_regional_prediction_depends_on_the_map_after_training_opens_the_controlnet():
    """With predicted maps at test time the map must matter: a different map gives a different sample."""
    torch.manual_seed(0)
    ldm = build(True).eval()
    zero_inits = [
        *ldm.controlnet.controlnet_down_blocks,
        ldm.controlnet.controlnet_mid_block,
        ldm.controlnet.controlnet_cond_embedding.conv_out,
    ]
    for block in zero_inits:
        torch.nn.init.normal_(block.weight, std=0.1)
    context = torch.randn(2, 4, 16)
    probs = torch.rand(2, 4, 4, 4).softmax(1)
    a = sample(
        ldm, context, probs, (12, 8, 8), num_steps=3, guidance_scale=1.0, generator=torch.Generator().manual_seed(0)
    )
    b = sample(
        ldm,
        context,
        probs.flip(-1),
        (12, 8, 8),
        num_steps=3,
        guidance_scale=1.0,
        generator=torch.Generator().manual_seed(0),
    )
    assert not torch.allclose(a, b)


def test_controlnet_scale_weights_the_controlnet_residuals():
    """controlnet_scale=0 is the UNet alone, 1 the model as trained, and the residuals scale linearly in between."""
    torch.manual_seed(0)
    ldm = build(True).eval()
    for block in (*ldm.controlnet.controlnet_down_blocks, ldm.controlnet.controlnet_mid_block):
        torch.nn.init.normal_(block.weight, std=0.1)
    latents, t = torch.randn(2, 12, 8, 8), torch.tensor([10, 10])
    context, probs = torch.randn(2, 4, 16), torch.rand(2, 4, 4, 4).softmax(1)
    with torch.no_grad():
        unet_alone = ldm.unet(latents, t, encoder_hidden_states=context).sample
        down, mid = ldm.controlnet(
            latents, t, encoder_hidden_states=context, controlnet_cond=map_condition(probs, 16), return_dict=False
        )
        doubled = ldm.unet(
            latents,
            t,
            encoder_hidden_states=context,
            down_block_additional_residuals=[2 * d for d in down],
            mid_block_additional_residual=2 * mid,
        ).sample
        outputs = {scale: ldm.model_output(latents, t, context, probs, scale) for scale in (0.0, 1.0, 2.0)}
    assert torch.allclose(outputs[0.0], unet_alone, atol=1e-6)
    assert not torch.allclose(outputs[1.0], unet_alone, atol=1e-3)
    assert torch.allclose(outputs[2.0], doubled, atol=1e-5)
    assert torch.equal(outputs[1.0], ldm.model_output(latents, t, context, probs))  # the default is as trained


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_training_target_follows_the_prediction_type(prediction_type):
    """A model that outputs exactly the configured target has zero loss (checks the target, not the model)."""
    ldm = build_from(ldm_cfg(False, prediction_type=prediction_type))
    ldm.cond_drop_prob = 0.0
    latents = torch.randn(2, 12, 8, 8)
    captured = {}

    def oracle(noisy, steps, context, probs):
        noise = (noisy - ldm.noise_scheduler.alphas_cumprod[steps].sqrt()[:, None, None, None] * latents) / (
            1 - ldm.noise_scheduler.alphas_cumprod[steps]
        ).sqrt()[:, None, None, None]
        captured["noise"] = noise
        return {
            "epsilon": noise,
            "sample": latents,
            "v_prediction": ldm.noise_scheduler.get_velocity(latents, noise, steps),
        }[prediction_type]

    ldm.model_output = oracle
    loss = ldm.training_loss(latents, torch.randn(2, 4, 16), None, generator=torch.Generator().manual_seed(0))
    assert loss.item() == pytest.approx(0.0, abs=1e-6)


def test_clipped_sampling_stays_in_the_image_range():
    ldm = build(False).eval()
    out = sample(
        ldm,
        torch.randn(2, 4, 16),
        None,
        (12, 8, 8),
        num_steps=4,
        guidance_scale=3.0,
        generator=torch.Generator().manual_seed(0),
        clip_sample=True,
        clip_sample_range=1.0,
    )
    assert out.abs().max() <= 1.0 + 1e-5


def test_mixed_training_maps_draw_reference_or_predicted_per_sample():
    from regionaldiff.ldm.module import LDMFinetuneModule
    from regionaldiff.regions import coarse_region_target

    torch.manual_seed(0)
    encoder = tiny_encoder()
    module = LDMFinetuneModule(
        encoder, build(True), PixelUnshuffleCodec(2), lr=1e-2, weight_decay=0.0, train_maps="mixed"
    )
    batch = {
        "eeg": torch.randn(64, 5, 40),
        "image": torch.rand(64, 3, 16, 16) * 2 - 1,
        "region_map": torch.randint(0, 4, (64, 16, 16)),
    }
    reference = coarse_region_target(batch["region_map"], 4, 4)
    _, predicted = module.conditions(batch, "predicted")
    _, mixed = module.conditions(batch, "mixed")
    is_reference = torch.isclose(mixed, reference).flatten(1).all(1)
    is_predicted = torch.isclose(mixed, predicted).flatten(1).all(1)
    assert bool((is_reference ^ is_predicted).all())  # every sample is exactly one of the two
    assert 16 < int(is_reference.sum()) < 48  # about half each
    with pytest.raises(ValueError, match="train_maps=mixed.*regionmap"):
        module.conditions({"eeg": batch["eeg"]}, "mixed")
    with pytest.raises(ValueError, match="'reference', 'predicted' or 'mixed'"):
        LDMFinetuneModule(encoder, build(True), PixelUnshuffleCodec(2), lr=1e-2, weight_decay=0.0, train_maps="true")
