"""save_pretrained and from_pretrained on one class: a model written by one is read back by the other, with the
same weights, card and images; the file names live in one place (regionaldiff.reconstruction)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from regionaldiff.components import build_encoder
from regionaldiff.config import plain
from regionaldiff.reconstruction import (
    ENCODER_WEIGHTS,
    LDM_WEIGHTS,
    PIPELINE_FILE,
    DataSpec,
    RegionalDiffPipeline,
    build_ldm_and_codec,
    ldm_config_from_dict,
    model_card,
    sampling_from_dict,
)


@pytest.fixture
def tiny_pipeline(compose_cfg):
    cfg = compose_cfg("ldm=regional", "ldm.sampling.num_steps=2")
    data = DataSpec(
        n_chans=5,
        n_times=40,
        sfreq=100.0,
        num_classes=3,
        image_size=32,
        class_names=["a", "b", "c"],
        num_region_labels=4,
    )
    net = plain(cfg.encoder.net) | {
        "embed_dim": 16,
        "num_heads": 2,
        "decoder_embed_dim": 8,
        "decoder_num_heads": 2,
        "region_grid": 4,
    }
    torch.manual_seed(0)
    encoder = build_encoder(net, n_chans=5, n_times=40, sfreq=100.0, num_classes=3)
    encoder.region_background_bias.fill_(0.7)  # a calibrated encoder: the bias must travel with the weights
    ldm_values = plain(cfg.ldm)
    ldm, codec = build_ldm_and_codec(ldm_config_from_dict(ldm_values), encoder, 32)
    card = model_card(data=data, encoder_net=net, region_grid=4, w_cls=1.0, w_region=1.0, ldm=ldm_values)
    return RegionalDiffPipeline(encoder, ldm, codec, data, sampling_from_dict(ldm_values["sampling"]), card=card)


def test_save_pretrained_then_from_pretrained_gives_the_same_model(tiny_pipeline, tmp_path):
    folder = tiny_pipeline.save_pretrained(tmp_path / "model")
    assert sorted(p.name for p in folder.iterdir()) == sorted([ENCODER_WEIGHTS, LDM_WEIGHTS, PIPELINE_FILE])
    loaded = RegionalDiffPipeline.from_pretrained(folder)
    assert loaded.card == json.loads((folder / PIPELINE_FILE).read_text()) == tiny_pipeline.card
    assert float(loaded.encoder.region_background_bias) == pytest.approx(0.7)
    for a, b in ((tiny_pipeline.encoder, loaded.encoder), (tiny_pipeline.ldm, loaded.ldm)):
        for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
            torch.testing.assert_close(x, y, msg=name)
    eeg = torch.randn(2, 5, 40)
    first = tiny_pipeline(eeg, generator=torch.Generator().manual_seed(3))
    again = loaded(eeg, generator=torch.Generator().manual_seed(3))
    np.testing.assert_array_equal(first.images, again.images)
    # and a loaded model saves again to the same files
    resaved = loaded.save_pretrained(tmp_path / "again")
    assert (resaved / PIPELINE_FILE).read_text() == (folder / PIPELINE_FILE).read_text()


def test_save_pretrained_without_a_card_says_what_it_needs(tiny_pipeline, tmp_path):
    tiny_pipeline.card = None
    with pytest.raises(ValueError, match="model card"):
        tiny_pipeline.save_pretrained(tmp_path / "model")


def test_keys_added_since_a_model_was_saved_get_the_value_it_used():
    from regionaldiff.config import LDM_KEYS_ADDED, with_added_ldm_keys

    saved = {"name": "regional", "sampling": {"num_steps": 10}}
    filled = with_added_ldm_keys(saved)
    assert filled["sampling"] == {"num_steps": 10, "map_temperature": 1.0, "controlnet_scale": 1.0}
    assert saved == {"name": "regional", "sampling": {"num_steps": 10}}  # the card itself is left as saved
    # a saved sampling node alone; what it states wins
    assert with_added_ldm_keys({"map_temperature": 0.25}, under="sampling") == {
        "map_temperature": 0.25,
        "controlnet_scale": LDM_KEYS_ADDED["sampling.controlnet_scale"],
    }
    assert with_added_ldm_keys({"name": "x"}) == {"name": "x"}  # a missing parent stays missing: the schema names it


def test_a_model_saved_before_a_key_was_renamed_loads_under_the_new_name(compose_cfg):
    from regionaldiff.config import plain
    from regionaldiff.reconstruction import ldm_config_from_dict

    current = plain(compose_cfg().ldm)
    saved = {("scheduler" if key == "noise_schedule" else key): value for key, value in current.items()}
    assert ldm_config_from_dict(saved) == ldm_config_from_dict(current)


@pytest.mark.parametrize("layer", ["token", "linear"])
def test_a_model_with_a_subject_layer_saves_loads_and_reads_the_subject(compose_cfg, tmp_path, layer):
    """The card records the subject layer and the subject numbers; from_pretrained rebuilds them, and the loaded model
    gives the same images for the same subject, other ones for another subject."""
    cfg = compose_cfg("ldm=regional", "ldm.sampling.num_steps=2")
    data = DataSpec(n_chans=5, n_times=40, sfreq=100.0, num_classes=3, image_size=32, num_region_labels=4)
    net = {
        "_target_": "regionaldiff.encoder.shallow.LinearEncoder",
        "num_tokens": 2,
        "embed_dim": 16,
        "region_grid": 4,
    }
    torch.manual_seed(0)
    encoder = build_encoder(net, n_chans=5, n_times=40, sfreq=100.0, num_classes=3, subject_layer=layer,
                            subject_ids=[3, 7])  # fmt: skip
    encoder.train()(torch.randn(2, 5, 40), torch.tensor([3, 7]))  # both subjects trained on
    with torch.no_grad():
        table = encoder.subject_token if layer == "token" else encoder.subject_channels
        table.add_(torch.randn(table.shape) * 2.0)
    ldm_values = plain(cfg.ldm)
    ldm, codec = build_ldm_and_codec(ldm_config_from_dict(ldm_values), encoder, 32)
    card = model_card(data=data, encoder_net=net, region_grid=4, w_cls=1.0, w_region=1.0, ldm=ldm_values,
                      subject_layer=encoder.subject_layer, subject_ids=encoder.subject_ids)  # fmt: skip
    pipe = RegionalDiffPipeline(encoder, ldm, codec, data, sampling_from_dict(ldm_values["sampling"]), card=card)
    folder = pipe.save_pretrained(tmp_path / "model")
    saved = json.loads((folder / PIPELINE_FILE).read_text())["encoder"]
    assert saved["subject_layer"] == layer and saved["subject_ids"] == [3, 7]
    loaded = RegionalDiffPipeline.from_pretrained(folder)
    assert loaded.subject_ids == (3, 7) and loaded.encoder.subject_trained.tolist() == [True, True]
    eeg = torch.randn(1, 5, 40).expand(2, -1, -1)
    first = pipe(eeg, subject=7, generator=torch.Generator().manual_seed(3))
    again = loaded(eeg, subject=torch.tensor([7, 7]), generator=torch.Generator().manual_seed(3))
    np.testing.assert_array_equal(first.images, again.images)
    np.testing.assert_allclose(first.class_logits, again.class_logits, rtol=1e-5, atol=1e-6)
    other = loaded(eeg, subject=[3, 7], generator=torch.Generator().manual_seed(3))
    assert not np.allclose(other.class_logits[0], other.class_logits[1])
    np.testing.assert_allclose(other.class_logits[1], first.class_logits[1], rtol=1e-5, atol=1e-6)
    from regionaldiff.errors import BadInputError

    with pytest.raises(BadInputError, match="3 subject numbers for 2 EEG trials"):
        loaded(eeg, subject=[3, 7, 7])


def test_a_card_without_subjects_loads_as_before(tiny_pipeline, tmp_path):
    assert "subject_layer" not in tiny_pipeline.card["encoder"]
    loaded = RegionalDiffPipeline.from_pretrained(tiny_pipeline.save_pretrained(tmp_path / "model"))
    assert loaded.encoder.subject_layer == "none" and loaded.subject_ids == ()
    eeg = torch.randn(2, 5, 40)
    a = loaded(eeg, subject=4, generator=torch.Generator().manual_seed(1))  # ignored without a subject layer
    b = loaded(eeg, generator=torch.Generator().manual_seed(1))
    np.testing.assert_array_equal(a.images, b.images)
