"""The reconstruction grid: region maps come with a legend naming the class of each colour."""

from __future__ import annotations

import numpy as np
from PIL import Image

from regionaldiff.visualize import legend_entries, save_reconstruction_grid


def test_legend_entries_name_each_label_shown():
    maps = np.array([[[0, 2], [2, 0]], [[0, 0], [4, 4]]])
    assert legend_entries(maps, ["disc", "square", "triangle"]) == [
        (0, "background"),
        (2, "square"),
        (4, "class 3"),  # no name for it: the fallback
    ]
    assert legend_entries(maps) == [(0, "background"), (2, "class 1"), (4, "class 3")]


def test_legend_names_change_the_figure(tmp_path):
    rng = np.random.default_rng(0)
    reference = rng.integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)
    generated = rng.integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)
    maps = np.zeros((4, 16, 16), dtype=np.int64)
    maps[:, 4:12, 4:12] = np.arange(1, 5)[:, None, None]
    names = ["disc", "square", "triangle", "star"]
    with_legend = save_reconstruction_grid(
        tmp_path / "a.png", reference, generated, maps=maps, num_labels=5, class_names=names
    )
    # same maps, no class names: the legend falls back to "class k", so only the legend's text differs
    without = save_reconstruction_grid(tmp_path / "b.png", reference, generated, maps=maps, num_labels=5)
    a, b = np.asarray(Image.open(with_legend)), np.asarray(Image.open(without))
    assert a.shape == b.shape and not np.array_equal(a, b)
    differs = np.flatnonzero((a != b).any(axis=(1, 2)))
    assert differs.min() > 0.8 * a.shape[0], "only the legend, at the bottom, may differ"
    # the legend sits below the maps: the bottom strip of the figure is not blank
    strip = a[-12:, :, :3]
    assert (strip < 200).any()


def test_maps_are_painted_in_the_objects_own_colours(tmp_path):
    from regionaldiff.data.synthetic import SyntheticDataModule
    from regionaldiff.data.synthetic.scenes import CLASS_STYLES

    dm = SyntheticDataModule(n_classes=3, cache_dir=str(tmp_path / "cache"))
    colours = dm.region_label_colours
    assert colours is not None and colours.shape == (4, 3)
    assert tuple(colours[0]) == (128, 128, 128)  # the background is the scenes' grey, not a palette colour
    assert [tuple(c) for c in colours[1:]] == [style.colours[0] for style in CLASS_STYLES[:3]]
    assert dm.class_names[0] == "red_disc" and tuple(colours[1]) == (220, 30, 30)

    rng = np.random.default_rng(0)
    reference = rng.integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
    maps = np.zeros((2, 16, 16), dtype=np.int64)
    maps[:, 2:14, 2:14] = 1  # red_disc on the background
    path = save_reconstruction_grid(
        tmp_path / "grid.png",
        reference,
        reference,
        maps=maps,
        num_labels=4,
        class_names=dm.class_names,
        label_colours=colours,
    )
    pixels = np.asarray(Image.open(path))[..., :3].reshape(-1, 3).astype(int)

    def count(rgb):
        return int((np.abs(pixels - np.array(rgb)).max(axis=1) <= 3).sum())

    assert count((220, 30, 30)) > 100 and count((128, 128, 128)) > 100
    # the categorical palette's colours for these labels are gone
    palette = save_reconstruction_grid(tmp_path / "palette.png", reference, reference, maps=maps, num_labels=4)
    tab = np.asarray(Image.open(palette))[..., :3].reshape(-1, 3).astype(int)
    assert int((np.abs(tab - np.array((220, 30, 30))).max(axis=1) <= 3).sum()) < 10


def test_layout_maps_paint_object_and_background(tmp_path):
    from regionaldiff.data.synthetic.concept_world import ConceptWorldDataModule
    from regionaldiff.regions import RegionLabels

    dm = ConceptWorldDataModule(
        n_concepts=8, n_val_concepts=2, n_test_concepts=2, images_per_concept=1, cache_dir=str(tmp_path / "c")
    )
    assert dm.region_labels is RegionLabels.LAYOUT
    assert [tuple(c) for c in dm.region_label_colours] == [(128, 128, 128), (245, 245, 245)]
    # the generated (class-labelled) maps of the stimulus grid keep each concept's own colour
    assert dm.class_map_colours.shape == (dm.num_classes + 1, 3)
    assert [tuple(c) for c in dm.class_map_colours[1:]] == dm.class_colours
