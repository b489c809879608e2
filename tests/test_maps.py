"""Region-map generators (semantic rule, superpixels, SAM) and their on-disk cache."""

from __future__ import annotations

import hydra
import numpy as np
import pytest
import torch

from regionaldiff.data.base import EEGDataModule, EEGSplit
from regionaldiff.evaluation.region import mean_iou
from regionaldiff.maps.base import NoRegionMap, OracleRegionMap, RegionMapGenerator
from regionaldiff.maps.cache import cache_folder, generate_cached
from regionaldiff.maps.semantic import Proposals, SemanticRule, proposals_to_regions, saliency_map
from regionaldiff.maps.slic import SuperpixelRegionMap
from regionaldiff.regions import coarse_region_target

K = 5


# -- helpers ------------------------------------------------------------------------------------
def _scenes(n: int, size: int = 32, seed: int = 0):
    """``n`` synthetic-benchmark scenes: (uint8 image, int64 ground-truth map, label)."""
    rng = np.random.default_rng(seed)
    try:
        from regionaldiff.data.synthetic.scenes import render_scene

        return [(s.image, s.region_map, s.label) for s in (render_scene(rng, K, size, 1, 3) for _ in range(n))]
    except ImportError:
        pass
    try:
        from regionaldiff.data.synthetic_benchmark import render_scene, scene_label

        out = []
        for _ in range(n):
            image, region, _ = render_scene(rng, K, size, 1, 3)
            out.append((image, region, scene_label(region, K)))
        return out
    except ImportError:
        pass
    colours = np.array([[220, 30, 30], [30, 180, 50], [40, 70, 230], [240, 220, 30], [210, 40, 210]])
    yy, xx = np.mgrid[:size, :size]
    out = []
    for _ in range(n):
        image = np.full((size, size, 3), 120, np.uint8)
        region = np.zeros((size, size), np.int64)
        for _ in range(int(rng.integers(1, 4))):
            c, r = int(rng.integers(K)), rng.uniform(0.12, 0.24) * size
            cy, cx = rng.uniform(r, size - r, 2)
            disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
            image[disc], region[disc] = colours[c], c + 1
        out.append((image, region, int(np.bincount(region.ravel(), minlength=K + 1)[1:].argmax())))
    return out


class TinyDataModule(EEGDataModule):
    """A datamodule of a few synthetic scenes (no EEG simulation), 2 trials per train image."""

    name = "tiny"

    def __init__(self, n: int = 10, size: int = 32, seed: int = 0) -> None:
        super().__init__(batch_size=4, image_size=size)
        self.num_classes, self.class_names = K, [f"c{k}" for k in range(K)]
        self.n_chans, self.n_times, self.sfreq, self.ch_names = 1, 4, 10.0, ["Oz"]
        self.scenes = _scenes(n, size, seed)

    def build_split(self, split: str) -> EEGSplit:
        n = len(self.scenes)
        index = {"train": list(range(n - 4)) * 2, "val": [n - 4, n - 3], "test": [n - 2, n - 1]}[split]
        return EEGSplit(
            eeg=np.zeros((len(index), 1, 4), np.float32),
            labels=np.array([self.scenes[i][2] for i in index]),
            image_ids=[f"img{i:03d}" for i in index],
            subjects=np.ones(len(index), np.int64),
            images={f"img{i:03d}": self.scenes[i][0] for i in set(index)},
        )

    def ground_truth_region_maps(self):
        return {f"img{i:03d}": s[1] for i, s in enumerate(self.scenes)}


