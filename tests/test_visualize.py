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
