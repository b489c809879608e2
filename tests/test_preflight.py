"""``regionaldiff check``: the default run is ready; real-data configs without their files are not, file by file."""

from __future__ import annotations

import json

import pytest
import torch

from official_formats import write_eeg_imagenet
from regionaldiff.data.eeg_imagenet import EEGImageNetDataModule
from regionaldiff.errors import MissingFileError
from regionaldiff.preflight import preflight, require_ready


def test_check_default_is_ready(run_cli):
    proc = run_cli("check")
    assert proc.returncode == 0
    assert "ready: yes" in proc.stdout and "metrics computed: ssim, pixcorr" in proc.stdout
    assert "GPU:" in proc.stdout and "dataset cache:" in proc.stdout


def test_check_eeg_imagenet_without_data_lists_each_missing_file(run_cli, tmp_path):
    proc = run_cli("check", "dataset=eeg_imagenet", check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    root = tmp_path / "data" / "eeg_imagenet"
    for path in (root / "eeg_5_95_std.pth", root / "block_splits_by_image_all.pth", root / "imageNet_images"):
        assert any(line.split()[:1] == ["MISSING"] and str(path) in line for line in proc.stdout.splitlines()), path
    assert "ready: NO (3 required file(s)" in proc.stdout
    assert not (tmp_path / "outputs" / "cache").exists()


def test_check_real_data_config_lists_weights_and_skipped_metrics(run_cli, tmp_path):
    proc = run_cli(
        "check",
        "dataset=things_eeg2",
        "encoder/align=clip",
        "regionmap=sam",
        "ldm=sd15_regional",
        "eval=things",
        "trainer=cpu",
        check=False,
    )
    assert proc.returncode == 1
    out = proc.stdout
    weights = tmp_path / "weights"
    for text in (
        "image_metadata.npy",
        "sub-01/preprocessed_eeg_training.npy",
        "sub-01/preprocessed_eeg_test.npy",
        f"{weights}/sam/sam_vit_b_01ec64.pth  (regionmap.checkpoint)",
        f"{weights}/stable-diffusion-v1-5/unet  (ldm.unet.pretrained",
        f"{weights}/stable-diffusion-v1-5/vae  (ldm.latent.pretrained",
        f"{weights}/clip-vit-large-patch14  (eval.backbones.clip.path)",
        f"{weights}/clip-vit-large-patch14  (ldm.clip_loss.pretrained)",
        f"{weights}/clip-vit-large-patch14  (encoder.align.image_embedder.path)",
        f"{weights}/torchvision/alexnet-owt-7be5be79.pth  (eval.backbones.alexnet.path)",
        "metric skipped:   clip: CLIP ViT-L/14 (metric clip) missing",
        "metric skipped:   fid: FID Inception (clean-fid) missing",
        "metrics computed: retrieval, ssim, pixcorr",
    ):
        assert text in out, text
    assert "ready: NO (10 required file(s)" in out
    # without the aligned EEG embedding, the preflight says retrieval will be skipped and what to choose
    plain = run_cli("check", "dataset=things_eeg2", "eval=things", "ldm=global", check=False).stdout
    assert "metric skipped:   retrieval: needs an EEG embedding aligned to images: choose encoder/align=clip" in plain


def test_check_bad_value_is_not_ready(run_cli):
    proc = run_cli("check", "encoder.net.mask_ratio=1.5", check=False)
    assert proc.returncode == 1
    assert "PROBLEM:          bad config: encoder.net.mask_ratio must be in (0, 1); got 1.5." in proc.stdout


def test_check_bad_override_is_a_one_line_error(run_cli):
    proc = run_cli("check", "ldm.lr=abc", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("regionaldiff: error: Error merging override ldm.lr=abc")


def _sd_folder(root):
    for part in ("unet", "vae"):
        (root / part).mkdir(parents=True)
        (root / part / "config.json").write_text(json.dumps({"_class_name": part}))
        (root / part / "diffusion_pytorch_model.safetensors").write_bytes(b"\0" * 16)
    return root


def test_preflight_with_files_in_place_is_ready(compose_cfg, tmp_path):
    fx = write_eeg_imagenet(tmp_path / "eeg", n_subjects=1, n_classes=2, images_per_class=3, n_chans=4)
    sd = _sd_folder(tmp_path / "weights" / "stable-diffusion-v1-5")
    alexnet = tmp_path / "weights" / "torchvision" / "alexnet-owt-7be5be79.pth"
    alexnet.parent.mkdir(parents=True)
    torch.save({"w": torch.zeros(1)}, alexnet)
    cfg = compose_cfg(
        "dataset=eeg_imagenet",
        f"dataset.root={fx.root}",
        "regionmap=slic",
        "ldm=sd15_regional",
        "ldm.clip_loss.weight=0",  # no CLIP folder here: the metric clip is skipped, the loss must be off
        "trainer=cpu",
        "eval.metrics=[ssim,alexnet2,clip]",
    )
    report = preflight(cfg)
    assert report.ready, report.summary()
    by_what = {item.what: item for item in report.items}
    assert by_what["EEG-ImageNet EEG file"].ok and by_what["ImageNet images (<wnid>/<name>.JPEG)"].ok
    assert by_what["SD-1.5 UNet"].path == str(sd / "unet") and by_what["SD-1.5 VAE"].ok
    assert report.metrics_run == ["ssim", "alexnet2"] and "clip" in report.metrics_skipped
    assert report.cache_bytes and report.cache_bytes > 0


def test_preflight_flags_an_incomplete_sd_folder(compose_cfg, tmp_path):
    sd = _sd_folder(tmp_path / "weights" / "stable-diffusion-v1-5")
    (sd / "vae" / "diffusion_pytorch_model.safetensors").unlink()
    report = preflight(compose_cfg("ldm=sd15_global", "ldm.clip_loss.weight=0", "trainer=cpu"))
    assert not report.ready
    (item,) = report.blocking
    assert item.what == "SD-1.5 VAE" and item.status == "bad" and "no weights file" in item.note


def test_allow_download_runs_metrics_without_local_weights(compose_cfg):
    report = preflight(compose_cfg("eval.metrics=[ssim,effnet]", "eval.allow_download=true"))
    assert report.ready and report.metrics_run == ["ssim", "effnet"]
    assert any("will be downloaded" in item.note for item in report.items)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_gpu_trainer_without_a_gpu_is_not_ready(compose_cfg):
    report = preflight(compose_cfg("trainer=gpu"))
    assert not report.ready and "trainer.accelerator=gpu but no CUDA GPU is visible" in report.summary()
    with pytest.raises(Exception, match="no CUDA GPU is visible"):
        require_ready(compose_cfg("trainer=gpu"))


def test_datamodule_checks_its_files_before_any_cache(tmp_path):
    dm = EEGImageNetDataModule(root=str(tmp_path / "nothing"), cache_dir=str(tmp_path / "cache"))
    with pytest.raises(MissingFileError, match="eeg_5_95_std.pth"):
        dm.setup()
    assert not (tmp_path / "cache").exists()


class WeightedMaps:
    """A newcomer's region-map generator that reads a weights file under a key of its own (not ``checkpoint``)."""

    produces_maps = True

    def __init__(self, weights: str) -> None:  # the checker holds a config's arguments to the signature
        self.weights = weights

    @classmethod
    def required_files(cls, node, key):
        from pathlib import Path

        from regionaldiff.requirements import RequiredPath

        return [RequiredPath("edge model weights", Path(node["weights"]), f"{key}.weights", fmt="torch")]


def test_a_component_that_declares_its_files_is_checked_whatever_its_keys(compose_cfg, tmp_path):
    weights = tmp_path / "edges.pt"
    # its own YAML, without a schema: no regionmap option, then its node (a shipped option's schema has no `weights`)
    cfg = compose_cfg(
        "ldm=global", "~regionmap", f"+regionmap._target_={__name__}.WeightedMaps", f"+regionmap.weights={weights}"
    )
    report = preflight(cfg)
    item = next(i for i in report.items if i.what == "edge model weights")
    assert (item.status, item.key, item.path) == ("missing", "regionmap.weights", str(weights))
    assert not report.ready and "regionmap.weights" in report.summary()
    torch.save({"w": torch.zeros(1)}, weights)
    assert preflight(cfg).ready
