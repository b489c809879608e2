"""The frozen-diffusion recipe (``ldm=frozen_global|frozen_regional``, ``ldm=sd15_frozen_*``; docs/design.md, "Two
recipes"): its options and their checks, the adapters (the tiny image projection; diffusers' IP-Adapter for SD-1.5 read
from a local folder, here a narrow random one), the EEG-free artifacts' keys, and end to end (``slow``): a sweep trains
the EEG-free parts once and later jobs reuse them, EEG never changes them, and the saved model folder loads and
generates."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from diffusers import UNet2DConditionModel

from conftest import REAL_TINY, TINY, TINY_THINGS, build_test_ldm, mlflow_runs
from regionaldiff.errors import ConfigError
from regionaldiff.ldm.adapter import IPAdapter, save_ip_adapter_layout
from regionaldiff.ldm.sd15 import save_sd15_layout, save_text_encoder_layout
from regionaldiff.validation import validate

CROSS_DIM = 32  # the narrow SD-1.5 folder's context width (SD-1.5: 768)
EMBED_DIM = 12  # the tiny IP-Adapter image encoder's projection (OpenCLIP ViT-H/14: 1024)
TINY_CLIP = {
    "hidden_size": 16,
    "intermediate_size": 32,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "image_size": 32,
    "patch_size": 16,
}


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    """``weights/`` as the sd15_frozen options read it: a narrow SD-1.5 folder with its text encoder and tokenizer,
    and an IP-Adapter for its UNet with its image encoder (random weights, h94/IP-Adapter's layout)."""
    root = tmp_path_factory.mktemp("weights")
    sd = save_sd15_layout(
        root / "stable-diffusion-v1-5", width=0.05, cross_attention_dim=CROSS_DIM, layers_per_block=1
    )
    save_text_encoder_layout(sd, hidden_size=CROSS_DIM)
    unet = UNet2DConditionModel.from_pretrained(str(sd), subfolder="unet")
    save_ip_adapter_layout(root / "IP-Adapter", unet, EMBED_DIM, image_encoder=TINY_CLIP)
    return root


def sd_overrides(weights: Path, ldm: str = "sd15_frozen_regional") -> list[str]:
    return [
        f"ldm={ldm}",
        f"paths.weights_dir={weights}",
        f"ldm.unet.cross_attention_dim={CROSS_DIM}",
        "ldm.image_size=64",  # 64 px -> 8x8 latents through the 3 halvings of the VAE
    ]


def build(cfg, embedding_dim: int, image_size: int):
    ldm, codec = build_test_ldm(cfg, image_size=image_size, embedding_dim=embedding_dim)
    return ldm.eval(), codec


# -- options and checks --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("option", ["frozen_global", "frozen_regional"])
def test_tiny_frozen_options_choose_the_pixel_alignment_and_freeze_the_unet(compose_cfg, option):
    typed = validate(compose_cfg(f"ldm={option}"))
    assert typed.ldm.frozen and typed.ldm.train.unet.value == "frozen"
    assert typed.ldm.regions == (option == "frozen_regional")
    assert typed.encoder.align is not None
    assert typed.encoder.align.image_embedder["_target_"].endswith("PixelImageEmbedder")
    # a dataset preset or the command line choose another embedding
    typed = validate(compose_cfg(f"ldm={option}", "encoder/align=clip"))
    assert typed.encoder.align.image_embedder["_target_"].endswith("ClipImageEmbedder")


@pytest.mark.parametrize("option", ["sd15_frozen_global", "sd15_frozen_regional"])
def test_sd15_frozen_options_align_to_ip_adapters_image_encoder(compose_cfg, option):
    typed = validate(compose_cfg(f"ldm={option}"))
    assert typed.ldm.frozen and typed.ldm.adapter["_target_"].endswith("IPAdapter")
    assert typed.ldm.null_condition.value == "zeros" and typed.ldm.clip_loss.weight == 0
    assert typed.encoder.align.image_embedder["path"].endswith("IP-Adapter/models/image_encoder")
    assert typed.ldm.adapter["text_encoder"] == typed.ldm.unet["pretrained"]  # the SD-1.5 folder, one spelling


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["ldm=frozen_regional", "~encoder/align"], "encoder.align is null: set encoder/align=pixels"),
        (["ldm=frozen_global", "ldm.train.unet=full"], "ldm.train.unet must be frozen"),
        (["ldm=frozen_regional", "ldm.train_maps=mixed"], "ldm.train_maps must be reference"),
        (["ldm=frozen_global", "ldm.null_condition=learned"], "ldm.null_condition=zeros"),
    ],
)
def test_frozen_options_refuse_what_the_recipe_cannot_do_in_one_line(compose_cfg, overrides, message):
    with pytest.raises(ConfigError, match=message) as err:
        validate(compose_cfg(*overrides))
    assert "\n" not in str(err.value)


