"""The field's encoders (regionaldiff.encoder.feature / shallow / braindecode_net), the region paths, the band-power
transform, the training recipe's parts (augmentations, fixed temperature, early stopping) and the gradient
cosines between the heads' objectives. Every option's contract is checked in tests/test_contracts.py."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from regionaldiff.components import build_encoder
from regionaldiff.encoder.feature import BandPower
from regionaldiff.encoder.module import EncoderPretrainModule, gradient_cosines
from regionaldiff.errors import ConfigError

DATA = {"n_chans": 5, "n_times": 40, "sfreq": 100.0, "num_classes": 3}


def make(target: str = "ShallowEncoder", module: str = "shallow", **kw):
    net = {"_target_": f"regionaldiff.encoder.{module}.{target}", "num_tokens": 2, "embed_dim": 8, "region_grid": 4}
    net.update(kw)
    return build_encoder(net, **DATA, align_dim=kw.pop("align_dim", 6))


def batch(n: int = 6) -> dict:
    return {
        "eeg": torch.randn(n, DATA["n_chans"], DATA["n_times"]),
        "label": torch.arange(n) % DATA["num_classes"],
        "region_map": torch.randint(0, DATA["num_classes"] + 1, (n, 8, 8)),
    }


def region_grads(encoder) -> dict[str, float]:
    """The summed |gradient| of the region loss alone on each top-level part of ``encoder``."""
    b = batch()
    from regionaldiff.regions import coarse_region_target

    out = encoder(b["eeg"])
    target = coarse_region_target(b["region_map"], encoder.num_region_labels, encoder.region_grid)
    F.cross_entropy(out["region_logits"], target).backward()
    return {
        name: sum(float(p.grad.abs().sum()) for p in part.parameters() if p.grad is not None)
        for name, part in encoder.named_children()
    }


def test_shared_region_path_trains_the_backbone():
    grads = region_grads(make(region_path="shared"))
    assert grads["backbone"] > 0 and grads["region_head"] > 0 and grads["class_head"] == 0


def test_detached_region_path_leaves_the_semantic_encoder_alone():
    grads = region_grads(make(region_path="detached"))
    assert grads["region_head"] > 0
    assert grads["backbone"] == 0 and grads["projector"] == 0


def test_separate_region_path_has_a_backbone_of_its_own():
    encoder = make(region_path="separate")
    assert encoder.num_patches == 4  # two semantic tokens, then two region tokens
    grads = region_grads(encoder)
    assert grads["region_backbone"] > 0 and grads["region_projector"] > 0
    assert grads["backbone"] == 0 and grads["projector"] == 0
    # and the semantic heads do not read the region tokens
    codes = encoder.forward_features(torch.randn(2, 5, 40))
    moved = codes.clone()
    moved[:, 2:] += 5.0
    torch.testing.assert_close(encoder.classify(moved), encoder.classify(codes))
    assert not torch.allclose(encoder.predict_regions(moved), encoder.predict_regions(codes))


def trials(n: int, seed: int, by_frequency: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` noisy trials of 3 classes: class c is a burst in channel 1 whose amplitude is c - 1 (or, with
    ``by_frequency``, whose frequency is 5, 10 or 20 Hz: what band powers see)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 3
    eeg = torch.randn(n, 5, 40, generator=g) * 0.3
    t = torch.arange(20) / 100.0
    if by_frequency:
        freqs = torch.tensor([5.0, 10.0, 20.0])[labels]
        eeg[:, 1, 10:30] += torch.sin(2 * math.pi * freqs[:, None] * t)
    else:
        eeg[:, 1, 10:30] += (labels[:, None].float() - 1.0) * torch.sin(2 * math.pi * 10.0 * t)
    return eeg, labels


@pytest.mark.parametrize(
    "target, module, kw",
    [
        ("LinearEncoder", "shallow", {}),
        ("LinearEncoder", "shallow", {"input_transform": "bandpower"}),
        ("MLPEncoder", "shallow", {"channels": [0, 1, 2]}),
        ("MLPEncoder", "shallow", {"input_transform": "bandpower"}),
        ("ShallowEncoder", "shallow", {}),
        ("ATMEncoder", "shallow", {"attention_heads": 2}),
        (
            "BraindecodeEncoder",
            "braindecode_net",
            {
                "model": "ShallowFBCSPNet",
                "features": 16,
                "model_kwargs": {"filter_time_length": 5, "pool_time_length": 5, "pool_time_stride": 2},
            },
        ),
    ],
)
def test_each_field_encoder_learns_what_generalises_to_new_trials(target, module, kw):
    torch.manual_seed(0)
    by_frequency = kw.get("input_transform") == "bandpower"  # band powers cannot see the sign of a sine
    encoder = make(target, module, region_grid=0, **kw)
    eeg, labels = trials(60, seed=0, by_frequency=by_frequency)
    opt = torch.optim.Adam(encoder.parameters(), lr=3e-3)
    for _ in range(60):
        loss = F.cross_entropy(encoder(eeg)["class_logits"], labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    encoder.eval()
    held_out, held_labels = trials(30, seed=1, by_frequency=by_frequency)
    # chance is 1/3: a backbone that does not read the signal stays near it
    assert (encoder(held_out)["class_logits"].argmax(-1) == held_labels).float().mean() > 0.6


def test_band_power_is_refused_by_backbones_that_read_time():
    with pytest.raises(ConfigError, match=r"input_transform=bandpower .* ShallowEncoder convolves or pools over time"):
        make(input_transform="bandpower")


def test_linear_encoder_is_linear():
    torch.manual_seed(0)
    encoder = make("LinearEncoder").eval()
    a, b = torch.randn(2, 5, 40), torch.randn(2, 5, 40)
    out = {k: encoder(x)["class_logits"] for k, x in (("a", a), ("b", b), ("ab", a + b), ("0", torch.zeros_like(a)))}
    torch.testing.assert_close(out["ab"] - out["0"], (out["a"] - out["0"]) + (out["b"] - out["0"]))


def test_band_power_finds_the_band_of_a_sinusoid():
    t = torch.arange(100) / 100.0
    alpha = torch.sin(2 * math.pi * 10.0 * t)  # 10 Hz: the alpha band (8-13 Hz), the third
    beta = torch.sin(2 * math.pi * 20.0 * t)  # 20 Hz: beta (13-30 Hz), the fourth
    power = BandPower(100.0, 100)(torch.stack([alpha, beta])[None])
    assert power.shape == (1, 2, 5)
    assert int(power[0, 0].argmax()) == 2 and int(power[0, 1].argmax()) == 3


def test_band_power_refuses_trials_too_short_for_its_bands():
    with pytest.raises(ConfigError, match="bandpower"):
        BandPower(100.0, 8)


@pytest.mark.parametrize(
    "kw, key",
    [
        ({"region_path": "sideways"}, "encoder.net.region_path"),
        ({"projector": "deep"}, "encoder.net.projector"),
        ({"input_transform": "wavelets"}, "encoder.net.input_transform"),
        ({"num_tokens": 0}, "encoder.net.num_tokens"),
        ({"kernel_s": -0.1}, "encoder.net.kernel_s"),
    ],
)
def test_bad_values_name_the_key(kw, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        make(**kw)


def test_channels_outside_the_data_are_refused_by_name():
    with pytest.raises(ConfigError, match=r"encoder\.net\.channels=\[0, 7\].*5 channels"):
        make("MLPEncoder", channels=[0, 7])


def test_an_unknown_braindecode_model_lists_the_choices():
    with pytest.raises(ConfigError, match=r"encoder\.net\.model='Nope' is not a braindecode model; choices: .*EEGNet"):
        make("BraindecodeEncoder", "braindecode_net", model="Nope")


def test_a_braindecode_model_that_does_not_fit_the_data_says_so():
    # ShallowFBCSPNet's default pooling (75 samples) is longer than these 40-sample trials
    with pytest.raises(ConfigError, match=r"ShallowFBCSPNet could not be built for 5 channels x 40 samples"):
        make("BraindecodeEncoder", "braindecode_net", model="ShallowFBCSPNet")


def test_gradient_cosines_measure_agreement_and_conflict():
    codes = torch.randn(4, 3, requires_grad=True)
    direction = torch.randn(4, 3)
    losses = {
        "cls": (codes * direction).sum(),
        "align": (codes * 2 * direction).sum(),
        "region": -(codes * direction).sum(),
    }
    cos = gradient_cosines(codes, losses)
    assert cos["grad_cos_cls_align"].item() == pytest.approx(1.0)
    assert cos["grad_cos_cls_region"].item() == pytest.approx(-1.0)
    detached = {"cls": (codes * direction).sum(), "region": (codes.detach() * direction).sum() + codes.sum() * 0}
    assert gradient_cosines(codes, detached)["grad_cos_cls_region"].item() == pytest.approx(0.0, abs=1e-6)
    assert gradient_cosines(codes, {"cls": losses["cls"]}) == {}


def test_training_step_logs_the_heads_gradient_cosines():
    torch.manual_seed(0)
    module = EncoderPretrainModule(make(), lr=1e-3, weight_decay=0.0, w_mae=0.0, w_cls=1.0, w_region=1.0, max_epochs=1)
    losses = module.train()._losses(batch())
    assert set(k for k in losses if k.startswith("grad_cos")) == {"grad_cos_cls_region"}
    assert -1.0 <= float(losses["grad_cos_cls_region"]) <= 1.0
    detached = EncoderPretrainModule(
        make(region_path="detached"), lr=1e-3, weight_decay=0.0, w_mae=0.0, w_cls=1.0, w_region=1.0, max_epochs=1
    )
    assert float(detached.train()._losses(batch())["grad_cos_cls_region"]) == 0.0
    # validation logs no cosine (no gradients there)
    with torch.no_grad():
        assert not any(k.startswith("grad_cos") for k in module.eval()._losses(batch()))


class Zero(torch.nn.Module):
    calls = 0

    def forward(self, eeg):
        Zero.calls += 1
        return eeg * 0.0


def test_augmentations_apply_to_training_batches_only():
    torch.manual_seed(0)
    Zero.calls = 0
    module = EncoderPretrainModule(
        make(region_grid=0, dropout=0.0), lr=1e-3, weight_decay=0.0, w_mae=0.0, w_cls=1.0, w_region=0.0, max_epochs=1,
        augmentations=[Zero()],
    )  # fmt: skip
    b = batch()
    zeroed = module.train()._losses(b)["cls"]
    assert Zero.calls == 1
    plain = EncoderPretrainModule(
        make(region_grid=0, dropout=0.0), lr=1e-3, weight_decay=0.0, w_mae=0.0, w_cls=1.0, w_region=0.0, max_epochs=1
    )
    plain.load_state_dict(module.state_dict(), strict=False)
    torch.testing.assert_close(zeroed, plain.train()._losses({**b, "eeg": b["eeg"] * 0})["cls"])
    module.eval()._losses(b)
    assert Zero.calls == 1


def test_a_braindecode_augmentation_from_the_recipe_runs_on_a_batch(compose_cfg):
    from regionaldiff.components import build_augmentations, check_components
    from regionaldiff.validation import validate

    cfg = compose_cfg("encoder=shallow", "encoder/recipe=field_augmented", "logger=none")
    check_components(validate(cfg))
    augmentations = build_augmentations(cfg.encoder.augment)
    assert [type(a).__name__ for a in augmentations] == ["SmoothTimeMask", "ChannelsDropout"]
    eeg = torch.randn(8, 17, 100)
    out = eeg
    for augment in augmentations:
        out = augment(out)
    assert out.shape == eeg.shape


def test_a_fixed_temperature_is_not_trained():
    from regionaldiff.encoder.alignment import ImageEmbeddings

    table = ImageEmbeddings(["a", "b"], np.random.default_rng(0).normal(size=(2, 6)).astype(np.float32))
    fixed = EncoderPretrainModule(
        make(), 1e-3, 0.0, 0.0, 1.0, 0.0, 1, w_align=1.0, image_embeddings=table, learn_temperature=False
    )
    learned = EncoderPretrainModule(make(), 1e-3, 0.0, 0.0, 1.0, 0.0, 1, w_align=1.0, image_embeddings=table)
    assert not fixed.logit_scale.requires_grad and learned.logit_scale.requires_grad
    assert len(fixed.configure_optimizers()["optimizer"].param_groups) == 1
    assert len(learned.configure_optimizers()["optimizer"].param_groups) == 2


def test_the_recipe_is_its_own_group(compose_cfg):
    mae = compose_cfg("encoder=shallow", "encoder/recipe=mae").encoder
    field = compose_cfg("encoder=tiny", "encoder/recipe=field").encoder
    assert (mae.lr, mae.weight_decay, mae.max_epochs, mae.batch_size) == (1e-3, 0.05, 80, None)
    assert (field.max_epochs, field.batch_size, field.net._target_) == (
        50,
        64,
        "regionaldiff.encoder.mae.EEGMaskedAutoencoder",
    )
    # the default run's encoder and recipe are the MAE's as before
    default = compose_cfg().encoder
    assert (default.net._target_.rsplit(".", 1)[1], default.lr, default.max_epochs, default.weight_decay) == (
        "EEGMaskedAutoencoder",
        1e-3,
        80,
        0.05,
    )


def test_early_stopping_is_off_at_zero_and_watches_the_validation_loss():
    from regionaldiff.steps.pretrain import early_stopping

    assert early_stopping(0) == []
    (callback,) = early_stopping(3)
    assert callback.monitor == "pretrain/val_loss" and callback.patience == 3


def test_a_run_that_reuses_an_encoder_logs_its_saved_scores_not_its_training_curves(tmp_path):
    import json

    from regionaldiff.steps.pretrain import saved_metrics

    done = tmp_path / "DONE"
    done.write_text(
        json.dumps(
            {
                "pretrain/val_retrieval_top1": 0.25,
                "pretrain/val_region_miou": 0.4,
                "pretrain/parameters": 1000,
                "pretrain/train_seconds": 12.5,
                "pretrain/train_loss": 0.7,
                "pretrain/train_grad_cos_cls_region": 0.01,
                "files": {"encoder.pt": {"size": 3}},
            }
        )
    )
    assert saved_metrics(done) == {
        "pretrain/val_retrieval_top1": 0.25,
        "pretrain/val_region_miou": 0.4,
        "pretrain/parameters": 1000.0,
        "pretrain/train_seconds": 12.5,
    }
    assert saved_metrics(tmp_path / "missing") == {}
    done.write_text("{not json")
    assert saved_metrics(done) == {}


def mirrored_subjects(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``trials`` of two subjects (numbers 1 and 2) whose class signal has opposite signs on channel 1 (one source,
    two cortical foldings): pooled without knowing the subject, classes 0 and 2 look alike."""
    eeg, labels = trials(n, seed)
    subject = 1 + torch.arange(n) % 2
    eeg[subject == 2, 1] *= -1.0
    return eeg, labels, subject


