"""User mistakes give one line on stderr and exit status 2, without a traceback; program errors keep theirs.

Each case runs the real CLI from a folder with no data or weights (as a new user would), or with a dataset in the
official format whose content is wrong.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from official_formats import write_eeg_imagenet, write_things_eeg2
from regionaldiff import cli, runner
from regionaldiff.commands import run
from regionaldiff.errors import BadInputError, ConfigError, MissingFileError, UserError, format_user_error


def error_line(proc: subprocess.CompletedProcess) -> str:
    """The one error line (stderr may add one ``hint:`` line); asserts the shape of a user-error report."""
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    lines = [line for line in proc.stderr.splitlines() if line.startswith("regionaldiff: error: ")]
    assert len(lines) == 1, proc.stderr[-3000:]
    others = [line for line in proc.stderr.splitlines() if line.strip() and not line.startswith("regionaldiff: ")]
    assert not others, others  # nothing else on stderr (no log lines, no Hydra report)
    return lines[0]


def test_missing_eeg_imagenet_names_the_files_and_starts_no_cache(run_cli, tmp_path):
    line = error_line(run_cli("dataset=eeg_imagenet", "logger=none", check=False))
    root = tmp_path / "data" / "eeg_imagenet"
    assert f"folder {root} does not exist" in line
    for name in ("eeg_5_95_std.pth", "block_splits_by_image_all.pth", "imageNet_images", "dataset.root"):
        assert name in line
    assert not (tmp_path / "outputs" / "cache").exists(), "no cache may be started before the files are checked"


def test_missing_things_eeg2_names_the_files(run_cli, tmp_path):
    line = error_line(run_cli("dataset=things_eeg2", "regionmap=slic", "logger=none", check=False))
    for name in ("image_metadata.npy", "preprocessed_eeg_training.npy", "preprocessed_eeg_test.npy", "sub-01"):
        assert name in line
    assert not (tmp_path / "outputs" / "cache").exists()


def test_missing_sd15_weights(run_cli, tmp_path):
    line = error_line(run_cli("ldm=sd15_regional", "logger=none", check=False))
    assert f"folder {tmp_path / 'weights' / 'stable-diffusion-v1-5'} does not exist" in line
    assert "unet (SD-1.5 UNet)" in line and "vae (SD-1.5 VAE)" in line and "ldm.unet.pretrained" in line


def test_missing_sam_checkpoint(run_cli, tmp_path):
    line = error_line(run_cli("regionmap=sam", "logger=none", check=False))
    assert "sam_vit_b_01ec64.pth (SAM checkpoint (vit_b))" in line and "regionmap.checkpoint" in line


def test_mismatched_sam_checkpoint_name(run_cli, tmp_path):
    path = tmp_path / "sam_vit_h_4b8939.pth"
    torch.save({"image_encoder.pos_embed": torch.zeros(1)}, path)
    line = error_line(run_cli("regionmap=sam", f"regionmap.checkpoint={path}", "logger=none", check=False))
    assert "sam_vit_h_4b8939.pth is the vit_h checkpoint but regionmap.model_type=vit_b" in line


@pytest.mark.parametrize(
    "override, expected",
    [
        ("encoder.net.mask_ratio=1.5", "encoder.net.mask_ratio must be in (0, 1); got 1.5."),
        ("ldm.lr=abc", "Value 'abc' of type 'str' could not be converted to Float full_key: ldm.lr"),
        ("dataset=nope", "Could not find 'dataset/nope' Available options in 'dataset': eeg_imagenet synthetic"),
        ("eval.metrics=[ssim,nope]", "eval.metrics: unknown metric(s) ['nope']"),
        ("dataset.n_train=0", "dataset.n_train"),
        ("ldm.sampling.map_temperature=-1", "ldm.sampling.map_temperature must be >= 0"),
        ("ldm.sampling.controlnet_scale=-0.5", "ldm.sampling.controlnet_scale must be >= 0"),
    ],
)
def test_bad_values_are_one_line(run_cli, tmp_path, override, expected):
    line = error_line(run_cli(override, "logger=none", check=False))
    assert expected in line
    assert not (tmp_path / "outputs" / "artifacts").exists()


def test_unreadable_eeg_file(run_cli, tmp_path):
    fx = write_eeg_imagenet(tmp_path / "eeg", n_subjects=1, n_classes=2, images_per_class=3, n_chans=4)
    fx.eeg_file.write_bytes(b"this is not a torch file at all")
    line = error_line(run_cli("dataset=eeg_imagenet", f"dataset.root={fx.root}", "logger=none", check=False))
    assert f"EEG-ImageNet EEG file bad: {fx.eeg_file}" in line and "not a torch.save file" in line


def test_wrongly_shaped_eeg(run_cli, tmp_path):
    fx = write_eeg_imagenet(tmp_path / "eeg", n_subjects=1, n_classes=2, images_per_class=3, n_chans=4)
    data = {
        "dataset": [{"eeg": torch.zeros(500), "image": 0, "label": 0, "subject": 1}],
        "labels": ["a"],
        "images": ["a_1"],
    }
    torch.save(data, fx.eeg_file, _use_new_zipfile_serialization=False)
    line = error_line(run_cli("dataset=eeg_imagenet", f"dataset.root={fx.root}", "logger=none", check=False))
    assert "dataset[0]['eeg'] has shape (500,); expected [channels, T]" in line


def test_things_eeg_file_of_the_wrong_kind(run_cli, tmp_path):
    fx = write_things_eeg2(tmp_path / "things", subjects=(1,))
    bad = fx.root / "preprocessed_data" / "sub-01" / "preprocessed_eeg_test.npy"
    np.save(bad, np.zeros((3, 4)))
    line = error_line(
        run_cli("dataset=things_eeg2", f"dataset.root={fx.root}", "regionmap=slic", "logger=none", check=False)
    )
    assert (
        f"{bad}" in line and "holds a plain float64 array of shape (3, 4); expected a dict saved with np.save" in line
    )


def test_debug_switch_shows_the_traceback(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("HYDRA_FULL_ERROR", "MLFLOW_TRACKING_URI")}
    env["REGIONALDIFF_DEBUG"] = "1"
    proc = subprocess.run(
        [sys.executable, "-m", "regionaldiff", "regionmap=sam", "logger=none"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode != 0 and "Traceback" in proc.stderr and "MissingFileError" in proc.stderr


def test_program_errors_keep_their_traceback(monkeypatch):
    def boom(cfg):
        raise RuntimeError("a bug")

    monkeypatch.setattr(runner, "run_job", boom)
    with pytest.raises(RuntimeError, match="a bug"):
        cli._run_job(None)


def test_user_errors_exit_2_with_one_line(monkeypatch, capsys):
    def missing(cfg):
        raise MissingFileError("x.pth not found\n  (second line)", hint="see docs/setup.md")

    monkeypatch.delenv("REGIONALDIFF_DEBUG", raising=False)
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    monkeypatch.setattr(runner, "run_job", missing)
    with pytest.raises(SystemExit) as exit_info:
        cli._run_job(None)
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == (
        "regionaldiff: error: x.pth not found (second line)\nregionaldiff: hint: see docs/setup.md\n"
    )


def test_user_error_classes_keep_the_builtin_bases():
    assert issubclass(MissingFileError, FileNotFoundError) and issubclass(MissingFileError, UserError)
    assert issubclass(BadInputError, ValueError) and issubclass(ConfigError, ValueError)
    assert format_user_error(ConfigError("a\nb")) == "regionaldiff: error: a b"


def test_corrupt_sd_weights_are_a_user_error(tmp_path):
    from diffusers import UNet2DConditionModel

    from regionaldiff.ldm.unet import unet_from_pretrained

    tiny = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(8, 8),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        layers_per_block=1,
        cross_attention_dim=8,
        attention_head_dim=2,
        norm_num_groups=4,
    )
    tiny.save_pretrained(tmp_path / "sd" / "unet")
    assert isinstance(unet_from_pretrained(str(tmp_path / "sd"), in_channels=4, latent_size=8), UNet2DConditionModel)
    weights = next((tmp_path / "sd" / "unet").glob("diffusion_pytorch_model.*"))
    weights.write_bytes(b"not weights")
    with pytest.raises(BadInputError, match=r"The UNet at .*sd/unet \(ldm.unet.pretrained\) could not be loaded"):
        unet_from_pretrained(str(tmp_path / "sd"), in_channels=4, latent_size=8)


def test_sweep_overrides_are_left_to_hydra(monkeypatch):
    # `regionaldiff experiment=ablation_regions seed=3,4` sweeps without -m (the config sets hydra.mode: MULTIRUN)
    assert run.hands_to_hydra(["experiment=ablation_regions", "seed=3,4"])
    assert run.hands_to_hydra(["--cfg", "job"]) and run.hands_to_hydra(["-m", "seed=0"])
    assert not run.hands_to_hydra(["ldm.lr=abc"]) and not run.hands_to_hydra([])


def test_precheck_reports_a_bad_override(capsys, monkeypatch):
    monkeypatch.delenv("REGIONALDIFF_DEBUG", raising=False)
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    from hydra.core.global_hydra import GlobalHydra

    try:
        with pytest.raises(SystemExit) as exit_info:
            run.run_once(["ldm.lr=abc"], cli._run_job)
    finally:
        GlobalHydra.instance().clear()
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.startswith("regionaldiff: error: Error merging override ldm.lr=abc")