# -- the tiny adapter ----------------------------------------------------------------------------------------------
def test_the_tiny_adapter_carries_the_embedding_to_the_unet_and_controlnet(compose_cfg):
    cfg = validate(compose_cfg("ldm=frozen_regional")).ldm
    ldm, _ = build(cfg, embedding_dim=EMBED_DIM, image_size=32)
    assert ldm.conditioner is None and ldm.adapter is not None and ldm.null_context is None
    # nothing of the UNet or adapter is trained once built: the EEG-free training switches them on itself
    assert not any(p.requires_grad for p in ldm.unet.parameters())
    assert not any(p.requires_grad for p in ldm.adapter.parameters())
    assert all(p.requires_grad for p in ldm.controlnet.parameters())
    ldm.adapter.fit_scale(torch.randn(50, EMBED_DIM) * 3)
    context = ldm.adapter.prepare(torch.randn(4, EMBED_DIM) * 100)
    assert context.shape == (4, 1, EMBED_DIM)
    assert torch.allclose(context.norm(dim=-1), ldm.adapter.embedding_scale.expand(4, 1))
    assert torch.equal(ldm.unconditional_context(context), torch.zeros_like(context))
    latents = torch.randn(4, 48, 8, 8)
    steps = torch.full((4,), 500)
    maps = torch.rand(4, 6, 8, 8).softmax(1)
    with torch.no_grad():
        out = ldm.model_output(latents, steps, context, maps)
        other = ldm.model_output(latents, steps, ldm.adapter.prepare(torch.randn(4, EMBED_DIM)), maps)
        # each trial's image reads its own embedding only
        swapped = ldm.model_output(latents, steps, torch.cat([context[:2], context[:2].flip(0)]), maps)
    assert not torch.allclose(out, other)
    assert torch.allclose(out[:2], swapped[:2], atol=1e-5) and not torch.allclose(out[2:], swapped[2:])


# -- IP-Adapter for SD-1.5 from a local folder -----------------------------------------------------------------------
def test_ip_adapter_loads_into_the_frozen_sd15_unet_from_its_folder(compose_cfg, weights):
    cfg = validate(compose_cfg(*sd_overrides(weights))).ldm
    ldm, codec = build(cfg, embedding_dim=EMBED_DIM, image_size=64)
    assert isinstance(ldm.adapter, IPAdapter)
    assert ldm.unet.config.encoder_hid_dim_type == "ip_image_proj"
    processors = [p for p in ldm.unet.attn_processors.values() if hasattr(p, "to_k_ip")]
    assert processors and all(p.scale == [1.0] for p in processors)
    assert ldm.controlnet.config.encoder_hid_dim_type is None  # copied from the UNet before IP-Adapter was loaded
    assert ldm.adapter.text_context.shape == (1, 77, CROSS_DIM)
    trained = [n for n, p in ldm.named_parameters() if p.requires_grad]
    assert trained and all(n.startswith("controlnet.") for n in trained)  # the UNet and IP-Adapter stay frozen
    ldm.adapter.fit_scale(torch.randn(20, EMBED_DIM))
    latents = torch.randn(2, 4, 8, 8)
    steps = torch.full((2,), 300)
    maps = torch.rand(2, 6, 8, 8).softmax(1)
    with torch.no_grad():
        a = ldm.model_output(latents, steps, ldm.adapter.prepare(torch.randn(2, EMBED_DIM)), maps)
        b = ldm.model_output(latents, steps, ldm.adapter.prepare(torch.randn(2, EMBED_DIM)), maps)
    assert a.shape == latents.shape and not torch.allclose(a, b)  # the embedding reaches the UNet
    # built again from the same folders: the same model
    again, _ = build(cfg, embedding_dim=EMBED_DIM, image_size=64)
    again.load_state_dict(ldm.state_dict())
    with torch.no_grad():
        a2 = again.model_output(latents, steps, ldm.adapter.prepare(torch.randn(2, EMBED_DIM)), maps)
    assert a2.shape == a.shape


