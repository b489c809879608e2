"""RegionalDiffPipeline and ``regionaldiff reconstruct`` on the output of a real (tiny) run.

The run is the real CLI on the embedded default, shrunk; the pipeline must load it from the run folder and from
the artifact folder, reproduce the generate step's images for the same seed, and refuse bad EEG with a message
that says what was expected.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import hydra
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from conftest import TINY, cli_env
from regionaldiff.config import config_dir, register_configs
from regionaldiff.reconstruction import NoTrainedModelError, RegionalDiffPipeline

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A finished tiny run: its job folder, the generate step's arrays and the test split's EEG."""
    root = tmp_path_factory.mktemp("run")
    proc = subprocess.run(
        [sys.executable, "-m", "regionaldiff", *TINY, "logger=none", "hydra.run.dir=outputs/runs/tiny"],
        cwd=root,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    job = root / "outputs" / "runs" / "tiny"
    model_dir = Path(json.loads((job / "model.json").read_text())["model_dir"])
    generated = dict(np.load(next((root / "outputs" / "artifacts" / "generate").glob("*/generated.npz"))))

    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("config", overrides=[f"paths.root_dir={root}", f"paths.output_dir={job}", *TINY])
    GlobalHydra.instance().clear()
    dm = hydra.utils.instantiate(cfg.dataset)
    dm.setup()
    eeg = torch.cat([b["eeg"] for b in dm.loader("test", False, 1000)])
    return {"root": root, "job": job, "model_dir": model_dir, "generated": generated, "eeg": eeg}


def fresh_process_threads() -> int:
    """Torch's thread count in a new interpreter: the run's (trainer.num_threads=null). Tests before this one may
    have changed this process's, and guided sampling's doubled batch is not bit-identical across thread counts."""
    proc = subprocess.run(
        [sys.executable, "-c", "import torch; print(torch.get_num_threads())"],
        env=cli_env(),
        capture_output=True,
        text=True,
        check=True,
    )
    return int(proc.stdout.strip())


def test_pipeline_from_the_run_folder_reproduces_the_generate_step(trained_run):
    pipe = RegionalDiffPipeline.from_pretrained(trained_run["job"])
    before = torch.get_num_threads()
    torch.set_num_threads(fresh_process_threads())
    try:
        out = pipe(trained_run["eeg"], generator=torch.Generator().manual_seed(0))
    finally:
        torch.set_num_threads(before)
    generated = trained_run["generated"]
    assert out.images.shape == generated["generated"].shape == (12, 1, 32, 32, 3)
    assert np.array_equal(out.images, generated["generated"])
    assert np.array_equal(out.class_logits.argmax(-1), generated["eeg_pred"])
    assert out.region_probs is not None and out.region_probs.shape == (12, 6, 8, 8)
    assert np.array_equal(out.region_probs.astype(np.float16), generated["region_probs"])
    # the artifact folder loads too, and a call's settings override the run's
    again = RegionalDiffPipeline.from_pretrained(trained_run["model_dir"])
    two = again(trained_run["eeg"][:3], num_images_per_eeg=2, generator=torch.Generator().manual_seed(1))
    assert two.images.shape == (3, 2, 32, 32, 3)
    assert not np.array_equal(two.images[:, 0], two.images[:, 1])


def test_a_model_saved_before_map_temperature_loads_and_samples_as_it_did(trained_run, tmp_path, monkeypatch):
    import shutil

    old = tmp_path / "old_model"
    shutil.copytree(trained_run["model_dir"], old, ignore=shutil.ignore_patterns("checkpoints"))
    card = json.loads((old / "pipeline.json").read_text())
    assert card["ldm"]["sampling"]["map_temperature"] == 0.25  # the defaults of ldm=regional
    assert card["ldm"]["sampling"]["controlnet_scale"] == 1.5
    del card["ldm"]["sampling"]["map_temperature"], card["ldm"]["sampling"]["controlnet_scale"]
    (old / "pipeline.json").write_text(json.dumps(card))
    before = RegionalDiffPipeline.from_pretrained(old)
    # models saved before these keys sampled with the maps as predicted and the ControlNet as trained
    assert before.sampling.map_temperature == 1.0 and before.sampling.controlnet_scale == 1.0
    out = before(trained_run["eeg"], generator=torch.Generator().manual_seed(0))
    now = RegionalDiffPipeline.from_pretrained(trained_run["model_dir"])
    now.sampling = dataclasses.replace(now.sampling, map_temperature=1.0, controlnet_scale=1.0)
    assert np.array_equal(out.images, now(trained_run["eeg"], generator=torch.Generator().manual_seed(0)).images)

    # map_temperature=0: the map that conditions generation is one-hot; the returned map is the predicted one
    import regionaldiff.reconstruction as reconstruction

    seen = []

    def spy(ldm, context, condition, *args, **kwargs):
        seen.append(condition)
        scales.append(kwargs["controlnet_scale"])
        return real_denoise(ldm, context, condition, *args, **kwargs)

    real_denoise = reconstruction.denoise
    scales: list[float] = []
    monkeypatch.setattr(reconstruction, "denoise", spy)
    now.sampling = dataclasses.replace(now.sampling, map_temperature=0.0, controlnet_scale=1.5)
    sharp = now(trained_run["eeg"], generator=torch.Generator().manual_seed(0))
    assert scales == [1.5]  # the ControlNet scale reaches the sampler
    assert sharp.region_probs is not None and out.region_probs is not None
    assert np.array_equal(sharp.region_probs, out.region_probs)
    assert set(seen[0].unique().tolist()) == {0.0, 1.0}
    assert torch.equal(seen[0].argmax(1), torch.from_numpy(out.region_probs).argmax(1))


def test_reconstruct_command_writes_images_evaluate_can_score(trained_run, tmp_path):
    eeg_file = tmp_path / "eeg.npy"
    np.save(eeg_file, trained_run["eeg"].numpy())
    out_dir = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "regionaldiff", "reconstruct", str(trained_run["job"]), str(eeg_file), str(out_dir)],
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    images = sorted(out_dir.glob("*.png"))
    assert [p.name for p in images[:2]] == ["00000.png", "00001.png"] and len(images) == 12
    from PIL import Image

    # same seed (0), same batch: the generate step's images
    assert np.array_equal(np.asarray(Image.open(images[3])), trained_run["generated"]["generated"][3, 0])
    assert len(list((out_dir / "maps").glob("*.png"))) == 12
    assert np.load(out_dir / "region_probs.npy").shape == (12, 6, 8, 8)
    probs = np.load(out_dir / "class_probs.npy")
    assert probs.shape == (12, 5) and np.allclose(probs.sum(1), 1.0, atol=1e-5)


