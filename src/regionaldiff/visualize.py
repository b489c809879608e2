"""Figures people would rather look at than read: stimulus/map grids and true-vs-generated grids."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _label_colormap(max_label: int):
    return plt.get_cmap("tab10" if max_label < 10 else "tab20", max(max_label + 1, 2))


def paint_map(label_map: np.ndarray, top: int, label_colours: np.ndarray | None = None) -> np.ndarray:
    """A label map ``[H, W]`` as a float RGB image in [0, 1]: each label in its colour from ``label_colours``
    (uint8 ``[L, 3]``: background grey, classes in their objects' colours), else from a categorical palette
    over labels ``0..top``."""
    label_map = np.asarray(label_map, dtype=np.int64)
    if label_colours is not None:
        return np.asarray(label_colours, dtype=np.float64)[np.clip(label_map, 0, len(label_colours) - 1)] / 255.0
    cmap = _label_colormap(top)
    return np.asarray(cmap(label_map / max(top, 1)))[..., :3]


def label_colour(label: int, top: int, label_colours: np.ndarray | None = None) -> tuple[float, float, float]:
    """The colour :func:`paint_map` gives ``label``, for a legend."""
    r, g, b = paint_map(np.array([[label]]), top, label_colours)[0, 0]
    return float(r), float(g), float(b)


def save_stimulus_grid(
    path: Path,
    images: Sequence[np.ndarray],
    maps: Sequence[np.ndarray] | None = None,
    label_colours: np.ndarray | None = None,
) -> Path:
    """Row of stimuli, with their region maps below when given (painted with ``label_colours``, see
    :func:`paint_map`)."""
    n = len(images)
    rows = 2 if maps is not None else 1
    fig, axes = plt.subplots(rows, n, figsize=(1.2 * n, 1.3 * rows), squeeze=False)
    top = max((int(m.max()) for m in maps), default=1) if maps is not None else 1
    for i in range(n):
        axes[0, i].imshow(images[i])
        if maps is not None:
            axes[1, i].imshow(paint_map(maps[i], top, label_colours), interpolation="nearest")
    for ax in axes.ravel():
        ax.set_axis_off()
    axes[0, 0].set_title("stimulus", fontsize=7, loc="left")
    if maps is not None:
        axes[1, 0].set_title("region map", fontsize=7, loc="left")
    fig.tight_layout(pad=0.2)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def save_reconstruction_grid(
    path: Path,
    reference: np.ndarray,
    generated: np.ndarray,
    titles: Sequence[str] | None = None,
    maps: np.ndarray | None = None,
    num_labels: int | None = None,
    map_title: str = "map from EEG",
    class_names: Sequence[str] | None = None,
    label_colours: np.ndarray | None = None,
) -> Path:
    """Groups of rows: the true stimuli, their reconstructions from EEG and, when given, the region maps that
    conditioned them (label maps ``[N, H, W]``, 0 = background; ``map_title`` says which); 8 stimuli per row.

    Under the maps, a legend gives the class of each colour shown: label ``k >= 1`` is class ``k - 1``, named by
    ``class_names[k - 1]`` (``class k-1`` when no names are given), label 0 is the background. Maps are painted
    with ``label_colours`` when given (the dataset's: each class in its objects' colour), else a categorical palette.
    """
    n = len(reference)
    cols = min(8, n)
    per = 3 if maps is not None else 2
    groups = (n + cols - 1) // cols
    fig, axes = plt.subplots(per * groups, cols, figsize=(1.2 * cols, 1.25 * per * groups), squeeze=False)
    for ax in axes.ravel():
        ax.set_axis_off()
    top = (num_labels - 1) if num_labels else (int(maps.max()) if maps is not None else 1)
    for i in range(n):
        r, c = divmod(i, cols)
        axes[per * r, c].imshow(reference[i])
        axes[per * r + 1, c].imshow(generated[i])
        if maps is not None:
            axes[per * r + 2, c].imshow(paint_map(maps[i], top, label_colours), interpolation="nearest")
        if titles is not None:
            axes[per * r, c].set_title(titles[i], fontsize=6)
    axes[0, 0].set_title("true", fontsize=7, loc="left")
    axes[1, 0].set_title("from EEG", fontsize=7, loc="left")
    bottom = 0.0
    if maps is not None:
        axes[2, 0].set_title(map_title, fontsize=7, loc="left")
        entries = legend_entries(maps[:n], class_names)
        if entries:
            from matplotlib.patches import Patch

            handles = [
                Patch(facecolor=label_colour(label, top, label_colours), edgecolor="0.3", linewidth=0.4, label=name)
                for label, name in entries
            ]
            ncol = min(len(handles), 4)
            rows = (len(handles) + ncol - 1) // ncol
            fig.legend(handles=handles, loc="lower center", ncol=ncol, fontsize=6, frameon=False)
            bottom = min(0.45, (0.17 * rows + 0.05) / fig.get_figheight())
    fig.tight_layout(pad=0.2, rect=(0, bottom, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def legend_entries(maps: np.ndarray, class_names: Sequence[str] | None = None) -> list[tuple[int, str]]:
    """``(label, name)`` of every label in ``maps``: 0 is ``background``, ``k`` is ``class_names[k - 1]`` (or
    ``class k-1`` when there is no name for it)."""
    names = list(class_names or [])
    out = []
    for label in sorted(int(v) for v in np.unique(np.asarray(maps))):
        if label == 0:
            out.append((0, "background"))
        else:
            out.append((label, names[label - 1] if label - 1 < len(names) else f"class {label - 1}"))
    return out


def save_retrieval_curve(path: Path, metrics: dict[str, float], n_candidates: int) -> Path:
    """Zero-shot retrieval against the number of test repetitions averaged (``eval/retrieval_top{k}_reps{n}``), one
    line per ``k``, with chance (``k / n_candidates``) dashed: the curve NICE and ATM report for THINGS-EEG2."""
    import re

    curves: dict[int, list[tuple[int, float]]] = {}
    for name, value in metrics.items():
        match = re.fullmatch(r"eval/retrieval_top(\d+)_reps(\d+)", name)
        if match:
            curves.setdefault(int(match[1]), []).append((int(match[2]), value))
    fig, ax = plt.subplots(figsize=(4.2, 3.0))
    for k, points in sorted(curves.items()):
        reps, values = zip(*sorted(points))
        line = ax.plot(reps, [100 * v for v in values], marker="o", label=f"top-{k}")[0]
        ax.axhline(100 * min(1.0, k / n_candidates), color=line.get_color(), linestyle="--", linewidth=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("test repetitions averaged")
    ax.set_ylabel(f"{n_candidates}-way retrieval accuracy (%)")
    ax.set_title("zero-shot retrieval (dashed: chance)", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
