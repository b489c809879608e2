"""Contract tests: every option of conf/encoder, conf/ldm/conditioner, conf/regionmap and conf/dataset is built
from its YAML (small sizes where an option is large) and checked against the contract the pipeline relies on:
outputs, shapes, value ranges and gradients. The options are read from the folders, so a new YAML is tested by
being added (a dataset also needs its tiny recipe in :data:`TINY_DATASETS`: the test says so if it is missing).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from regionaldiff.config import config_dir
from regionaldiff.data.base import EEGDataModule, EEGSplit
from regionaldiff.encoder.base import EEGEncoder, check_encoder
from regionaldiff.errors import ConfigError

CONF = config_dir()


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml") if p.stem != "schema")


# -- encoders ---------------------------------------------------------------------------------------------------------
#: the data an encoder is built for in these tests
DATA = {"n_chans": 5, "n_times": 40, "sfreq": 100.0, "num_classes": 3}
#: sizes that make a GPU-sized option CPU-sized; only keys the option has are changed, and only when larger
SMALL = {
    "embed_dim": 32,
    "depth": 1,
    "num_heads": 2,
    "decoder_embed_dim": 16,
    "decoder_depth": 1,
    "decoder_num_heads": 2,
    "region_grid": 4,
}


@pytest.mark.parametrize("option", options("encoder"))
@pytest.mark.parametrize("align_dim", [0, 6])
def test_every_encoder_option_keeps_the_encoder_contract(compose_cfg, option, align_dim):
    from regionaldiff.components import build_encoder

    net = OmegaConf.to_container(compose_cfg(f"encoder={option}").encoder.net, resolve=True)
    for key, value in SMALL.items():
        if key in net and net[key] > value:
            net[key] = value
    torch.manual_seed(0)
    encoder = build_encoder(net, **DATA, align_dim=align_dim)
    assert isinstance(encoder, EEGEncoder)
    eeg = torch.randn(4, DATA["n_chans"], DATA["n_times"])
    out = encoder(eeg)
    length, dim, grid = encoder.num_patches, encoder.embed_dim, encoder.region_grid
    assert out["codes"].shape == (4, length, dim)
    assert out["class_logits"].shape == (4, DATA["num_classes"])
    assert grid > 0 and out["region_logits"].shape == (4, DATA["num_classes"] + 1, grid, grid)
    assert ("embedding" in out) == (align_dim > 0)
    if align_dim:
        assert out["embedding"].shape == (4, align_dim)
    loss = encoder.masked_reconstruction_loss(eeg, generator=torch.Generator().manual_seed(0))
    assert loss.ndim == 0 and torch.isfinite(loss)
    # every parameter learns from the objectives the pipeline trains (masked recovery and every head)
    total = loss + sum(value.float().pow(2).mean() for value in out.values())
    total.backward()
    frozen = [name for name, p in encoder.named_parameters() if p.requires_grad and p.grad is None]
    assert frozen == [], f"{option}: parameters no objective reaches: {frozen[:5]}"
    # the calibrated background bias moves the background logit, and only it
    with torch.no_grad():
        codes = out["codes"].detach()
        before = encoder.predict_regions(codes)
        encoder.region_background_bias.fill_(1.5)
        after = encoder.predict_regions(codes)
    torch.testing.assert_close(after[:, 0] - before[:, 0], torch.full_like(before[:, 0], 1.5))
    torch.testing.assert_close(after[:, 1:], before[:, 1:])
    # bad EEG is refused with the expected shape
    with pytest.raises(ValueError, match=r"n_chans=5, n_times=40"):
        encoder(torch.randn(2, DATA["n_chans"] + 1, DATA["n_times"]))


class MeanPoolEncoder(EEGEncoder):
    """A newcomer's encoder: per-window linear codes, linear heads; only what EEGEncoder asks for
    (``tests/test_newcomers.py`` adds this class, as a module of its own, to a copy of the project)."""

    def __init__(self, n_chans, n_times, sfreq, num_classes, num_region_labels=0, align_dim=0, window=10, grid=2):
        super().__init__(n_chans, n_times, sfreq, num_classes, num_region_labels, align_dim)
        self.num_patches, self.embed_dim, self.region_grid, self.window = n_times // window, 8, grid, window
        self.proj = torch.nn.Linear(n_chans * window, 8)
        self.classes = torch.nn.Linear(8, num_classes)
        self.regions = torch.nn.Linear(8, self.num_region_labels * grid * grid)
        self.align = torch.nn.Linear(8, align_dim) if align_dim else None  # every parameter must learn
        self.recover = torch.nn.Linear(8, n_chans * window)

    def _windows(self, eeg):
        self.check_input(eeg)
        b = eeg.shape[0]
        return eeg[..., : self.num_patches * self.window].reshape(b, self.n_chans, self.num_patches, self.window)

    def forward_features(self, eeg):
        return self.proj(self._windows(eeg).permute(0, 2, 1, 3).flatten(2))

    def classify(self, codes):
        return self.classes(codes.mean(1))

    def predict_regions(self, codes):
        g = self.region_grid
        logits = self.regions(codes.mean(1)).reshape(-1, self.num_region_labels, g, g)
        return self.add_background_bias(logits)

    def embed(self, codes):
        return self.align(codes.mean(1))

    def masked_reconstruction_loss(self, eeg, generator=None):
        windows = self._windows(eeg).permute(0, 2, 1, 3).flatten(2)
        return (self.recover(self.proj(windows * 0)) - windows).pow(2).mean()


def test_a_new_encoder_is_one_subclass_built_from_its_target():
    from regionaldiff.components import build_encoder

    encoder = build_encoder({"_target_": f"{__name__}.MeanPoolEncoder", "window": 8}, **DATA, align_dim=6)
    out = encoder(torch.randn(3, DATA["n_chans"], DATA["n_times"]))
    assert out["codes"].shape == (3, 5, 8) and out["region_logits"].shape == (3, 4, 2, 2)
    assert out["embedding"].shape == (3, 6)
    assert encoder.region_labels_are_classes


def test_a_target_that_is_not_an_encoder_is_refused_by_name():
    with pytest.raises(ConfigError, match=r"encoder\.net\._target_ built a Linear, not an EEG encoder"):
        check_encoder(torch.nn.Linear(2, 2))

    class NoSizes(EEGEncoder):
        pass

    with pytest.raises(ConfigError, match="does not set"):
        check_encoder(NoSizes(**DATA))


# -- conditioners -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("option", options("ldm/conditioner"))
def test_every_conditioner_option_maps_codes_to_a_context_that_learns(compose_cfg, option):
    node = compose_cfg(f"ldm/conditioner={option}").ldm.conditioner
    torch.manual_seed(0)
    conditioner = instantiate(node, code_len=10, code_dim=16, num_classes=3, cross_attention_dim=24)
    codes = torch.randn(4, 10, 16, requires_grad=True)
    logits = torch.randn(4, 3, requires_grad=True)
    context = conditioner(codes, logits)
    assert context.shape == (4, int(conditioner.n_tokens), 24)
    context.pow(2).mean().backward()
    assert codes.grad is not None and codes.grad.abs().sum() > 0
    assert all(p.grad is not None for p in conditioner.parameters() if p.requires_grad)
    # each trial's context reads its own codes only
    with torch.no_grad():
        moved = codes.detach().clone()
        moved[1] += 1.0
        again = conditioner(moved, logits.detach())
    torch.testing.assert_close(again[0], context.detach()[0])
    assert not torch.allclose(again[1], context.detach()[1])


# -- region-map generators --------------------------------------------------------------------------------------------
def _tiny_synthetic(tmp_path: Path):
    from regionaldiff.data.synthetic import SyntheticDataModule

    return SyntheticDataModule(n_classes=3, n_train=8, n_val=4, n_test=4, image_size=32, cache_dir=str(tmp_path))


#: overrides that make an option CPU-test-sized (the SAM option reads the tiny checkpoint)
REGIONMAP_OVERRIDES = {
    "sam": lambda ckpt: [
        f"regionmap.checkpoint={ckpt}",
        "regionmap.model_type=vit_tiny",
        "regionmap.points_per_side=2",
        "regionmap.pred_iou_thresh=0.0",
        "regionmap.stability_score_thresh=0.0",
        "regionmap.device=cpu",
    ],
}


@pytest.mark.parametrize("option", options("regionmap"))
def test_every_regionmap_option_gives_a_label_map_per_stimulus(compose_cfg, tmp_path, tiny_sam_checkpoint, option):
    from regionaldiff.maps.base import RegionMapGenerator

    overrides = REGIONMAP_OVERRIDES.get(option, lambda _: [])(tiny_sam_checkpoint)
    generator = instantiate(compose_cfg(f"regionmap={option}", *overrides).regionmap)
    assert isinstance(generator, RegionMapGenerator)
    dm = _tiny_synthetic(tmp_path / "cache")
    maps = generator.generate(dm)
    if option == "none":
        assert maps is None
        return
    assert maps is not None
    for split in ("train", "val", "test"):
        data = dm.get_split(split)
        for image_id in data.unique_image_ids():
            label_map = np.asarray(maps[image_id])
            assert label_map.shape == (32, 32) and label_map.dtype == np.int64
            assert label_map.min() >= 0 and label_map.max() <= dm.num_classes
    if option == "oracle":
        truth = dm.ground_truth_region_maps()
        assert truth is not None and len(truth) == 16
        for image_id in dm.get_split("test").unique_image_ids():
            np.testing.assert_array_equal(maps[image_id], truth[image_id])


# -- datasets ---------------------------------------------------------------------------------------------------------
def _things_root(tmp_path: Path) -> list[str]:
    from official_formats import write_things_eeg2

    fixture = write_things_eeg2(tmp_path / "things")
    return [f"dataset.root={fixture.root}", "dataset.subjects=[1,2]", "dataset.val_fraction=0.25"]


def _eeg_imagenet_root(tmp_path: Path) -> list[str]:
    from official_formats import write_eeg_imagenet

    return [f"dataset.root={write_eeg_imagenet(tmp_path / 'eeg_imagenet').root}"]


#: each dataset option at test size: a new conf/dataset YAML needs its entry here (files in the official format
#: written by tests/official_formats.py, or a small generated world)
TINY_DATASETS = {
    "synthetic": lambda tmp: ["dataset.n_train=12", "dataset.n_val=4", "dataset.n_test=4"],
    "synthetic_things": lambda tmp: [
        "dataset.n_concepts=10",
        "dataset.n_val_concepts=3",
        "dataset.n_test_concepts=4",
        "dataset.images_per_concept=1",
        "dataset.test_repetitions=3",
    ],
    "synthetic_imagenet": lambda tmp: [
        "dataset.n_concepts=4",
        "dataset.images_per_concept=3",
        "dataset.val_images_per_concept=1",
        "dataset.test_images_per_concept=1",
    ],
    "things_eeg2": _things_root,
    "eeg_imagenet": _eeg_imagenet_root,
}


def test_every_dataset_option_has_a_tiny_recipe():
    assert sorted(TINY_DATASETS) == options("dataset"), "add the new dataset's tiny recipe to TINY_DATASETS"


@pytest.mark.parametrize("option", options("dataset"))
def test_every_dataset_option_keeps_the_data_contract(compose_cfg, tmp_path, option):
    recipe = TINY_DATASETS.get(option)
    assert recipe is not None, f"no tiny recipe for dataset={option} in TINY_DATASETS"
    dm = instantiate(compose_cfg(f"dataset={option}", *recipe(tmp_path)).dataset)
    assert isinstance(dm, EEGDataModule)
    sizes = dm.describe()
    assert sizes["n_chans"] == len(dm.ch_names) >= 1 and sizes["n_times"] >= 1 and sizes["sfreq"] > 0
    assert sizes["num_classes"] == len(dm.class_names) >= 2
    assert dm.num_region_labels == len(dm.region_label_names)
    colours = dm.region_label_colours
    assert colours is None or colours.shape == (dm.num_region_labels, 3)
    for split in ("train", "val", "test"):
        data = dm.get_split(split)
        assert isinstance(data, EEGSplit) and len(data.eeg) > 0
        assert tuple(data.eeg.shape[1:]) == (dm.n_chans, dm.n_times)
        assert np.isfinite(np.asarray(data.eeg[0])).all()
        assert data.labels.dtype == np.int64 and 0 <= data.labels.min() and data.labels.max() < dm.num_classes
        assert len(data.image_ids) == len(data.eeg) == len(data.subjects)
        # the subject numbers the dataset declares (the rows of an encoder's subject layer) hold every trial's
        assert set(np.unique(data.subjects).tolist()) <= set(dm.subject_ids), (split, dm.subject_ids)
        image = np.asarray(data.images[data.image_ids[0]])
        assert image.shape == (dm.image_size, dm.image_size, 3) and image.dtype == np.uint8
    batch = next(iter(dm.loader("train", shuffle=False, batch_size=2)))
    assert batch["eeg"].shape == (2, dm.n_chans, dm.n_times) and batch["eeg"].dtype == torch.float32
    assert batch["image"].shape == (2, 3, dm.image_size, dm.image_size)
    assert batch["image"].min() >= -1 and batch["image"].max() <= 1
    assert batch["subject"].dtype == torch.int64 and dm.subject_ids == sorted(dm.subject_ids)


# -- the subject conditioning (encoder.subject_layer), for every encoder ------------------------------------------------
#: the subject numbers of the data in these tests (not 0-based, not contiguous: the encoder maps numbers to its rows)
SUBJECTS = [1, 2, 5]


def small_net(compose_cfg, option: str) -> dict:
    net = OmegaConf.to_container(compose_cfg(f"encoder={option}").encoder.net, resolve=True)
    for key, value in SMALL.items():
        if key in net and net[key] > value:
            net[key] = value
    return net


@pytest.mark.parametrize("option", options("encoder"))
@pytest.mark.parametrize("layer", ["token", "linear"])
def test_every_encoder_option_takes_a_subject_layer(compose_cfg, option, layer):
    from regionaldiff.components import build_encoder

    torch.manual_seed(0)
    encoder = build_encoder(small_net(compose_cfg, option), **DATA, align_dim=6, subject_layer=layer,
                            subject_ids=SUBJECTS)  # fmt: skip
    assert encoder.subject_layer == layer and encoder.subject_ids == tuple(SUBJECTS)
    eeg = torch.randn(4, DATA["n_chans"], DATA["n_times"])
    out = encoder(eeg, torch.tensor([1, 2, 5, 2]))
    assert out["codes"].shape == (4, encoder.num_patches, encoder.embed_dim)
    assert out["class_logits"].shape == (4, DATA["num_classes"]) and out["embedding"].shape == (4, 6)
    # every parameter, the subject layer's included, learns; training records the subjects it saw
    loss = encoder.masked_reconstruction_loss(eeg, generator=torch.Generator().manual_seed(0))
    (loss + sum(value.float().pow(2).mean() for value in out.values())).backward()
    frozen = [name for name, p in encoder.named_parameters() if p.requires_grad and p.grad is None]
    assert frozen == [], f"{option}: parameters no objective reaches: {frozen[:5]}"
    assert encoder.subject_trained.tolist() == [True, True, True]
    # once the subject layer has moved from its start (zero tokens, identity maps), the same EEG of another subject
    # gives other codes and logits; the same subject the same ones
    with torch.no_grad():
        table = encoder.subject_token if layer == "token" else encoder.subject_channels
        table.add_(torch.randn(table.shape, generator=torch.Generator().manual_seed(1)) * 0.5)
    encoder.eval()
    same_eeg = eeg[:1].expand(3, -1, -1)
    with torch.no_grad():
        out = encoder(same_eeg, torch.tensor([1, 2, 1]))
    for key in ("codes", "class_logits", "embedding"):
        assert not torch.allclose(out[key][0], out[key][1]), (option, key)
        torch.testing.assert_close(out[key][0], out[key][2])


@pytest.mark.parametrize("option", ["tiny", "shallow"])
def test_without_a_subject_layer_the_subject_changes_nothing(compose_cfg, option):
    from regionaldiff.components import build_encoder

    torch.manual_seed(0)
    encoder = build_encoder(small_net(compose_cfg, option), **DATA, subject_layer="none", subject_ids=SUBJECTS).eval()
    assert encoder.subject_ids == () and not any("subject" in name for name in encoder.state_dict())
    eeg = torch.randn(1, DATA["n_chans"], DATA["n_times"]).expand(3, -1, -1)
    with torch.no_grad():
        out, plain_out = encoder(eeg, torch.tensor([1, 2, 5])), encoder(eeg)
    for key in ("codes", "class_logits"):
        torch.testing.assert_close(out[key][0], out[key][1])
        torch.testing.assert_close(out[key], plain_out[key])


@pytest.mark.parametrize("layer", ["token", "linear"])
def test_a_subject_the_encoder_was_not_trained_on_gets_the_mean_subject_and_is_logged_once(layer, caplog):
    """Leave-one-subject-out: subject 5 is in the data (its test split) but never trained on; it, an unknown number
    and no subject at all get the mean of the trained subjects' tokens / channel maps, with one warning."""
    from regionaldiff.components import build_encoder

    torch.manual_seed(0)
    net = {"_target_": "regionaldiff.encoder.shallow.LinearEncoder", "num_tokens": 2, "embed_dim": 8, "region_grid": 4}
    encoder = build_encoder(net, **DATA, subject_layer=layer, subject_ids=SUBJECTS)
    encoder.train()
    encoder(torch.randn(4, DATA["n_chans"], DATA["n_times"]), torch.tensor([1, 2, 1, 2]))
    assert encoder.subject_trained.tolist() == [True, True, False]
    table = encoder.subject_token if layer == "token" else encoder.subject_channels
    with torch.no_grad():
        table.copy_(torch.randn(table.shape, generator=torch.Generator().manual_seed(2)))
    encoder.eval()
    eeg = torch.randn(1, DATA["n_chans"], DATA["n_times"]).expand(3, -1, -1)
    with torch.no_grad(), caplog.at_level("WARNING", logger="regionaldiff.encoder.base"):
        unseen = encoder.encode(eeg, torch.tensor([5, 9, 5]))
        missing = encoder.encode(eeg)
        mean = table[:2].mean(0)
        if layer == "token":
            expected = encoder.forward_features(eeg) + mean
        else:
            expected = encoder.forward_features(torch.einsum("ij,bjt->bit", mean, eeg))
    torch.testing.assert_close(unseen, expected)
    torch.testing.assert_close(missing, expected)
    assert torch.isfinite(unseen).all()
    warnings = [r for r in caplog.records if "not trained on" in r.getMessage()]
    assert len(warnings) == 1 and "[5, 9]" in warnings[0].getMessage() and "[1, 2]" in warnings[0].getMessage()


