"""Plumbing of the backbone metrics: small random networks SAVED to disk and loaded through the same code path as
real weights; missing weights give a skipped metric with the reason, never a number."""

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from regionaldiff.evaluation import backbones
from regionaldiff.evaluation.backbones import (
    WeightsUnavailable,
    backbone_config,
    load_lpips,
    pretrained_builder_kwargs,
    torchvision_weights,
)
from regionaldiff.evaluation.identification import lpips_matrix
from regionaldiff.evaluation.suite import eval_config, evaluate_images


def images(n=4, size=32, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def save_torchvision(path, arch, **kwargs):
    torch.manual_seed(0)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(torchvision.models.get_model(arch, weights=None, **kwargs).state_dict(), path)
    return str(path)


def test_missing_weights_skip_every_backbone_metric_with_the_path(tmp_path):
    x = images()
    cfg = {
        "metrics": [
            "nway",
            "fid",
            "is",
            "alexnet2",
            "alexnet5",
            "inception",
            "clip",
            "effnet",
            "swav",
            "pairwise_lpips",
            "retrieval",
        ],
        "weights_dir": str(tmp_path),
    }
    result = evaluate_images(x, x, cfg=cfg)
    assert result.metrics == {}
    expected = {
        "eval/nway_top1",
        "eval/nway_top1_max",
        "eval/fid",
        "eval/is",
        "eval/is_std",
        "eval/alexnet2",
        "eval/alexnet5",
        "eval/inception",
        "eval/clip",
        "eval/effnet",
        "eval/swav",
        "eval/pairwise_lpips",
        "eval/retrieval_top1",
        "eval/retrieval_top5",
        "eval/retrieval_2way",
    }
    assert set(result.skipped) == expected
    assert str(tmp_path / "torchvision" / "alexnet-owt-7be5be79.pth") in result.skipped["eval/alexnet2"]
    assert "allow_download=true" in result.skipped["eval/swav"]
    assert "inception-2015-12-05.pt" in result.skipped["eval/fid"]
    assert "embeddings" in result.skipped["eval/retrieval_top1"]


def test_unknown_metric_fails_before_work_with_allowed_names():
    with pytest.raises(ValueError, match=r"eval.metrics.*'nope'.*allowed.*alexnet2"):
        evaluate_images(images(), images(), cfg={"metrics": ["nope"]})
    with pytest.raises(ValueError, match="generated"):
        evaluate_images(images().astype(np.float32), images(), cfg={"metrics": ["ssim"]})


def test_pretrained_builder_kwargs_match_torchvision():
    assert pretrained_builder_kwargs("inception_v3", torchvision_weights("inception_v3", "IMAGENET1K_V1")) == {
        "num_classes": 1000,
        "transform_input": True,
        "aux_logits": True,
        "init_weights": False,
    }
    assert (
        pretrained_builder_kwargs("vit_h_14", torchvision_weights("vit_h_14", "IMAGENET1K_SWAG_E2E_V1"))["image_size"]
        == 518
    )


def test_nway_with_saved_classifier(tmp_path):
    path = save_torchvision(tmp_path / "cls.pth", "squeezenet1_1")
    cfg = {
        "metrics": ["nway"],
        "nway": {"n": 50, "k": [1, 5], "trials": 5},
        "device": "cpu",
        "backbones": {"classifier": {"arch": "squeezenet1_1", "weights": "IMAGENET1K_V1", "path": path}},
    }
    x = images(3)
    result = evaluate_images(x, x, cfg=cfg)  # the classifier labels the truth; identical images rank it first
    assert result.metrics == {
        "eval/nway_top1": 1.0,
        "eval/nway_top1_max": 1.0,
        "eval/nway_top5": 1.0,
        "eval/nway_top5_max": 1.0,
    }
    assert result.skipped == {}


def test_wrong_weights_file_is_skipped_not_used(tmp_path):
    path = save_torchvision(tmp_path / "cls.pth", "squeezenet1_0")
    cfg = {
        "metrics": ["nway"],
        "backbones": {"classifier": {"arch": "squeezenet1_1", "weights": "IMAGENET1K_V1", "path": path}},
    }
    result = evaluate_images(images(2), images(2), cfg=cfg)
    assert "does not fit torchvision squeezenet1_1" in result.skipped["eval/nway_top1"]


def test_mindeye_metrics_with_saved_backbones(tmp_path):
    squeeze = save_torchvision(tmp_path / "sq.pth", "squeezenet1_1")
    # SwAV checkpoint layout: trunk under "module.", a projection head, no fc
    torch.manual_seed(0)
    trunk = {
        f"module.{k}": v for k, v in torchvision.models.resnet18().state_dict().items() if not k.startswith("fc.")
    }
    trunk["module.projection_head.0.weight"] = torch.zeros(4, 512)
    torch.save(trunk, tmp_path / "swav.pth.tar")
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(0)
    clip = CLIPVisionModelWithProjection(
        CLIPVisionConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=32,
            patch_size=8,
            projection_dim=16,
        )
    )
    clip.save_pretrained(tmp_path / "clip")
    small = {"arch": "squeezenet1_1", "weights": "IMAGENET1K_V1", "path": squeeze, "resize": 64}
    cfg = {
        "metrics": ["alexnet2", "alexnet5", "inception", "clip", "effnet", "swav"],
        "device": "cpu",
        "backbones": {
            "alexnet": {**small, "nodes": {"alexnet2": "features.3", "alexnet5": "features.12"}},
            "inception": {**small, "nodes": {"inception": "features.12"}},
            "effnet": {**small, "nodes": {"effnet": "features.12"}},
            "swav": {"arch": "resnet18", "path": str(tmp_path / "swav.pth.tar"), "resize": 64},
            "clip": {"path": str(tmp_path / "clip")},
        },
    }
    x = images(4)
    result = evaluate_images(x, x, cfg=cfg)
    assert result.skipped == {}
    for name in ("alexnet2", "alexnet5", "inception", "clip"):
        assert result.metrics[f"eval/{name}"] == 1.0
    for name in ("effnet", "swav"):
        assert result.metrics[f"eval/{name}"] == pytest.approx(0.0, abs=1e-6)
    # a reconstruction set that is the reference in another order: identification drops to chance or below
    shuffled = evaluate_images(x[[1, 2, 3, 0]], x, cfg={**cfg, "metrics": ["alexnet5", "clip"]})
    assert shuffled.metrics["eval/alexnet5"] < 0.75 and shuffled.metrics["eval/clip"] < 0.75