@pytest.mark.parametrize("layer, learns", [("none", False), ("linear", True)])
def test_a_subject_layer_learns_what_differs_between_subjects(layer, learns):
    """A linear encoder over two subjects whose signal is mirrored: only the per-subject channel map reads both."""
    torch.manual_seed(0)
    net = {"_target_": "regionaldiff.encoder.shallow.LinearEncoder", "num_tokens": 2, "embed_dim": 8, "region_grid": 0}
    encoder = build_encoder(net, **DATA, subject_layer=layer, subject_ids=[1, 2])
    eeg, labels, subject = mirrored_subjects(60, seed=0)
    module = EncoderPretrainModule(
        encoder, lr=3e-3, weight_decay=0.0, w_mae=0.0, w_cls=1.0, w_region=0.0, max_epochs=1
    )
    opt = torch.optim.Adam(encoder.parameters(), lr=1e-2)
    for _ in range(80):  # through the pretraining objective, which reads the batch's subject
        loss = module.train()._losses({"eeg": eeg, "label": labels, "subject": subject})["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    encoder.eval()
    held_out, held_labels, held_subject = mirrored_subjects(60, seed=1)
    with torch.no_grad():
        accuracy = (encoder(held_out, held_subject)["class_logits"].argmax(-1) == held_labels).float().mean()
    # chance is 1/3; pooled without the subject the mirrored signals cancel (about chance when this was written, the
    # subject layer 0.87)
    assert (accuracy > 0.6) == learns, float(accuracy)
