"""Folder evaluation (other methods' outputs) and the eval config files."""

from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf
from PIL import Image

from regionaldiff.evaluation.folders import evaluate_folders, match_folders
from regionaldiff.evaluation.suite import eval_config, evaluate_images

CONF = Path(__file__).resolve().parents[1] / "conf" / "eval"


def write(folder, name, image):
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(folder / name)


def test_folders_match_by_name_with_samples_and_score_like_arrays(tmp_path):
    rng = np.random.default_rng(0)
    ref = rng.integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)
    gen = np.stack([ref, 255 - ref], axis=1)
    for i, stem in enumerate(["b", "a", "c"]):
        write(tmp_path / "ref", f"{stem}.png", ref[i])
        write(tmp_path / "gen", f"{stem}_s0.png", gen[i, 0])
        write(tmp_path / "gen", f"{stem}_s1.png", gen[i, 1])
    stems, gen_paths, _ = match_folders(tmp_path / "gen", tmp_path / "ref")
    assert stems == ["a", "b", "c"] and [p.name for p in gen_paths[0]] == ["a_s0.png", "a_s1.png"]
    cfg = {"metrics": ["ssim", "pixcorr"], "resolution": 16}
    from_folders = evaluate_folders(tmp_path / "gen", tmp_path / "ref", cfg)
    order = [1, 0, 2]  # a, b, c
    from_arrays = evaluate_images(gen[order], ref[order], cfg=cfg)
    assert from_folders.metrics == pytest.approx(from_arrays.metrics)
    assert from_folders.metrics["eval/pixcorr"] == pytest.approx(0.0, abs=1e-6)  # +1 and -1 averaged


def test_folders_report_unmatched_and_mixed_sizes(tmp_path):
    image = np.zeros((8, 8, 3), np.uint8)
    write(tmp_path / "ref", "x.png", image)
    write(tmp_path / "gen", "y.png", image)
    with pytest.raises(ValueError, match="y.png has no reference"):
        evaluate_folders(tmp_path / "gen", tmp_path / "ref", {"metrics": ["ssim"]})
    (tmp_path / "gen" / "y.png").unlink()
    write(tmp_path / "gen", "x.jpg", np.zeros((10, 10, 3), np.uint8))
    write(tmp_path / "ref", "z.png", np.zeros((12, 12, 3), np.uint8))
    write(tmp_path / "gen", "z.png", image)
    with pytest.raises(ValueError, match="eval.image_size"):
        evaluate_folders(tmp_path / "gen", tmp_path / "ref", {"metrics": ["ssim"], "resolution": 16})
    result = evaluate_folders(
        tmp_path / "gen", tmp_path / "ref", {"metrics": ["ssim"], "resolution": 16, "image_size": 8}
    )
    assert result.metrics["eval/ssim"] == pytest.approx(1.0)


@pytest.mark.parametrize("name", ["default", "synthetic", "imagenet", "things"])
def test_eval_configs_resolve_and_validate(compose_cfg, name, tmp_path):
    cfg = compose_cfg(f"eval={name}", f"paths.weights_dir={tmp_path}")
    settings = eval_config(cfg.eval)
    assert settings.allow_download is False and settings.resolution >= 11
    assert settings.backbones["alexnet"]["path"] == str(tmp_path / "torchvision" / "alexnet-owt-7be5be79.pth")
    assert settings.nway.n >= 2 and settings.nway.trials >= 1


def test_synthetic_config_keeps_weight_free_defaults(compose_cfg):
    cfg = compose_cfg("eval=synthetic")
    assert list(cfg.eval.metrics) == ["ssim", "pixcorr"] and cfg.eval.resolution == 64
    assert cfg.eval.pairwise_resolution == 64


def test_eval_options_state_only_what_differs_from_default():
    """Each option lists ``default`` first; the shared settings live once, in default.yaml."""
    default = OmegaConf.load(CONF / "default.yaml")
    for name in ("synthetic", "imagenet", "things"):
        option = OmegaConf.load(CONF / f"{name}.yaml")
        assert list(option.defaults) == ["default", "_self_"]
        assert set(option) - {"defaults"} <= set(default), name
        assert "backbones" not in option and "nway" not in option


@pytest.mark.parametrize("option", ["synthetic", "imagenet", "things"])
def test_eval_group_composes_with_the_real_config(compose_cfg, option, tmp_path):
    cfg = compose_cfg(f"eval={option}")
    settings = eval_config(cfg.eval)
    assert settings.weights_dir == str(tmp_path / "weights")
    assert settings.backbones["clip"]["path"] == str(tmp_path / "weights" / "clip-vit-large-patch14")