def test_an_encoder_aligned_to_another_embedding_is_refused_naming_the_alignment(compose_cfg, weights):
    cfg = validate(compose_cfg(*sd_overrides(weights))).ldm
    with pytest.raises(ConfigError, match="encoder/align=ip_adapter"):
        build(cfg, embedding_dim=EMBED_DIM + 1, image_size=64)


def test_the_ip_adapter_files_are_declared_for_the_preflight(compose_cfg, tmp_path):
    from regionaldiff.preflight import preflight

    report = preflight(compose_cfg(*sd_overrides(tmp_path / "nowhere")))
    missing = {item.what: item for item in report.items if item.status == "missing"}
    for what in ("IP-Adapter for SD-1.5", "SD-1.5 text encoder (empty prompt)", "image embedding model (CLIP)"):
        assert what in missing, sorted(missing)
    assert missing["IP-Adapter for SD-1.5"].path.endswith("IP-Adapter/models/ip-adapter_sd15.safetensors")
    assert not report.ready


# -- the EEG-free artifacts' keys ------------------------------------------------------------------------------------
def key_names(node) -> set[str]:
    """Every key name anywhere in a nested mapping, lower-cased."""
    if isinstance(node, dict):
        return {str(k).lower() for k in node} | {n for v in node.values() for n in key_names(v)}
    if isinstance(node, list):
        return {n for v in node for n in key_names(v)}
    return set()


def eeg_free_keys(compose_cfg, tmp_path, *overrides: str) -> dict:
    """The frozen_unet key, and the maps' hash, of a config (after its prepare step; nothing is trained)."""
    from regionaldiff.runner import build_context
    from regionaldiff.steps.frozen import base_key, content_hash, train_settings, training_stimuli
    from regionaldiff.steps.prepare import prepare
    from regionaldiff.steps.pretrain import image_embeddings
    from regionaldiff.tracking.mlflow_run import JobTracker

    cfg = compose_cfg("ldm=frozen_regional", *TINY, *overrides)
    typed = validate(cfg)
    tracker = JobTracker(False, "", "x", tmp_path / "mlartifacts", "x")
    ctx = build_context(cfg, typed, tracker)
    prepare(ctx, train=False)
    embeddings = image_embeddings(ctx)
    assert embeddings is not None
    stimuli = training_stimuli(ctx, embeddings)
    maps = ctx.datamodule.stimulus_region_maps(stimuli.ids)
    return {
        "frozen_unet": {**base_key(ctx, stimuli, 32), "train": train_settings(ctx)},
        "maps": content_hash(stimuli.ids, maps),
        "run_seed": ctx.seed,
    }


def test_the_eeg_free_keys_leave_out_the_subject_encoder_eeg_and_seed(compose_cfg, tmp_path):
    a = eeg_free_keys(compose_cfg, tmp_path)
    b = eeg_free_keys(compose_cfg, tmp_path, "seed=3", "encoder=shallow", "dataset.snr=0.3", "dataset.n_repetitions=2")
    assert a["run_seed"] != b["run_seed"]
    assert a["frozen_unet"] == b["frozen_unet"] and a["maps"] == b["maps"]
    names = key_names(a["frozen_unet"])
    for word in ("seed", "snr", "subject", "encoder", "eeg", "repetitions", "pretrain", "dataset"):
        assert not [n for n in names if word in n and n != "part_seed"], word
    # other images are another key
    c = eeg_free_keys(compose_cfg, tmp_path, "dataset.seed=1")
    assert c["frozen_unet"]["images"] != a["frozen_unet"]["images"] and c["maps"] != a["maps"]