class Counting(SuperpixelRegionMap):
    """Counts the images it segments; raises after ``fail_after`` images (a simulated interruption)."""

    def __init__(self, fail_after: int | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.seen = 0
        self.fail_after = fail_after

    def segment_regions(self, images, labels):
        if self.fail_after is not None and self.seen + len(images) > self.fail_after:
            raise KeyboardInterrupt("simulated interruption")
        self.seen += len(images)
        return super().segment_regions(images, labels)


def _disc_image(size: int = 40, centre=(14, 26), radius: float = 8.0):
    image = np.full((size, size, 3), 120, np.uint8)
    yy, xx = np.mgrid[:size, :size]
    disc = (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius**2
    image[disc] = (220, 30, 30)
    return image, disc


# -- the semantic rule --------------------------------------------------------------------------
def test_rule_keeps_the_salient_object_and_drops_background_masks():
    image, disc = _disc_image()
    size = image.shape[0]
    whole = np.ones_like(disc)
    strip = np.zeros_like(disc)
    strip[:4] = True  # along the top and left borders
    strip[:, :4] = True
    patch = np.zeros_like(disc)
    patch[30:36, 4:10] = True  # a grey background patch inside the frame
    proposals = Proposals(np.stack([whole, strip & ~disc, disc, patch]), np.ones(4))
    rule = SemanticRule()
    assert rule.candidates(proposals).tolist() == [2, 3]  # whole image: too large; strip: on the border
    regions = proposals_to_regions(image, proposals, label=3, rule=rule, mode="semantic")
    assert regions.semantic.dtype == np.int64 and regions.semantic.shape == (size, size)
    np.testing.assert_array_equal(regions.semantic, np.where(disc, 4, 0))
    # instances: candidates painted largest first, ids 1..n
    assert set(np.unique(regions.instances)) == {0, 1, 2}
    assert (regions.instances[disc] == 1).all() and (regions.instances[patch] == 2).all()
    saliency = saliency_map(image)
    assert saliency.shape == (size, size) and 0 <= saliency.min() and saliency.max() <= 1
    assert saliency[disc].mean() > saliency[patch].mean() + 0.3


def test_rule_parameters_change_the_selection():
    image, disc = _disc_image()
    second = np.zeros_like(disc)
    second[28:36, 28:36] = True
    image[second] = (200, 60, 60)  # a second, slightly less contrasted object
    background = ~(disc | second)
    proposals = Proposals(np.stack([disc, second, background]), np.array([1.0, 1.0, 1.0]))
    both = proposals_to_regions(image, proposals, 0, SemanticRule(keep_ratio=0.3), "semantic").semantic
    np.testing.assert_array_equal(both, np.where(disc | second, 1, 0))
    one = proposals_to_regions(image, proposals, 0, SemanticRule(max_regions=1), "semantic").semantic
    np.testing.assert_array_equal(one, np.where(disc, 1, 0))
    # quality scores weigh in: a low-quality mask is ranked below
    low = Proposals(proposals.masks, np.array([0.1, 1.0, 1.0]))
    ranked = proposals_to_regions(image, low, 0, SemanticRule(max_regions=1), "semantic").semantic
    np.testing.assert_array_equal(ranked, np.where(second, 1, 0))
    empty = proposals_to_regions(
        image, Proposals(np.zeros((0, 40, 40), bool), np.zeros(0)), 0, SemanticRule(), "semantic"
    )
    assert not empty.semantic.any() and not empty.instances.any()


def test_rule_and_generator_config_errors_name_the_key():
    with pytest.raises(ValueError, match=r"regionmap\.rule\.max_area"):
        SemanticRule(max_area=1.5)
    with pytest.raises(ValueError, match=r"min_area .* below regionmap\.rule\.max_area"):
        SemanticRule(min_area=0.5, max_area=0.4)
    with pytest.raises(ValueError, match=r"Unknown regionmap\.rule keys \['colour'\]"):
        SemanticRule.build({"colour": 1})
    with pytest.raises(ValueError, match=r"regionmap\.mode must be one of \['semantic', 'instance'\]"):
        SuperpixelRegionMap(mode="panoptic")
    with pytest.raises(ValueError, match=r"regionmap\.method must be one of \['slic', 'felzenszwalb'\]"):
        SuperpixelRegionMap(method="watershed")


@pytest.mark.parametrize("method", ["felzenszwalb", "slic"])
def test_instance_mode_stays_in_the_label_space(method):
    image, gt, label = _scenes(1, size=32, seed=3)[0]
    generator = SuperpixelRegionMap(method=method, mode="instance", rule={"max_area": 1.0, "max_border": 1.0})
    regions = generator.segment_regions([image], [label])[0]
    assert regions.semantic.dtype == np.int64 and regions.semantic.shape == (32, 32)
    assert set(np.unique(regions.semantic)) <= {0, label + 1}
    n_instances = int(regions.instances.max())
    assert n_instances > K + 1  # more regions than labels: ids would not fit the label space
    np.testing.assert_array_equal(regions.semantic > 0, regions.instances > 0)
    # downstream one-hot encodes num_classes + 1 channels: must work on instance-mode maps
    target = coarse_region_target(torch.from_numpy(regions.semantic)[None], K + 1, 4)
    assert target.shape == (1, K + 1, 4, 4)
    torch.testing.assert_close(target.sum(1), torch.ones(1, 4, 4))


# -- superpixels on the synthetic benchmark -----------------------------------------------------
def test_superpixels_recover_synthetic_objects_well_above_a_trivial_baseline():
    scenes = _scenes(50, size=32, seed=0)
    images, gt, labels = zip(*scenes)
    gt = np.stack(gt)
    generator = SuperpixelRegionMap()  # the regionmap=slic defaults (felzenszwalb)
    pred = np.stack([generator.segment(image, label) for image, label in zip(images, labels)])
    assert pred.dtype == np.int64 and pred.shape == gt.shape
    assert set(np.unique(pred)) <= set(range(K + 1))
    box = np.zeros((32, 32), bool)
    box[8:24, 8:24] = True
    baseline = np.stack([np.where(box, label + 1, 0) for label in labels])  # the label on a centred box
    miou, miou_box = mean_iou(pred, gt, K + 1), mean_iou(baseline, gt, K + 1)
    foreground_iou = ((pred > 0) & (gt > 0)).sum() / ((pred > 0) | (gt > 0)).sum()
    # measured: mIoU ~0.54 (a single-label map with perfect foreground gets ~0.61), box ~0.20, fg IoU ~0.89
    assert miou > 0.45 and miou > miou_box + 0.2, (miou, miou_box)
    assert foreground_iou > 0.8


# -- the cache -----------------------------------------------------------------------------------
def test_generate_cached_matches_generate_and_resumes_after_an_interruption(tmp_path):
    dm = TinyDataModule(n=10)
    expected = SuperpixelRegionMap().generate(dm)
    assert len(expected) == 10

    interrupted = Counting(fail_after=6)
    with pytest.raises(KeyboardInterrupt):
        generate_cached(interrupted, dm, tmp_path, chunk_size=3)
    folder = cache_folder(tmp_path, interrupted)
    assert len(list((folder / "shards").glob("shard-*.npz"))) == 2  # two finished chunks of 3
    assert not list((folder / "shards").glob(".tmp-*"))  # no partial files left behind
    assert (folder / "config.json").is_file()

    resumed = Counting()
    maps, instances = generate_cached(resumed, dm, tmp_path, chunk_size=3, return_instances=True)
    assert resumed.seen == 4  # only the images the interrupted run had not finished
    assert list(maps) == list(expected)
    for image_id, value in expected.items():
        assert maps[image_id].dtype == np.int64
        np.testing.assert_array_equal(maps[image_id], value)
        assert instances[image_id].shape == value.shape and instances[image_id].max() >= 1

    again = Counting()
    generate_cached(again, dm, tmp_path, chunk_size=3)
    assert again.seen == 0

    # keyed by image: a changed image (same id) is recomputed, alone
    dm.scenes[0][0][:4, :4] = 255
    changed = Counting()
    generate_cached(changed, dm, tmp_path, chunk_size=3)
    assert changed.seen == 1

    # keyed by generator config: other settings -> another folder, all recomputed
    other = Counting(rule={"keep_ratio": 0.9})
    generate_cached(other, dm, tmp_path, chunk_size=3)
    assert other.seen == 10 and cache_folder(tmp_path, other) != folder
    # ...but not by runtime knobs (batch size)
    batched = Counting()
    batched.batch_size = 8
    generate_cached(batched, dm, tmp_path, chunk_size=3)
    assert batched.seen == 0


def test_a_damaged_shard_is_set_aside_and_recomputed(tmp_path):
    dm = TinyDataModule(n=6)
    generate_cached(SuperpixelRegionMap(), dm, tmp_path, chunk_size=2, splits=("test",))
    shards = sorted((cache_folder(tmp_path, SuperpixelRegionMap()) / "shards").glob("shard-*.npz"))
    assert len(shards) == 1
    shards[0].write_bytes(b"not a zip file")
    counting = Counting()
    maps = generate_cached(counting, dm, tmp_path, chunk_size=2, splits=("test",))
    assert counting.seen == 2 and set(maps) == {"img004", "img005"}
    assert shards[0].with_suffix(".bad").is_file()


def test_generate_cached_passes_none_and_oracle_through_and_checks_label_range(tmp_path):
    dm = TinyDataModule(n=6)
    assert not NoRegionMap().produces_maps and OracleRegionMap().produces_maps and SuperpixelRegionMap().produces_maps
    assert generate_cached(NoRegionMap(), dm, tmp_path) is None
    oracle = generate_cached(OracleRegionMap(), dm, tmp_path)
    np.testing.assert_array_equal(oracle["img001"], dm.scenes[1][1])

    class OutOfRange(RegionMapGenerator):
        name = "bad"

        def segment(self, image, label):
            return np.full(image.shape[:2], K + 1, np.int64)

    with pytest.raises(ValueError, match=r"labels in \[6, 6\] for image 'img000'.*num_classes=5"):
        generate_cached(OutOfRange(), dm, tmp_path)


def test_regionmap_configs_instantiate(compose_cfg, tmp_path):
    slic_map = hydra.utils.instantiate(compose_cfg("regionmap=slic").regionmap)
    assert isinstance(slic_map, SuperpixelRegionMap) and slic_map.method == "felzenszwalb"
    assert slic_map.rule == SemanticRule()  # the YAML spells out the documented defaults
    image, _, label = _scenes(1)[0]
    assert slic_map.segment(image, label).shape == (32, 32)
    # the sam config's default checkpoint is missing here: a clear error naming the file and the model type
    with pytest.raises(Exception, match=r"sam_vit_b_01ec64\.pth.*model_type=vit_b") as err:
        hydra.utils.instantiate(compose_cfg("regionmap=sam").regionmap)
    assert "Download" in str(err.value)


# -- SAM -----------------------------------------------------------------------------------------
def test_sam_missing_or_unreadable_checkpoint_errors(tmp_path):
    from regionaldiff.maps.sam import SamRegionMap

    with pytest.raises(FileNotFoundError, match=r"nope\.pth.*model_type=vit_l.*sam_vit_l_0b3195\.pth"):
        SamRegionMap(checkpoint=str(tmp_path / "nope.pth"), model_type="vit_l")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError, match=r"junk\.pth.*not a readable PyTorch state dict"):
        SamRegionMap(checkpoint=str(junk), model_type="vit_b")
    torch.save({"x": torch.zeros(1)}, junk)
    with pytest.raises(ValueError, match=r"regionmap\.model_type must be one of \['vit_b', 'vit_h', 'vit_l'\]"):
        SamRegionMap(checkpoint=str(junk), model_type="vit_xl")


def test_sam_vit_b_random_checkpoint_loads_through_the_user_path_and_wrong_type_is_rejected(tmp_path):
    from segment_anything import sam_model_registry

    from regionaldiff.maps.sam import SamRegionMap, load_sam

    torch.manual_seed(0)
    reference = sam_model_registry["vit_b"]()
    checkpoint = tmp_path / "sam_vit_b_01ec64.pth"
    torch.save(reference.state_dict(), checkpoint)
    del reference
    with pytest.raises(
        ValueError, match=r"sam_vit_b_01ec64\.pth.*holds vit_b weights.*model_type=vit_l.*model_type=vit_b"
    ):
        SamRegionMap(checkpoint=str(checkpoint), model_type="vit_l")
    with pytest.raises(ValueError, match=r"holds vit_b weights.*model_type=vit_h"):
        load_sam(checkpoint, "vit_h")
    generator = SamRegionMap(checkpoint=str(checkpoint), model_type="vit_b", device="cpu")
    model = generator.mask_generator.predictor.model  # loaded exactly as a user's checkpoint is
    saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
    for name in ("image_encoder.pos_embed", "mask_decoder.iou_prediction_head.layers.0.weight"):
        torch.testing.assert_close(model.state_dict()[name], saved[name])
    assert generator.config()["checkpoint"]["file"] == "sam_vit_b_01ec64.pth"


def test_sam_generator_end_to_end_batched_equals_unbatched(tiny_sam_checkpoint, tmp_path):
    from regionaldiff.maps.sam import SamRegionMap

    settings = dict(
        checkpoint=str(tiny_sam_checkpoint),
        model_type="vit_tiny",
        device="auto",
        points_per_side=2,
        pred_iou_thresh=0.0,
        stability_score_thresh=0.0,
        rule={"max_area": 1.0, "max_border": 1.0},
    )
    images = [_disc_image(40)[0], _scenes(1, size=32)[0][0]]  # two sizes in one batch
    batched = SamRegionMap(batch_size=2, **settings)
    single = SamRegionMap(batch_size=1, **settings)
    got, ref = batched.propose_batch(images), single.propose_batch(images)
    assert sum(len(p.masks) for p in got) > 0
    for a, b, image in zip(got, ref, images):
        assert a.masks.shape[1:] == image.shape[:2] and a.masks.dtype == bool
        assert ((0 <= a.quality) & (a.quality <= 1)).all()
        # the batched encoder pass gives the same masks as SAM's own one-image path
        np.testing.assert_array_equal(a.masks, b.masks)
        np.testing.assert_allclose(a.quality, b.quality, atol=1e-4)
    # through the cache, as the pipeline runs it
    dm = TinyDataModule(n=5)
    maps = generate_cached(batched, dm, tmp_path, splits=("test",))
    assert set(maps) == {"img003", "img004"}
    for image_id, label in zip(("img003", "img004"), dm.get_split("test").labels):
        assert maps[image_id].dtype == np.int64 and maps[image_id].shape == (32, 32)
        assert set(np.unique(maps[image_id])) <= {0, label + 1}
    instance_mode = SamRegionMap(batch_size=2, mode="instance", **settings)
    assert instance_mode.config() != batched.config()
