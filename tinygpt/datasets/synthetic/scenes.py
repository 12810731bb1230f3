"""Scenes of 1-3 coloured shapes on a plain background, and their rendering.

The image is a 3 x 3 grid of cells; each object sits near the centre of its own cell and fills most
of it.  That makes every fact a question can ask unambiguous: position is the cell (left/center/
right, top/center/bottom), objects never overlap, "left of"/"above" compare cells, and (colour,
shape) pairs are unique within a scene, so "the red circle" always names exactly one object.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

from PIL import Image, ImageDraw

# Saturated, well-separated hues: a 112 px JPEG keeps them distinguishable.
COLORS = {
    "red": (215, 35, 35),
    "green": (35, 165, 55),
    "blue": (35, 75, 215),
    "yellow": (240, 205, 25),
    "purple": (135, 55, 185),
    "orange": (245, 135, 20),
}
SHAPES = ("circle", "square", "triangle")
ROWS = ("top", "center", "bottom")
COLS = ("left", "center", "right")


@dataclass(frozen=True)
class Obj:
    color: str
    shape: str
    row: int  # 0 top .. 2 bottom
    col: int  # 0 left .. 2 right
    box: tuple[int, int, int, int]  # [x, y, w, h] in pixels

    @property
    def noun(self) -> str:
        return f"{self.color} {self.shape}"


@dataclass(frozen=True)
class Scene:
    image_id: int
    size: int
    background: tuple[int, int, int]
    objects: tuple[Obj, ...]  # in reading order (row, then column)


def sample_scene(rng: random.Random, image_id: int, size: int) -> Scene:
    """1-3 objects in distinct cells with distinct (colour, shape); sizes 60-85 % of a cell."""
    n = rng.randint(1, 3)
    cells = sorted(rng.sample(range(9), n))
    kinds = rng.sample([(c, s) for c in COLORS for s in SHAPES], n)
    cell = size / 3.0
    objects = []
    for idx, (color, shape) in zip(cells, kinds):
        row, col = divmod(idx, 3)
        d = max(4, int(round(cell * rng.uniform(0.6, 0.85))))
        cx = (col + 0.5) * cell + rng.uniform(-0.06, 0.06) * cell
        cy = (row + 0.5) * cell + rng.uniform(-0.06, 0.06) * cell
        x = min(max(0, int(round(cx - d / 2))), size - d)
        y = min(max(0, int(round(cy - d / 2))), size - d)
        objects.append(Obj(color, shape, row, col, (x, y, d, d)))
    grey = rng.randint(232, 255)
    return Scene(image_id, size, (grey, grey, grey), tuple(objects))


# Content classes of one grid cell: 0 = empty, then every (colour, shape) pair.
CELL_CLASSES = ["empty"] + [f"{c} {s}" for c in COLORS for s in SHAPES]


def cell_labels(scene: Scene) -> list[int]:
    """The content class (index into CELL_CLASSES) of each of the 9 cells, in reading order."""
    labels = [0] * 9
    for o in scene.objects:
        labels[o.row * 3 + o.col] = CELL_CLASSES.index(f"{o.color} {o.shape}")
    return labels


def render(scene: Scene) -> Image.Image:
    image = Image.new("RGB", (scene.size, scene.size), scene.background)
    draw = ImageDraw.Draw(image)
    for o in scene.objects:
        x, y, w, h = o.box
        x2, y2 = x + w - 1, y + h - 1
        fill = COLORS[o.color]
        if o.shape == "circle":
            draw.ellipse([x, y, x2, y2], fill=fill)
        elif o.shape == "square":
            draw.rectangle([x, y, x2, y2], fill=fill)
        else:
            draw.polygon([(x + (w - 1) / 2, y), (x2, y2), (x, y2)], fill=fill)
    return image