def test_a_newcomers_encoder_gets_the_subject_layer_without_knowing_of_it():
    """The contract's subject argument is the base's: an encoder that implements forward_features(eeg) alone (written
    before subjects existed) is conditioned on the subject all the same."""
    from regionaldiff.components import build_encoder

    for layer in ("token", "linear"):
        torch.manual_seed(0)
        node = {"_target_": f"{__name__}.MeanPoolEncoder", "window": 8}
        encoder = build_encoder(node, **DATA, subject_layer=layer, subject_ids=SUBJECTS)
        with torch.no_grad():
            table = encoder.subject_token if layer == "token" else encoder.subject_channels
            table.add_(torch.randn(table.shape) * 0.5)
        eeg = torch.randn(1, DATA["n_chans"], DATA["n_times"]).expand(2, -1, -1)
        out = encoder.eval()(eeg, torch.tensor([1, 2]))
        assert out["codes"].shape == (2, 5, 8) and not torch.allclose(out["codes"][0], out["codes"][1])


def test_a_bad_subject_layer_or_no_subjects_is_refused_by_name():
    from regionaldiff.components import build_encoder

    net = {"_target_": "regionaldiff.encoder.shallow.LinearEncoder"}
    with pytest.raises(ConfigError, match=r"encoder.subject_layer must be one of none, token, linear; got 'per'"):
        build_encoder(net, **DATA, subject_layer="per", subject_ids=SUBJECTS)
    with pytest.raises(ConfigError, match=r"encoder.subject_layer=token needs the data's subject numbers"):
        build_encoder(net, **DATA, subject_layer="token", subject_ids=[])
    encoder = build_encoder(net, **DATA, subject_layer="token", subject_ids=SUBJECTS)
    with pytest.raises(ValueError, match="2 subject numbers for 3 EEG trials"):
        encoder(torch.randn(3, DATA["n_chans"], DATA["n_times"]), [1, 2])
