"""Shared fixtures: compose the real config (lightning-hydra-template style) and run the real CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from regionaldiff.config import config_dir, register_configs

# A pipeline small enough for a test (seconds per step), still every step for real.
TINY = [
    "dataset.n_train=48",
    "dataset.n_val=12",
    "dataset.n_test=12",
    "encoder.max_epochs=2",
    "ldm.max_epochs=2",
    "ldm.sampling.num_steps=3",
    "trainer.enable_progress_bar=false",
    "trainer.log_every_n_steps=1",
]

#: the zero-shot preset (dataset=synthetic_things, chosen by the caller) at test size: a few concepts and repetitions
TINY_THINGS = [
    "dataset.n_concepts=16",
    "dataset.n_val_concepts=4",
    "dataset.n_test_concepts=8",
    "dataset.images_per_concept=2",
    "dataset.test_repetitions=6",
    "eval.retrieval.repetitions=[1,6]",
]

#: the real datasets (official-format files the test writes) at test size
REAL_TINY = [
    "dataset.image_size=32",
    "dataset.batch_size=4",
    "encoder.max_epochs=1",
    "ldm.max_epochs=1",
    "ldm.sampling.num_steps=2",
    "trainer.enable_progress_bar=false",
    "eval.metrics=[ssim,pixcorr,fid]",
]


@pytest.fixture
def compose_cfg(tmp_path):
    """Compose ``conf/config.yaml`` with overrides; paths point into ``tmp_path``."""

    def _compose(*overrides: str):
        register_configs()
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            return compose(
                "config", overrides=[f"paths.root_dir={tmp_path}", f"paths.output_dir={tmp_path}/job", *overrides]
            )

    yield _compose
    GlobalHydra.instance().clear()


def cli_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("OMP_NUM_THREADS", "2")
    return env


@pytest.fixture
def run_cli(tmp_path):
    """Run ``python -m regionaldiff ARGS`` in ``tmp_path`` (its outputs go to tmp_path/outputs)."""

    def _run(*args: str, check: bool = True, timeout: int = 600) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            [sys.executable, "-m", "regionaldiff", *args],
            cwd=tmp_path,
            env=cli_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"regionaldiff {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}"
            )
        return proc

    return _run


def mlflow_runs(root: Path):
    """All runs in the sqlite store under ``root/outputs``."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{root / 'outputs' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("regionaldiff")
    return client, client.search_runs([experiment.experiment_id], max_results=100)


def write_tiny_clip(folder: Path) -> Path:
    """A tiny transformers CLIP vision tower with projection (projection_dim 12), saved with save_pretrained."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(0)
    config = CLIPVisionConfig(
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=32,
        patch_size=16,
        projection_dim=12,
    )
    CLIPVisionModelWithProjection(config).save_pretrained(folder)
    return folder


def tiny_encoder(**kw):
    """A small EEG MAE (5 channels, 40 samples, 3 classes, region grid 4); keyword arguments override."""
    from regionaldiff.encoder.mae import EEGMaskedAutoencoder

    args = dict(
        n_chans=5,
        n_times=40,
        sfreq=100.0,
        num_classes=3,
        patch_size=4,
        embed_dim=16,
        depth=1,
        num_heads=2,
        decoder_embed_dim=8,
        decoder_depth=1,
        decoder_num_heads=2,
        region_grid=4,
    )
    args.update(kw)
    return EEGMaskedAutoencoder(**args)


@pytest.fixture
def tiny_sam_checkpoint(tmp_path, monkeypatch):
    """A SAM with a tiny image encoder registered as ``vit_tiny``, random weights saved to a file.

    Full-size SAM (even ViT-B) takes ~40 s per image on one CPU thread, so the end-to-end test uses the same
    ``Sam`` classes with a 2-block, 32-wide image encoder, built and loaded through ``sam_model_registry``.
    """
    from segment_anything import sam_model_registry
    from segment_anything.build_sam import _build_sam

    def build_tiny(checkpoint=None):
        return _build_sam(
            encoder_embed_dim=32,
            encoder_depth=2,
            encoder_num_heads=2,
            encoder_global_attn_indexes=[1],
            checkpoint=checkpoint,
        )

    monkeypatch.setitem(sam_model_registry, "vit_tiny", build_tiny)
    torch.manual_seed(0)
    path = tmp_path / "sam_tiny.pth"
    torch.save(build_tiny().state_dict(), path)
    return path


def build_test_ldm(cfg, image_size: int = 64, embedding_dim: int = 0):
    """An ``ldm`` config's model and codec at test sizes (25 codes of width 16, 5 classes), seeded."""
    import torch

    from regionaldiff.components import build_codec, build_ldm

    torch.manual_seed(0)
    codec = build_codec(cfg.latent)
    ldm = build_ldm(
        cfg,
        latent_channels=codec.latent_channels,
        code_len=25,
        code_dim=16,
        num_classes=5,
        image_size=image_size,
        latent_size=image_size // codec.downsample,
        embedding_dim=embedding_dim,
    )
    return ldm, codec