def frozen_context(compose_cfg, tmp_path, *overrides: str):
    """A prepared context of ``ldm=frozen_regional`` at test size, and its training stimuli (nothing trained)."""
    from regionaldiff.runner import build_context
    from regionaldiff.steps.frozen import training_stimuli
    from regionaldiff.steps.prepare import prepare
    from regionaldiff.steps.pretrain import image_embeddings
    from regionaldiff.tracking.mlflow_run import JobTracker

    cfg = compose_cfg("ldm=frozen_regional", *TINY, *overrides)
    ctx = build_context(cfg, validate(cfg), JobTracker(False, "", "x", tmp_path / "mlartifacts", "x"))
    prepare(ctx, train=False)
    embeddings = image_embeddings(ctx)
    assert embeddings is not None
    return ctx, training_stimuli(ctx, embeddings)


def test_the_frozen_parts_latent_cache_is_keyed_by_the_images_and_gives_the_codecs_latents(compose_cfg, tmp_path):
    """ldm.train.latent_cache=true: the training images' latents are computed once into one slot that EEG settings
    and the run seed do not change, and a training step reads the codec's own latents from it; off, no cache."""
    from regionaldiff.components import build_codec
    from regionaldiff.steps.frozen import EEGFreeModule, StimulusSet, build_parts, stimulus_latent_cache

    ctx, stimuli = frozen_context(compose_cfg, tmp_path, "ldm.train.latent_cache=true")
    codec = build_codec(ctx.typed.ldm.latent)
    cache = stimulus_latent_cache(ctx, stimuli, codec, 32)
    assert cache is not None and sorted(cache.ids) == sorted(stimuli.ids)
    caches = list((tmp_path / "outputs" / "artifacts" / "latent_cache").iterdir())
    assert len(caches) == 1
    other, other_stimuli = frozen_context(
        compose_cfg, tmp_path, "ldm.train.latent_cache=true", "seed=3", "dataset.snr=0.3", "encoder=shallow"
    )
    stimulus_latent_cache(other, other_stimuli, codec, 32)
    assert list((tmp_path / "outputs" / "artifacts" / "latent_cache").iterdir()) == caches
    # a step's latents from the cache are the codec's (pixel-unshuffle is deterministic)
    ldm, _ = build_parts(ctx.typed.ldm, ctx, stimuli, 32)
    dataset = StimulusSet(stimuli.ids, stimuli.images, stimuli.embeddings, None)
    batch = torch.utils.data.default_collate([dataset[i] for i in (3, 0, 5)])
    cached = EEGFreeModule(ldm, codec, 1e-3, 0.0, latent_cache=cache).training_latents(batch)
    encoded = EEGFreeModule(ldm, codec, 1e-3, 0.0).training_latents(batch)
    assert cached.shape == encoded.shape and torch.allclose(cached, encoded, atol=1e-6)
    off, off_stimuli = frozen_context(compose_cfg, tmp_path / "off")
    assert stimulus_latent_cache(off, off_stimuli, codec, 32) is None


