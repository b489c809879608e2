"""The EEG MAE: shapes, input checks, and that each loss term trains the parameters it should."""

import pytest
import torch
import torch.nn.functional as F

from conftest import tiny_encoder as make
from regionaldiff.encoder.module import EncoderPretrainModule


def test_output_shapes():
    model = make()
    out = model(torch.randn(2, 5, 40))
    assert out["codes"].shape == (2, 10, 16)
    assert out["class_logits"].shape == (2, 3)
    assert out["region_logits"].shape == (2, 4, 4, 4)


def test_no_region_head_when_grid_is_zero():
    out = make(region_grid=0)(torch.randn(2, 5, 40))
    assert "region_logits" not in out


@pytest.mark.parametrize("shape", [(2, 6, 40), (2, 5, 44), (5, 40)])
def test_wrong_input_shape_names_expected_shape(shape):
    with pytest.raises(ValueError, match=r"n_chans=5, n_times=40"):
        make()(torch.randn(*shape))


def test_bad_construction_values():
    with pytest.raises(ValueError, match="patch_size"):
        make(n_times=42)
    with pytest.raises(ValueError, match="mask_ratio"):
        make(mask_ratio=1.0)


def test_patchify_is_time_major_per_patch():
    model = make()
    eeg = torch.arange(5 * 40, dtype=torch.float32).reshape(1, 5, 40)
    patches = model.patchify(eeg)
    assert patches.shape == (1, 10, 20)
    # first patch: samples 0..3 of every channel, time-major
    assert patches[0, 0, :5].tolist() == [0.0, 40.0, 80.0, 120.0, 160.0]
    assert patches[0, 1, :5].tolist() == [4.0, 44.0, 84.0, 124.0, 164.0]


def test_masked_loss_depends_on_reconstruction():
    torch.manual_seed(0)
    model = make()
    eeg = torch.randn(4, 5, 40)
    loss = model.masked_reconstruction_loss(eeg, generator=torch.Generator().manual_seed(0))
    assert loss.item() > 0
    loss.backward()
    assert model.decoder_pred.weight.grad.abs().sum() > 0
    assert model.patch_embed.weight.grad.abs().sum() > 0


@pytest.mark.parametrize(
    "weights, changed, unchanged",
    [
        ((1.0, 0.0, 0.0), "decoder_pred", "class_head"),
        ((0.0, 1.0, 0.0), "class_head", "region_mlp"),
        ((0.0, 0.0, 1.0), "region_mlp", "class_head"),
    ],
)
def test_each_loss_term_trains_its_parameters(weights, changed, unchanged):
    torch.manual_seed(0)
    model = make()
    module = EncoderPretrainModule(
        model, lr=1e-2, weight_decay=0.0, w_mae=weights[0], w_cls=weights[1], w_region=weights[2], max_epochs=1
    )
    batch = {
        "eeg": torch.randn(4, 5, 40),
        "label": torch.tensor([0, 1, 2, 0]),
        "region_map": torch.randint(0, 4, (4, 8, 8)),
    }
    loss = module._losses(batch)["loss"]
    loss.backward()

    def grad(name):
        return sum(p.grad.abs().sum().item() for p in getattr(model, name).parameters() if p.grad is not None)

    assert grad(changed) > 0
    assert grad(unchanged) == 0