def test_lpips_from_saved_alexnet_matches_torchmetrics_pairs(tmp_path):
    path = save_torchvision(tmp_path / "alexnet.pth", "alexnet")
    lpips = load_lpips(backbone_config(eval_config({"backbones": {"lpips": {"path": path}}}), "lpips"))
    saved = torch.load(path, weights_only=True)
    assert torch.equal(
        getattr(lpips.net.slice5, "10").weight, saved["features.10.weight"]
    )  # trunk really came from the file
    g, r = images(2, 64, seed=0), images(3, 64, seed=1)
    matrix = lpips_matrix(lpips, g, r, torch.device("cpu"))
    to = lambda a: torch.from_numpy(a).permute(0, 3, 1, 2).float() / 127.5 - 1  # noqa: E731
    direct = np.array([[lpips(to(g[i : i + 1]), to(r[j : j + 1])).item() for j in range(3)] for i in range(2)])
    assert matrix == pytest.approx(direct, rel=1e-4, abs=1e-6)
    cfg = {
        "metrics": ["pairwise_lpips"],
        "pairwise_resolution": 64,
        "device": "cpu",
        "backbones": {"lpips": {"path": path}},
    }
    assert evaluate_images(g, g, cfg=cfg).metrics["eval/pairwise_lpips"] == 1.0


