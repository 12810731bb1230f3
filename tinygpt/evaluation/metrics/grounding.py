"""RefCOCO / RefCOCO+ / RefCOCOg referring-expression grounding: Acc@IoU>0.5.

The model answers with a box `{<x1><y1><x2><y2>}` whose integers live on a 0..99 grid over the
*resized* (square) image, the MiniGPT-v2 / TinyGPT-V convention.  Because the resize is a plain
stretch, grid values map back to original pixels as `v / 100 * width` for x and `v / 100 * height`
for y (MiniGPT-v2's eval_ref.py, `res = 100`).  The gold box is COCO's [x, y, w, h] in pixels.

IoU is the continuous COCO-style ratio of areas.  (MiniGPT-v2's `computeIoU` adds 1 to every
width/height, a pixel-inclusive convention; we do not.)  A prediction is correct when IoU > 0.5.
An answer without a parseable box is wrong and counted in `unparseable`.
"""
from __future__ import annotations

from typing import Any

from tinygpt.conversation.boxes import GRID, Box
from tinygpt.conversation.boxes import parse_box as first_box
from tinygpt.evaluation.formats import read_refcoco
from tinygpt.evaluation.metrics.base import Scorer, percent


def parse_box(text: str) -> tuple[int, int, int, int] | None:
    """The first `{<x1><y1><x2><y2>}` in `text` (the protocol's grammar, conversation/boxes.py), or
    None.  Values above GRID are not on the grid and make the answer unparseable."""
    box = first_box(text)
    if box is None or any(v > GRID for v in box):
        return None
    return box


def grid_box_to_pixels(box: tuple[int, int, int, int], width: float, height: float
                       ) -> tuple[float, float, float, float]:
    """Grid (x1, y1, x2, y2) -> original-image pixel (x1, y1, x2, y2)."""
    return Box(*box).pixels(width, height)


def iou_xyxy(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """Continuous IoU of two (x1, y1, x2, y2) boxes; a degenerate box has zero area."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    area_a = max(0.0, a[2] - a[0]) * max(0.0, a[3] - a[1])
    area_b = max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1])
    union = area_a + area_b - inter
    return inter / union if union > 0 else 0.0


def xywh_to_xyxy(box: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
    x, y, w, h = box
    return (x, y, x + w, y + h)


class RefCOCOScorer(Scorer):
    """One RefCOCO split file: Acc@IoU>0.5 (overall), mean IoU, unparseable answers."""

    name = "refcoco"
    metric = "acc@iou>0.5"

    def _score(self, pred: Any, ann: Any, ques: Any, compat: str | None) -> dict:
        items = read_refcoco(pred, ann)
        hits, ious, unparseable = [], [], 0
        for it in items:
            box = parse_box(it.pred)
            if box is None:
                unparseable += 1
                hits.append(0.0)
                ious.append(0.0)
                continue
            iou = iou_xyxy(grid_box_to_pixels(box, it.width, it.height), xywh_to_xyxy(it.bbox))
            ious.append(iou)
            hits.append(float(iou > 0.5))
        return {"overall": percent(hits), "n": len(hits),
                "breakdown": {"mean_iou": percent(ious), "unparseable": unparseable}}


class RefCOCOPlusScorer(RefCOCOScorer):
    name = "refcoco+"


class RefCOCOgScorer(RefCOCOScorer):
    name = "refcocog"