@pytest.mark.parametrize(
    ("make_eeg", "sfreq", "message"),
    [
        (lambda e: e[:, :16], None, "EEG has 16 channels; this model was trained on 17"),
        (lambda e: e[:, :, :96], None, "EEG has 96 time samples; this model was trained on 100"),
        (lambda e: e[0], None, r"EEG must be \[trials, channels, time samples\] = \[N, 17, 100\]"),
        (lambda e: e.index_fill(0, torch.tensor([1]), float("nan")), None, "NaN or infinite values in 1 of 12 trials"),
        (lambda e: e, 250.0, "EEG sampled at 250 Hz; this model was trained at 100 Hz"),
    ],
)
def test_bad_eeg_is_refused_with_what_was_expected(trained_run, make_eeg, sfreq, message):
    pipe = RegionalDiffPipeline.from_pretrained(trained_run["job"])
    with pytest.raises(ValueError, match=message):
        pipe(make_eeg(trained_run["eeg"].clone()), sfreq=sfreq)


def test_bad_sampler_settings_are_refused(trained_run):
    pipe = RegionalDiffPipeline.from_pretrained(trained_run["job"])
    eeg = trained_run["eeg"][:2]
    with pytest.raises(ValueError, match="num_inference_steps must be >= 1"):
        pipe(eeg, num_inference_steps=0)
    with pytest.raises(ValueError, match="guidance_scale must be > 0"):
        pipe(eeg, guidance_scale=0.0)
    with pytest.raises(ValueError, match=r"region_probs must be \[2, 6, 8, 8\]"):
        pipe(eeg, region_probs=torch.rand(2, 6, 4, 4))


def test_a_folder_without_a_trained_model_says_what_it_needs(trained_run, tmp_path):
    with pytest.raises(NoTrainedModelError, match="No trained model in .*expected pipeline.json"):
        RegionalDiffPipeline.from_pretrained(tmp_path)
    with pytest.raises(NoTrainedModelError, match="is not a folder"):
        RegionalDiffPipeline.from_pretrained(tmp_path / "missing")
    moved = tmp_path / "run"
    moved.mkdir()
    (moved / "model.json").write_text(json.dumps({"model_dir": str(tmp_path / "gone"), "sampling": {}}))
    with pytest.raises(NoTrainedModelError, match="was the artifact folder moved or deleted"):
        RegionalDiffPipeline.from_pretrained(moved)
    # the command line says it in one line, exit code 2
    proc = subprocess.run(
        [sys.executable, "-m", "regionaldiff", "reconstruct", str(tmp_path), str(tmp_path / "x.npy"), str(tmp_path)],
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("regionaldiff reconstruct: error: EEG file")
    assert "Traceback" not in proc.stderr
