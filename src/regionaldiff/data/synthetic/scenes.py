"""Stimuli of the synthetic benchmark: scenes of coloured shapes and their exact region maps.

A scene holds ``min_objects..max_objects`` objects, each of one of ``K`` classes, drawn in order at a random
position and size on a mildly textured grey background (later objects occlude earlier ones). Each class has
its own colour, shape and (for some) texture, listed in :data:`CLASS_STYLES`. Shapes are rasterised with
``skimage.draw`` (no anti-aliasing), so the region map is exact: ``class + 1`` on the pixels an object shows,
0 on the background. The scene's label is the class covering the most pixels of the map.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from skimage import draw
from skimage.filters import gaussian

from regionaldiff.config import SYNTHETIC_MAX_CLASSES

# Background grey levels (R = G = B): the mean is drawn per scene, a smooth texture is added on top.
BACKGROUND_MEAN_RANGE = (105.0, 135.0)
BACKGROUND_TEXTURE_STD = 6.0
BACKGROUND_CLIP = (90, 150)
# Object radius (half the bounding-box side) as a fraction of the image side.
RADIUS_RANGE = (0.12, 0.25)
# Object-centred scenes (the realistic presets): the named object, and the smaller clutter drawn under it.
MAIN_RADIUS_RANGE = (0.2, 0.32)
CLUTTER_RADIUS_RANGE = (0.07, 0.13)


@dataclass(frozen=True)
class ClassStyle:
    """Look of one object class.

    Parameters
    ----------
    name : str
        Class name, ``<colour>_<shape>``.
    shape : str
        One of the shapes :func:`shape_mask` draws.
    colours : tuple of RGB tuples
        One colour (solid) or two colours (textured: see ``texture``).
    texture : str
        ``solid``, ``hstripes`` (rows alternate the two colours), ``vstripes`` or ``checker`` (2x2 px).
    """

    name: str
    shape: str
    colours: tuple[tuple[int, int, int], ...]
    texture: str = "solid"


# Colours are far from the grey background (and from each other); white/black lie outside its range.
CLASS_STYLES: tuple[ClassStyle, ...] = (
    ClassStyle("red_disc", "disc", ((220, 30, 30),)),
    ClassStyle("green_square", "square", ((30, 180, 50),)),
    ClassStyle("blue_triangle", "triangle", ((40, 70, 230),)),
    ClassStyle("yellow_cross", "cross", ((240, 220, 30),)),
    ClassStyle("magenta_ring", "ring", ((210, 40, 210),)),
    ClassStyle("cyan_diamond", "diamond", ((40, 220, 230), (0, 110, 120)), "hstripes"),
    ClassStyle("orange_hexagon", "hexagon", ((250, 140, 20),)),
    ClassStyle("white_star", "star", ((250, 250, 250),)),
    ClassStyle("brown_ellipse", "ellipse", ((150, 85, 30), (225, 180, 120)), "checker"),
    ClassStyle("black_bar", "bar", ((15, 15, 15), (70, 40, 110)), "vstripes"),
)
MAX_CLASSES = SYNTHETIC_MAX_CLASSES  # the bound dataset.n_classes is checked against (regionaldiff.config)
assert len(CLASS_STYLES) == MAX_CLASSES, "CLASS_STYLES and config.SYNTHETIC_MAX_CLASSES disagree"


def shape_mask(shape: str, cy: float, cx: float, r: float, size: int) -> np.ndarray:
    """Boolean ``[size, size]`` mask of one shape centred at ``(cy, cx)`` with radius ``r`` (pixels).

    Never empty: a shape too small to cover a pixel centre still gets the pixel under its centre.
    """
    mask = np.zeros((size, size), dtype=bool)
    ext = (size, size)
    if shape == "disc":
        mask[draw.disk((cy, cx), r, shape=ext)] = True
    elif shape == "ring":
        mask[draw.disk((cy, cx), r, shape=ext)] = True
        mask[draw.disk((cy, cx), 0.55 * r, shape=ext)] = False
    elif shape == "ellipse":
        mask[draw.ellipse(cy, cx, 0.6 * r, r, shape=ext)] = True
    elif shape == "square":
        mask[_polygon(cy, cx, 0.85 * r, [(-1, -1), (-1, 1), (1, 1), (1, -1)], ext)] = True
    elif shape == "bar":
        mask[_polygon(cy, cx, r, [(-0.4, -1), (-0.4, 1), (0.4, 1), (0.4, -1)], ext)] = True
    elif shape == "triangle":
        mask[_polygon(cy, cx, r, [(-1, 0), (0.8, -1), (0.8, 1)], ext)] = True
    elif shape == "diamond":
        mask[_polygon(cy, cx, r, [(-1, 0), (0, 1), (1, 0), (0, -1)], ext)] = True
    elif shape == "hexagon":
        angles = np.deg2rad(np.arange(0, 360, 60))
        mask[_polygon(cy, cx, r, list(zip(np.sin(angles), np.cos(angles))), ext)] = True
    elif shape == "star":
        angles = np.deg2rad(np.arange(0, 360, 36) - 90)
        radii = np.where(np.arange(10) % 2 == 0, 1.0, 0.45)
        mask[_polygon(cy, cx, r, list(zip(radii * np.sin(angles), radii * np.cos(angles))), ext)] = True
    elif shape == "cross":
        w = 0.35
        mask[_polygon(cy, cx, r, [(-1, -w), (-1, w), (1, w), (1, -w)], ext)] = True
        mask[_polygon(cy, cx, r, [(-w, -1), (-w, 1), (w, 1), (w, -1)], ext)] = True
    else:
        raise ValueError(f"Unknown shape {shape!r}; CLASS_STYLES may only use the shapes shape_mask draws.")
    if not mask.any():
        mask[min(int(cy), size - 1), min(int(cx), size - 1)] = True
    return mask


def _polygon(cy: float, cx: float, r: float, unit_vertices: list[tuple[float, float]], ext: tuple[int, int]):
    """Pixel indices of a polygon given by ``(dy, dx)`` vertices in units of ``r`` around ``(cy, cx)``."""
    vy = np.array([cy + r * dy for dy, _ in unit_vertices])
    vx = np.array([cx + r * dx for _, dx in unit_vertices])
    return draw.polygon(vy, vx, shape=ext)


def paint(image: np.ndarray, mask: np.ndarray, style: ClassStyle) -> None:
    """Fill ``mask`` of the uint8 ``[S, S, 3]`` ``image`` in place with the class's colour(s) and texture."""
    if style.texture == "solid" or len(style.colours) == 1:
        image[mask] = style.colours[0]
        return
    rows, cols = np.indices(mask.shape)
    second = {
        "hstripes": rows % 2 == 1,
        "vstripes": cols % 2 == 1,
        "checker": (rows // 2 + cols // 2) % 2 == 1,
    }.get(style.texture)
    if second is None:
        raise ValueError(f"Unknown texture {style.texture!r} of class {style.name!r}.")
    image[mask & ~second] = style.colours[0]
    image[mask & second] = style.colours[1]


def background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A mildly textured grey uint8 ``[S, S, 3]`` background (R = G = B)."""
    texture = gaussian(rng.normal(size=(size, size)), sigma=1.5)
    texture *= BACKGROUND_TEXTURE_STD / max(float(texture.std()), 1e-6)
    grey = np.clip(rng.uniform(*BACKGROUND_MEAN_RANGE) + texture, *BACKGROUND_CLIP).round().astype(np.uint8)
    return np.repeat(grey[:, :, None], 3, axis=2)


@dataclass
class Scene:
    """One rendered stimulus.

    Attributes
    ----------
    image : np.ndarray
        uint8 ``[S, S, 3]``.
    region_map : np.ndarray
        int64 ``[S, S]``: ``class + 1`` per pixel, 0 = background.
    objects : np.ndarray
        float64 ``[n, 4]`` rows ``(class, cy, cx, r)`` in drawing order; ``cy, cx, r`` in [0, 1] image units.
    label : int
        The scene's class: the one covering the most pixels (ties: the lower class index) for
        :func:`render_scene`, the named object's for :func:`render_object_scene`.
    """

    image: np.ndarray
    region_map: np.ndarray
    objects: np.ndarray
    label: int


def render_scene(rng: np.random.Generator, n_classes: int, size: int, min_objects: int, max_objects: int) -> Scene:
    """Draw one scene of ``min_objects..max_objects`` objects of classes ``0..n_classes-1``."""
    image = background(rng, size)
    region = np.zeros((size, size), dtype=np.int64)
    n_objects = int(rng.integers(min_objects, max_objects + 1))
    objects = np.zeros((n_objects, 4))
    for k in range(n_objects):
        cls = int(rng.integers(n_classes))
        r = float(rng.uniform(*RADIUS_RANGE)) * size
        cy, cx = rng.uniform(r, size - r, size=2)
        mask = shape_mask(CLASS_STYLES[cls].shape, cy, cx, r, size)
        paint(image, mask, CLASS_STYLES[cls])
        region[mask] = cls + 1
        objects[k] = (cls, cy / size, cx / size, r / size)
    return Scene(image, region, objects, scene_label(region, n_classes))


def render_object_scene(
    rng: np.random.Generator,
    concept: int,
    styles: list[ClassStyle],
    clutter_pool: np.ndarray,
    size: int,
    max_clutter: int,
) -> Scene:
    """An object-centred scene, as THINGS and ImageNet photographs are: ``0..max_clutter`` small clutter objects of
    concepts drawn from ``clutter_pool``, then the named object (``concept``, larger, drawn last so that it is whole)
    at a random position. Labels are ``concept + 1`` (and the clutter's own) on the pixels each object shows."""
    image = background(rng, size)
    region = np.zeros((size, size), dtype=np.int64)
    n_clutter = int(rng.integers(0, max_clutter + 1))
    drawn = [int(c) for c in rng.choice(clutter_pool, size=n_clutter)] + [concept]
    objects = np.zeros((len(drawn), 4))
    for k, cls in enumerate(drawn):
        main = k == len(drawn) - 1
        r = float(rng.uniform(*(MAIN_RADIUS_RANGE if main else CLUTTER_RADIUS_RANGE))) * size
        cy, cx = rng.uniform(r, size - r, size=2)
        mask = shape_mask(styles[cls].shape, cy, cx, r, size)
        paint(image, mask, styles[cls])
        region[mask] = cls + 1
        objects[k] = (cls, cy / size, cx / size, r / size)
    return Scene(image, region, objects, concept)


def scene_label(region_map: np.ndarray, n_classes: int) -> int:
    """The class covering the most pixels of ``region_map`` (ties: the lower class index)."""
    counts = np.bincount(region_map.ravel(), minlength=n_classes + 1)[1 : n_classes + 1]
    if counts.sum() == 0:
        raise ValueError("The region map has no object pixels; a scene always has at least one object.")
    return int(counts.argmax())


def class_centroid(region_map: np.ndarray, cls: int) -> np.ndarray:
    """``(y, x)`` centre of mass of class ``cls``'s pixels in [0, 1] image units (pixel centres)."""
    ys, xs = np.nonzero(region_map == cls + 1)
    if len(ys) == 0:
        raise ValueError(f"Class {cls} covers no pixel of this region map.")
    size = np.array(region_map.shape, dtype=np.float64)
    return (np.array([ys.mean(), xs.mean()]) + 0.5) / size