class TinyInception(nn.Module):
    """Stands in for clean-fid's TorchScript Inception: same file name, ``layers`` attribute, 2048-d output."""

    def __init__(self):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(3, 4, 13, stride=13), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2048)
        )

    def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        return self.layers(x)


def test_fid_loads_cleanfid_torchscript_from_weights_dir(tmp_path, monkeypatch):
    torch.manual_seed(0)
    (tmp_path / "clean-fid").mkdir()
    torch.jit.script(TinyInception()).save(str(tmp_path / "clean-fid" / "inception-2015-12-05.pt"))
    seen = {}

    def fake_distance(gen, ref):  # the 2048-d sqrtm takes ~25 s on one core; its arithmetic is tested separately
        seen["gen"], seen["ref"] = gen, ref
        return 0.5

    from regionaldiff.evaluation import distribution

    monkeypatch.setattr(distribution, "frechet_distance_from_features", fake_distance)
    x = images(3)
    result = evaluate_images(
        np.stack([x, x], 1), x, cfg={"metrics": ["fid"], "weights_dir": str(tmp_path), "device": "cpu"}
    )
    assert result.metrics == {"eval/fid": 0.5}
    assert seen["gen"].shape == (6, 2048) and seen["ref"].shape == (3, 2048)
    assert np.allclose(
        seen["gen"][::2], seen["ref"], atol=1e-6
    )  # image-major: (i, s) and not np.allclose(seen["ref"][0], seen["ref"][1])


def test_is_without_torch_fidelity_or_weights_is_skipped(tmp_path):
    with pytest.raises(WeightsUnavailable, match="torch-fidelity|IS Inception weights not found"):
        backbones.load_is_inception(backbone_config(eval_config({"weights_dir": str(tmp_path)}), "is_inception"))


def test_inception_score_runs_through_torch_fidelity_inception_saved_to_disk(tmp_path, monkeypatch):
    """IS end to end: torch-fidelity's Inception (random weights) saved where the real weights go, loaded through
    ``load_is_inception`` and scored by the suite; the number equals torchmetrics' IS of that network's logits."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    from regionaldiff.evaluation.distribution import inception_score_from_logits

    empty = tmp_path / "empty.pth"
    torch.save({}, empty)
    torch.manual_seed(0)
    with monkeypatch.context() as patch:  # build the architecture once without weights, to get a state dict to save
        patch.setattr(FeatureExtractorInceptionV3, "load_state_dict", lambda self, state_dict: None)
        random_net = FeatureExtractorInceptionV3(
            "inception-v3-compat", ["logits_unbiased"], feature_extractor_weights_path=str(empty)
        )
    path = tmp_path / "torch-fidelity" / "weights-inception-2015-12-05-6726825d.pth"
    path.parent.mkdir()
    torch.save(random_net.state_dict(), path)

    loaded = backbones.load_is_inception(backbone_config(eval_config({"weights_dir": str(tmp_path)}), "is_inception"))
    name, saved = "Mixed_7c.branch_pool.conv.weight", torch.load(path, weights_only=True)
    assert torch.equal(dict(loaded.named_parameters())[name], saved[name])  # the weights really came from the file

    x = np.random.default_rng(0).integers(0, 256, (6, 2, 32, 32, 3), dtype=np.uint8)  # 6 trials x 2 samples
    result = evaluate_images(
        x, x[:, 0], cfg={"metrics": ["is"], "is_splits": 2, "weights_dir": str(tmp_path), "device": "cpu"}
    )
    assert result.skipped == {} and set(result.metrics) == {"eval/is", "eval/is_std"}
    with torch.no_grad():
        logits = loaded(torch.from_numpy(x.reshape(-1, 32, 32, 3)).permute(0, 3, 1, 2).contiguous())
    assert logits.shape == (12, 1008)
    expected = inception_score_from_logits(logits.double(), splits=2)
    assert result.metrics["eval/is"] == pytest.approx(expected[0], rel=1e-5)
    assert 1.0 <= result.metrics["eval/is"] <= 1008
