"""Concepts of the realistic synthetic presets, built from attributes (shape x colour x texture).

Every concept is one combination of a shape, a colour and a texture, so hundreds of concepts exist (10 x 16 x 4 =
640) and concepts never seen in training share their attributes with seen ones: EEG whose category signal follows
the attributes (:mod:`regionaldiff.data.synthetic.concept_world`) makes unseen concepts decodable in principle, as
real EEG carries visual features of objects it was never trained on.

A concept's look is a :class:`~regionaldiff.data.synthetic.scenes.ClassStyle`; a textured concept's second colour
is its colour at half brightness.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from regionaldiff.config import SYNTHETIC_MAX_CONCEPTS
from regionaldiff.data.synthetic.scenes import ClassStyle

#: the shapes :func:`regionaldiff.data.synthetic.scenes.shape_mask` draws
SHAPES = ("disc", "square", "triangle", "cross", "ring", "diamond", "hexagon", "star", "ellipse", "bar")
#: saturated colours, none on the grey background's range (90-150 on every channel)
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 180, 50),
    "blue": (40, 70, 230),
    "yellow": (240, 220, 30),
    "magenta": (210, 40, 210),
    "cyan": (40, 220, 230),
    "orange": (250, 140, 20),
    "white": (250, 250, 250),
    "brown": (150, 85, 30),
    "black": (15, 15, 15),
    "purple": (120, 30, 180),
    "pink": (255, 160, 200),
    "lime": (170, 245, 60),
    "navy": (20, 30, 110),
    "teal": (0, 150, 140),
    "maroon": (110, 10, 30),
}
TEXTURES = ("solid", "hstripes", "vstripes", "checker")
#: number of possible concepts
MAX_CONCEPTS = SYNTHETIC_MAX_CONCEPTS  # the bound the dataset's schema checks (regionaldiff.config)
assert len(SHAPES) * len(COLOURS) * len(TEXTURES) == MAX_CONCEPTS, (
    "concepts and config.SYNTHETIC_MAX_CONCEPTS disagree"
)


@dataclass(frozen=True)
class Concept:
    """One concept: its attributes (indices into :data:`SHAPES`, :data:`COLOURS`, :data:`TEXTURES`) and its look."""

    shape: int
    colour: int
    texture: int

    @property
    def style(self) -> ClassStyle:
        colour_name = list(COLOURS)[self.colour]
        rgb = COLOURS[colour_name]
        texture = TEXTURES[self.texture]
        shape = SHAPES[self.shape]
        if texture == "solid":
            return ClassStyle(f"{colour_name}_{shape}", shape, (rgb,))
        dark = (round(rgb[0] / 2), round(rgb[1] / 2), round(rgb[2] / 2))
        return ClassStyle(f"{colour_name}_{texture}_{shape}", shape, (rgb, dark), texture)

    def attribute_columns(self) -> tuple[int, int, int]:
        """This concept's columns in the attribute one-hot ``[shape | colour | texture]`` (:data:`N_ATTRIBUTES`)."""
        return self.shape, len(SHAPES) + self.colour, len(SHAPES) + len(COLOURS) + self.texture


#: width of the attribute one-hot ``[shape | colour | texture]``: the number of attribute sources
N_ATTRIBUTES = len(SHAPES) + len(COLOURS) + len(TEXTURES)


def draw_concepts(n: int, rng: np.random.Generator) -> list[Concept]:
    """``n`` distinct concepts in random order (``n <= MAX_CONCEPTS``)."""
    if not 1 <= n <= MAX_CONCEPTS:
        raise ValueError(f"The synthetic concepts number {MAX_CONCEPTS}; asked for {n}.")
    picks = rng.permutation(MAX_CONCEPTS)[:n]
    n_colours, n_textures = len(COLOURS), len(TEXTURES)
    return [
        Concept(int(p) // (n_colours * n_textures), (int(p) // n_textures) % n_colours, int(p) % n_textures)
        for p in picks
    ]


def attribute_matrix(concepts: list[Concept]) -> np.ndarray:
    """``[K, N_ATTRIBUTES]`` one-hot attributes of each concept (three ones per row)."""
    out = np.zeros((len(concepts), N_ATTRIBUTES))
    for k, concept in enumerate(concepts):
        out[k, list(concept.attribute_columns())] = 1.0
    return out