def test_classification_learns_a_separable_problem():
    torch.manual_seed(0)
    model = make(region_grid=0)
    labels = torch.arange(30) % 3
    eeg = torch.randn(30, 5, 40) * 0.1
    eeg[:, 0, :] += labels[:, None].float()  # class is written in channel 0
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(60):
        loss = F.cross_entropy(model(eeg)["class_logits"], labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert (model(eeg)["class_logits"].argmax(-1) == labels).float().mean() > 0.9


def _background_heavy_head(model, background_logit: float):
    """Make the region head predict ``background_logit`` for background, 0 for label 1 and -10 for the rest in
    every cell, whatever the EEG."""
    last = model.region_mlp[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.fill_(-10.0)
        last.bias[0], last.bias[1] = background_logit, 0.0
    return model


def test_background_calibration_finds_the_bias_that_reveals_objects():
    from regionaldiff.encoder.calibration import fit_background_bias

    model = _background_heavy_head(make(), background_logit=2.0)
    maps = torch.zeros(6, 8, 8, dtype=torch.long)
    maps[:, :, :4] = 1  # label 1 on the left half of every map
    batches = [
        {"eeg": torch.randn(3, 5, 40), "region_map": maps[:3]},
        {"eeg": torch.randn(3, 5, 40), "region_map": maps[3:]},
    ]

    fit = fit_background_bias(model, batches, class_fused=False)

    # uncalibrated: background everywhere (IoU of label 1 = 0); from bias -2.25 on, label 1 everywhere (IoU 0.5);
    # the smallest such bias is kept
    assert fit.miou_before == 0.0 and fit.miou_after == pytest.approx(0.5) and fit.n_trials == 6
    assert fit.bias == -2.25 and model.region_background_bias.item() == -2.25
    logits = model(torch.randn(2, 5, 40))["region_logits"]
    assert (logits.argmax(1) == 1).all()
    assert logits[:, 0].sub(2.0 - 2.25).abs().max() < 1e-5
    # map_miou scores the head as it stands: the calibrated score, and the uncalibrated one once the bias is gone
    from regionaldiff.encoder.calibration import map_miou

    assert map_miou(model, batches, class_fused=False) == pytest.approx(fit.miou_after)
    model.region_background_bias.zero_()
    assert map_miou(model, batches, class_fused=False) == pytest.approx(fit.miou_before)


def test_background_calibration_never_lowers_the_validation_score():
    from regionaldiff.encoder.calibration import fit_background_bias

    model = _background_heavy_head(make(), background_logit=-1.0)  # objects everywhere already
    maps = torch.ones(4, 8, 8, dtype=torch.long)
    fit = fit_background_bias(model, [{"eeg": torch.randn(4, 5, 40), "region_map": maps}], class_fused=True)
    assert fit.miou_after >= fit.miou_before == pytest.approx(1.0)
    assert fit.bias == 0.0


def test_background_bias_is_saved_and_old_checkpoints_load_uncalibrated():
    model = make()
    model.region_background_bias.fill_(-1.5)
    state = model.state_dict()
    assert state["region_background_bias"].item() == -1.5
    again = make()
    again.load_state_dict(state)
    assert again.region_background_bias.item() == -1.5
    old = {k: v for k, v in state.items() if k != "region_background_bias"}
    again.load_state_dict(old)  # a checkpoint from before the bias existed: strict loading still works
    assert again.region_background_bias.item() == 0.0


def test_background_calibration_needs_maps_and_a_head():
    from regionaldiff.encoder.calibration import fit_background_bias

    with pytest.raises(ValueError, match="region_map"):
        fit_background_bias(make(), [{"eeg": torch.randn(2, 5, 40)}], class_fused=False)
    with pytest.raises(ValueError, match="region head"):
        fit_background_bias(make(region_grid=0), [], class_fused=False)


def test_uncalibrated_undoes_the_background_bias_of_class_fused_maps():
    from regionaldiff.evaluation.known_truth import uncalibrated
    from regionaldiff.regions import fuse_class_into_map

    torch.manual_seed(0)
    logits, class_probs = torch.randn(3, 4, 4, 4), torch.randn(3, 3).softmax(-1)
    shifted = logits.clone()
    shifted[:, 0] -= 1.25
    before = fuse_class_into_map(logits.softmax(1), class_probs).numpy()
    after = fuse_class_into_map(shifted.softmax(1), class_probs).numpy()
    assert abs(after - before).max() > 0.05
    assert abs(uncalibrated(after, -1.25) - before).max() < 1e-5
