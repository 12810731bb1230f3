"""The box grammar of the TinyGPT-V family (MiniGPT-v2's): `{<x1><y1><x2><y2>}` on a 100-step grid of
the image's own width and height (a plain resize, never a crop, so the grid does not depend on the
pixel size the vision tower sees), phrases as `<p>phrase</p>`, several boxes of one phrase joined by
`<delim>`:

    [refer] answer        {<10><12><30><40>}
    [identify] question   what is in {<10><12><30><40>}
    [grounding] answer    <p>red circle</p> {<10><12><30><40>}<delim>{...}   or  {<1><2><3><4><delim><5><6><7><8>}

Datasets write boxes with `box_from_pixels`, the chat reads and draws them with `parse_boxes`, the
grounding metric reads the model's answer with `parse_box`: one regex for all of them.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional, Sequence

GRID = 100  # coordinates are int(x / width * 100); what a model writes is read clamped into 0..GRID-1

# One coordinate quadruple; up to three digits each (MiniGPT-v2's eval_ref.py reads `\d{1,3}`).
_COORDS = r"<\s*(\d{1,3})\s*>\s*<\s*(\d{1,3})\s*>\s*<\s*(\d{1,3})\s*>\s*<\s*(\d{1,3})\s*>"
BOX = re.compile(r"\{\s*" + _COORDS + r"\s*\}")
_ONE = re.compile(_COORDS)
_QUAD = _COORDS.replace("(", "(?:")
# an optional <p>label</p>, then one {...} holding boxes separated by <delim>, or several {...}
# groups separated by <delim>
_GROUP = re.compile(
    r"(?:<p>(?P<label>.*?)</p>\s*)?"
    r"(?P<boxes>\{\s*" + _QUAD + r"(?:\s*<delim>\s*" + _QUAD + r")*\s*\}"
    r"(?:\s*<delim>\s*\{\s*" + _QUAD + r"\s*\})*)",
    re.S,
)


@dataclass(frozen=True)
class Box:
    """A box on the grid; x1 <= x2, y1 <= y2."""

    x1: int
    y1: int
    x2: int
    y2: int
    label: Optional[str] = None

    def __str__(self) -> str:
        return format_box(self.x1, self.y1, self.x2, self.y2)

    def pixels(self, width: float, height: float) -> tuple[float, float, float, float]:
        """Corners in pixels of a width x height image (v / 100 * side, MiniGPT-v2's eval_ref.py)."""
        return (self.x1 / GRID * width, self.y1 / GRID * height, self.x2 / GRID * width, self.y2 / GRID * height)


def phrase(text: str) -> str:
    """`<p>text</p>`"""
    return f"<p>{text}</p>"


def format_box(x1: float, y1: float, x2: float, y2: float) -> str:
    """Grid coordinates -> `{<x1><y1><x2><y2>}`, clamped to the grid and ordered."""
    a, b, c, d = (_clamp(v) for v in (x1, y1, x2, y2))
    a, c = sorted((a, c))
    b, d = sorted((b, d))
    return f"{{<{a}><{b}><{c}><{d}>}}"


def grid_box(bbox_xywh: Sequence[float], width: float, height: float,
             clamp: bool = True) -> tuple[int, int, int, int]:
    """[x, y, w, h] in pixels of a `width` x `height` image -> (x1, y1, x2, y2) on the grid:
    `int(x / width * 100)` per corner (TinyGPT-V's formula, in its order of operations), clamped into
    0..99 with `clamp`."""
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    x, y, w, h = (float(v) for v in bbox_xywh)
    cells = (_cell(x, width), _cell(y, height), _cell(x + w, width), _cell(y + h, height))
    return tuple(min(GRID - 1, max(0, c)) for c in cells) if clamp else cells  # type: ignore[return-value]


def box_from_pixels(bbox_xywh: Sequence[float], width: float, height: float, clamp: bool = False) -> str:
    """[x, y, w, h] pixels -> `{<x1><y1><x2><y2>}` (what grounding datasets train on).

    By default exactly what TinyGPT-V's RefCOCO and Visual Genome datasets write: no clamp, no
    reordering, so a box touching the right or bottom border reads `<100>` and a region that runs past
    the border more (`{<78><62><109><114>}`).  `clamp` (`datasets.<name>.clamp_boxes`) keeps every
    coordinate in 0..99 and the corners ordered, as the model's answers are read.
    """
    if clamp:
        return format_box(*grid_box(bbox_xywh, width, height))
    return "{{<{}><{}><{}><{}>}}".format(*grid_box(bbox_xywh, width, height, clamp=False))


def parse_box(text: str) -> Optional[tuple[int, int, int, int]]:
    """The first `{<x1><y1><x2><y2>}` in `text` as written (not clamped), or None."""
    m = BOX.search(text)
    return tuple(int(g) for g in m.groups()) if m else None  # type: ignore[return-value]


def parse_boxes(text: str) -> list[Box]:
    """Every box in `text`, in order, clamped and ordered, with its `<p>label</p>` when it has one."""
    boxes = []
    for group in _GROUP.finditer(text):
        label = group.group("label")
        label = label.strip() if label else None
        for m in _ONE.finditer(group.group("boxes")):
            a, b, c, d = (_clamp(int(v)) for v in m.groups())
            boxes.append(Box(min(a, c), min(b, d), max(a, c), max(b, d), label))
    return boxes


def strip_boxes(text: str) -> str:
    """`text` without box markup (`<p>`, `</p>`, boxes, `<delim>`), for reading."""
    text = _GROUP.sub(lambda m: (m.group("label") or "").strip(), text)
    return re.sub(r"\s{2,}", " ", text).strip()


def grid_point(x: float, y: float, width: float, height: float) -> tuple[int, int]:
    """A pixel position -> grid coordinates (clicking corners on the image)."""
    return _clamp(int(x / max(width, 1) * GRID)), _clamp(int(y / max(height, 1) * GRID))


def _cell(value: float, size: float) -> int:
    return int(value / size * GRID)  # int() truncates toward zero, as the original's int(...)


def _clamp(v: float) -> int:
    return int(min(max(round(v), 0), GRID - 1))