# -- end to end ------------------------------------------------------------------------------------------------------
def load_state(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def tags_by_job(root: Path) -> dict[str, dict[str, str]]:
    _, runs = mlflow_runs(root)
    return {r.data.tags.get("overrides", ""): r.data.tags for r in runs if "artifact.generated" in r.data.tags}


@pytest.mark.slow
def test_frozen_recipes_train_the_eeg_free_parts_once_and_later_jobs_reuse_them(run_cli, tmp_path):
    """`regionaldiff -m ldm=frozen_global,frozen_regional` then `ldm=frozen_regional seed=1`: the UNet and adapter
    are trained by the first job only, the ControlNet by the first regional job only; EEG changes neither; every
    model folder loads and generates, and saves and loads again."""
    from regionaldiff.reconstruction import LDM_WEIGHTS, RegionalDiffPipeline
    from regionaldiff.steps.frozen import CONTROLNET_WEIGHTS, PRIOR_WEIGHTS

    run_cli("-m", "ldm=frozen_global,frozen_regional", *TINY)
    run_cli("ldm=frozen_regional", "seed=1", *TINY, "hydra.run.dir=outputs/runs/seed1")
    artifacts = tmp_path / "outputs" / "artifacts"
    (unet_slot,) = list((artifacts / "frozen_unet").iterdir())
    (controlnet_slot,) = list((artifacts / "region_controlnet").iterdir())
    assert len(list((artifacts / "finetune").iterdir())) == 3  # one model folder per job (its own encoder)
    assert len(list((artifacts / "pretrain").iterdir())) == 2  # seeds 0 and 1
    for slot in (unet_slot, controlnet_slot):
        key = json.loads((slot / "key.json").read_text())
        names = key_names(key)
        assert not names & {"pretrain", "seed", "snr", "encoder", "net", "dataset", "prepare"}, names
        assert key["part_seed"] == 0
    # tagged as trained by the job that trained them, reused by the others
    jobs = tags_by_job(tmp_path)
    assert len(jobs) == 3
    unet_states = sorted(tags["frozen.frozen_unet"] for tags in jobs.values())
    assert unet_states == ["reused", "reused", "trained"]
    controlnet_states = sorted(
        tags["frozen.region_controlnet"] for tags in jobs.values() if "ldm=frozen_regional" in tags["overrides"]
    )
    assert controlnet_states == ["reused", "trained"]
    assert all(tags["artifact.frozen_unet"] == str(unet_slot) for tags in jobs.values())
    # nothing EEG-related changed the EEG-free weights: every model holds them as trained
    prior = load_state(unet_slot / PRIOR_WEIGHTS)
    controlnet = load_state(controlnet_slot / CONTROLNET_WEIGHTS)
    for model_dir in (artifacts / "finetune").iterdir():
        model = load_state(model_dir / LDM_WEIGHTS)
        assert not any(k.startswith("conditioner.") for k in model)
        for name, value in prior.items():
            assert torch.equal(model[name], value), name
        if any(k.startswith("controlnet.") for k in model):
            for name, value in controlnet.items():
                assert torch.equal(model[f"controlnet.{name}"], value), name
    # the saved model folder loads, generates, saves and loads again to the same images
    pipe = RegionalDiffPipeline.from_pretrained(tmp_path / "outputs" / "runs" / "seed1")
    eeg = torch.randn(2, pipe.data.n_chans, pipe.data.n_times)
    out = pipe(eeg, num_inference_steps=2, generator=torch.Generator().manual_seed(0))
    assert out.images.shape == (2, 1, 32, 32, 3) and out.region_probs is not None
    again = RegionalDiffPipeline.from_pretrained(pipe.save_pretrained(tmp_path / "saved"))
    out2 = again(eeg, num_inference_steps=2, generator=torch.Generator().manual_seed(0))
    assert (out2.images == out.images).all()
    metrics = json.loads((tmp_path / "outputs" / "runs" / "seed1" / "metrics.json").read_text())
    assert 0.0 <= metrics["eval/ssim"] <= 1.0

    # the same job again reuses the whole model folder, and still logs what its parts cost to train once
    run_cli("ldm=frozen_regional", "seed=1", *TINY, "hydra.run.dir=outputs/runs/seed1_again")
    _, runs = mlflow_runs(tmp_path)
    trained_by = {
        what: next(r for r in runs if r.data.tags.get(f"frozen.{what}") == "trained")
        for what in ("frozen_unet", "region_controlnet")
    }
    latest = max(runs, key=lambda r: r.info.start_time)
    assert latest.data.tags["artifact.ldm"] == jobs[next(k for k in jobs if "seed=1" in k)]["artifact.ldm"]
    for what, run in trained_by.items():
        for name in (f"frozen/{what}_train_seconds", f"frozen/{what}_train_samples"):
            assert latest.data.metrics[name] == run.data.metrics[name] > 0, name


@pytest.mark.slow
def test_sd15_frozen_regional_runs_end_to_end_on_a_local_ip_adapter(run_cli, weights, tmp_path):
    """`regionaldiff ldm=sd15_frozen_regional paths.weights_dir=<folder>` on narrow random SD-1.5 and IP-Adapter
    folders: the EEG aligned to IP-Adapter's image encoder, the ControlNet trained on images and maps, the UNet as
    read from its folder."""
    from regionaldiff.reconstruction import RegionalDiffPipeline

    run_cli(*TINY, *sd_overrides(weights), "ldm.batch_size=8", "ldm.max_epochs=1", "hydra.run.dir=outputs/runs/sd")
    job = tmp_path / "outputs" / "runs" / "sd"
    metrics = json.loads((job / "metrics.json").read_text())
    assert 0.0 <= metrics["eval/ssim"] <= 1.0
    artifacts = tmp_path / "outputs" / "artifacts"
    assert not (artifacts / "frozen_unet").exists()  # the UNet and IP-Adapter are pretrained
    assert len(list((artifacts / "region_controlnet").iterdir())) == 1
    (cache_slot,) = list((artifacts / "latent_cache").iterdir())  # the ControlNet trained on cached VAE latents
    assert not key_names(json.loads((cache_slot / "key.json").read_text())) & {"seed", "snr", "encoder", "prepare"}
    pipe = RegionalDiffPipeline.from_pretrained(job)
    assert isinstance(pipe.ldm.adapter, IPAdapter) and pipe.encoder.align_dim == EMBED_DIM
    base = UNet2DConditionModel.from_pretrained(str(weights / "stable-diffusion-v1-5"), subfolder="unet")
    for name, value in base.state_dict().items():  # the SD-1.5 UNet as read from its folder
        assert torch.equal(pipe.ldm.unet.state_dict()[name], value), name
    out = pipe(torch.randn(1, 17, 100), num_inference_steps=2, generator=torch.Generator().manual_seed(0))
    assert out.images.shape == (1, 1, 64, 64, 3)


#: each dataset option at test size (the real datasets from small files in their official formats, written per test)
DATASETS_AT_TEST_SIZE = {
    "synthetic": [*TINY],
    "synthetic_things": [*TINY_THINGS, "encoder.max_epochs=2", "ldm.max_epochs=2", "ldm.sampling.num_steps=3"],
    "synthetic_imagenet": [
        "dataset.images_per_concept=2",
        "dataset.val_images_per_concept=1",
        "dataset.test_images_per_concept=1",
        "encoder.max_epochs=2",
        "ldm.max_epochs=2",
        "ldm.sampling.num_steps=3",
    ],
    "eeg_imagenet": ["regionmap=slic", *REAL_TINY],
    "things_eeg2": ["regionmap=slic", "dataset.subjects=[1,2]", "dataset.val_fraction=0.25", *REAL_TINY],
}


@pytest.mark.slow
@pytest.mark.parametrize("dataset", sorted(DATASETS_AT_TEST_SIZE))
def test_both_recipes_run_end_to_end_on_every_dataset_option(run_cli, tmp_path, dataset):
    """`regionaldiff -m ldm=regional,frozen_regional` on every dataset option: the seed's recipe and the frozen one
    both generate and score; the frozen job trains its EEG-free parts (one of each), and a second frozen job on the
    same images reuses them."""
    from official_formats import write_eeg_imagenet, write_things_eeg2

    roots = {"eeg_imagenet": write_eeg_imagenet, "things_eeg2": write_things_eeg2}
    where = [f"dataset.root={roots[dataset](tmp_path / dataset).root}"] if dataset in roots else []
    common = [f"dataset={dataset}", *where, *DATASETS_AT_TEST_SIZE[dataset], "trainer.enable_progress_bar=false"]
    run_cli("-m", "ldm=regional,frozen_regional", *common)
    run_cli("ldm=frozen_regional", "seed=1", *common, "hydra.run.dir=outputs/runs/seed1")
    jobs = tags_by_job(tmp_path)
    assert len(jobs) == 3, sorted(jobs)
    for overrides, tags in jobs.items():
        metrics = json.loads((Path(tags["output_dir"]) / "metrics.json").read_text())
        assert 0.0 <= metrics["eval/ssim"] <= 1.0, overrides
    frozen = sorted(
        (tags["frozen.frozen_unet"], tags["frozen.region_controlnet"])
        for tags in jobs.values()
        if "ldm=frozen_regional" in tags["overrides"]
    )
    assert frozen == [("reused", "reused"), ("trained", "trained")]
    artifacts = tmp_path / "outputs" / "artifacts"
    assert len(list((artifacts / "frozen_unet").iterdir())) == 1
    assert len(list((artifacts / "region_controlnet").iterdir())) == 1
