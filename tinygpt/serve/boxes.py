"""Drawing boxes of TinyGPT-V answers on the chat's image (the grammar itself lives in
conversation/boxes.py: one regex for datasets, chat and metrics)."""
from __future__ import annotations

from typing import Optional

from PIL import Image, ImageDraw, ImageFont

from ..conversation.boxes import Box

COLOURS = ("#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45")


def draw_boxes(image: Image.Image, boxes: list[Box], width: int = 3) -> Image.Image:
    """A copy of `image` (RGB) with `boxes` outlined, one colour per label, labels written above."""
    out = image.convert("RGB").copy()
    if not boxes:
        return out
    draw = ImageDraw.Draw(out)
    font = ImageFont.load_default()
    line = max(width, round(min(out.size) / 200))
    colours: dict[Optional[str], str] = {}
    for box in boxes:
        colour = colours.setdefault(box.label, COLOURS[len(colours) % len(COLOURS)])
        x1, y1, x2, y2 = box.pixels(*out.size)
        draw.rectangle([x1, y1, max(x2, x1 + 1), max(y2, y1 + 1)], outline=colour, width=line)
        if box.label:
            left, top, right, bottom = draw.textbbox((0, 0), box.label, font=font)
            ty = y1 - (bottom - top) - 4 if y1 - (bottom - top) - 4 >= 0 else y1 + line
            draw.rectangle([x1, ty, x1 + right - left + 4, ty + bottom - top + 4], fill=colour)
            draw.text((x1 + 2, ty + 2 - top), box.label, fill="white", font=font)
    return out
