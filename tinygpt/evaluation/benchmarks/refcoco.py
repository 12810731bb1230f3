"""RefCOCO / RefCOCO+ / RefCOCOg referring-expression grounding: Acc@IoU>0.5.

The model answers with a box `{<x1><y1><x2><y2>}` whose integers live on a 0..99 grid over the
*resized* (square) image, the MiniGPT-v2 / TinyGPT-V convention.  Because the resize is a plain
stretch, grid values map back to original pixels as `v / 100 * width` for x and `v / 100 * height`
for y (MiniGPT-v2's eval_ref.py, `res = 100`).  The gold box is COCO's [x, y, w, h] in pixels.

The headline is this model family's protocol, MiniGPT-v2's `eval_ref.py` (which TinyGPT-V ships)
with the REFER toolkit's `computeIoU`:
* the answer is read as that script reads it: "<unk>" and every space removed, it must *start*
  with `{<d><d><d><d>}` (1-3 digits each, no range check), and every integer in the whole answer
  is taken -- an answer holding more than the box's four numbers fails there, a miss;
* IoU with the inclusive +1-pixel convention: widths and heights are x2 - x1 + 1;
* a hit when IoU > 0.5; n is the number of annotations.
`strict_acc@iou>0.5` in the breakdown is our stricter reading, reported beside it: the first box
anywhere in the answer (the protocol's grammar), values above 100 unparseable, and the continuous
IoU of areas (COCO's), so `{<10><10><20><30>}` against [10, 10, 20, 20] in a 100 x 100 image is a
hit by the protocol (IoU 231/441) and a miss by the strict reading (200/400 is not > 0.5).
(eval_ref.py keys its annotations by img_id, so images with several expressions keep only the
last; we score every expression against its own box.)


"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Hashable, Mapping

from tinygpt.common.registry import registry
from tinygpt.conversation.boxes import BOX, GRID, Box
from tinygpt.conversation.boxes import parse_box as first_box
from tinygpt.evaluation.formats import (EvalInputError, check_number, expect_list, load_json, match_predictions, require,
                                        source_name)
from tinygpt.evaluation.metrics.base import Scorer, percent
from tinygpt.evaluation.questions import Question, Source, Split, check_unique, cut, question_reader


@dataclass
class RefItem:
    key: Hashable  # the annotation's id, or (img_id, sents)
    bbox: tuple[float, float, float, float]  # gold [x, y, w, h] in original-image pixels
    width: float
    height: float
    pred: str


def read_predictions(pred: Any, ann: Any) -> list[RefItem]:
    """MiniGPT-v2's RefCOCO/+/g eval format: `[{"img_id", "sents", "bbox": [x, y, w, h], "height",
    "width"}]` (optionally an "id"); predictions `[{"img_id", "sents", "pred"}]`, or `[{"id", "pred"}]`
    when the annotations carry ids.  Without ids one (img_id, sents) may occur more than once; the
    n-th such annotation takes the n-th such prediction."""
    ann_name, pred_name = source_name(ann, "annotations"), source_name(pred, "predictions")
    anns = expect_list(load_json(ann, "annotations"), ann_name)
    preds = expect_list(load_json(pred, "predictions"), pred_name)
    by_id = bool(anns) and all("id" in a for a in anns) and all("id" in p for p in preds)

    def sents_key(v: Any, name: str, i: int) -> Any:
        if isinstance(v, list):
            return tuple(v)
        if not isinstance(v, str):
            raise EvalInputError(f"{name}: entry {i} field 'sents' must be a string or a list")
        return v

    def gold_key(a: Mapping, i: int) -> Hashable:
        if by_id:
            return a["id"]
        return (require(a, "img_id", ann_name, i, (int, str)),
                sents_key(require(a, "sents", ann_name, i), ann_name, i))

    def pred_key(p: Mapping, i: int) -> Hashable:
        if by_id:
            return p["id"]
        return (require(p, "img_id", pred_name, i, (int, str)),
                sents_key(require(p, "sents", pred_name, i), pred_name, i))

    for i, a in enumerate(anns):
        box = require(a, "bbox", ann_name, i, list)
        if len(box) != 4:
            raise EvalInputError(f"{ann_name}: entry {i} bbox must be [x, y, w, h], got {len(box)} values")
        for part, value in zip(("x", "y", "w", "h"), box):  # a box's width and height are never negative
            check_number(value, f"{ann_name}: entry {i} bbox {part}", low=0 if part in "wh" else None)
        for key in ("width", "height"):
            check_number(require(a, key, ann_name, i, (int, float)), f"{ann_name}: entry {i} {key}", low=0, above=True)
    pairs = match_predictions(anns, preds, gold_key, pred_key, ann_name, pred_name,
                              "id" if by_id else "(img_id, sents)", unique=by_id)
    items = []
    for i, (a, p) in enumerate(pairs):
        key = gold_key(a, i)
        items.append(RefItem(key, tuple(float(v) for v in a["bbox"]), float(a["width"]),
                             float(a["height"]), require(p, "pred", pred_name, f"for {key!r}", str)))
    return items


def _refcoco_image_names(img_id: Any) -> list[str]:
    if isinstance(img_id, int) or str(img_id).isdigit():
        return [f"COCO_train2014_{int(img_id):012d}.jpg"]
    # MiniGPT-v2's files suffix the COCO file stem (27 characters) with the ref's index
    return [f"{str(img_id)[:27]}.jpg", f"{img_id}.jpg"]


@question_reader
def questions_to_ask(src: Source) -> Split:
    """RefCOCO/+/g in MiniGPT-v2's eval format [{"img_id", "sents", "bbox", "height", "width", "id"?}];
    images <img_id[:27]>.jpg (COCO_train2014_<012d>.jpg) under image_root."""
    path, data = src.load("annotations", fallback="questions", what="annotations")
    rows = cut(expect_list(data, path), src.bench.max_samples)
    by_id = all("id" in a for a in rows)  # the scorer then matches predictions by id
    questions = []
    for i, a in enumerate(rows):
        img_id = require(a, "img_id", path, i, (int, str))
        sents = require(a, "sents", path, i, (str, list))
        phrase = sents if isinstance(sents, str) else (sents[0] if sents else "")
        if not isinstance(phrase, str):
            raise EvalInputError(f"{path}: entry {i} field 'sents' must be a string or a list of strings")
        record = {"id": a["id"]} if by_id else {"img_id": img_id, "sents": sents}
        questions.append(Question(str(a["id"]) if by_id else f"#{i}", phrase, record,
                                  _refcoco_image_names(img_id)))
    check_unique(questions, src, "annotations")
    src.find_images(questions)
    return Split(questions, path if src.bench.max_samples <= 0 else rows)


def minigptv2_box(answer: str) -> tuple[int, ...] | None:
    """The box as MiniGPT-v2's eval_ref.py reads `answer`, or None where it counts a miss."""
    text = answer.replace("<unk>", "").replace(" ", "").strip()
    if not BOX.match(text):
        return None
    numbers = tuple(int(n) for n in re.findall(r"\d+", text))
    return numbers if len(numbers) == 4 else None


def parse_box(text: str) -> tuple[int, int, int, int] | None:
    """The strict reading: the first `{<x1><y1><x2><y2>}` in `text` (the protocol's grammar,
    conversation/boxes.py), or None.  Values above GRID are not on the grid: unparseable."""
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


def iou_inclusive(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """The REFER toolkit's `computeIoU` (MiniGPT-v2's copy): pixel-inclusive, +1 on every side."""
    inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0]) + 1) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]) + 1)
    union = (a[2] - a[0] + 1) * (a[3] - a[1] + 1) + (b[2] - b[0] + 1) * (b[3] - b[1] + 1) - inter
    return inter / union if union else 0.0


def xywh_to_xyxy(box: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
    x, y, w, h = box
    return (x, y, x + w, y + h)


@registry.register("benchmark", "refcoco")
class RefCOCOScorer(Scorer):
    """One RefCOCO split file: Acc@IoU>0.5 by MiniGPT-v2's protocol (overall) and by the strict
    reading (breakdown), mean strict IoU, answers each reading could not use."""

    family = "ref"
    mode, field, lower = "generate", "pred", False
    questions_to_ask = staticmethod(questions_to_ask)

    name = "refcoco"
    metric = "acc@iou>0.5"

    def _score(self, pred: Any, ann: Any, ques: Any, compat: str | None) -> dict:
        items = read_predictions(pred, ann)
        hits, strict, ious, unread, unparseable = [], [], [], 0, 0
        for it in items:
            gold = xywh_to_xyxy(it.bbox)
            box = minigptv2_box(it.pred)
            unread += box is None
            hits.append(float(box is not None and iou_inclusive(grid_box_to_pixels(box, it.width, it.height), gold) > 0.5))
            box = parse_box(it.pred)
            if box is None:
                unparseable += 1
                strict.append(0.0)
                ious.append(0.0)
                continue
            iou = iou_xyxy(grid_box_to_pixels(box, it.width, it.height), gold)
            ious.append(iou)
            strict.append(float(iou > 0.5))
        return {"overall": percent(hits), "n": len(hits),
                "breakdown": {"strict_acc@iou>0.5": percent(strict), "mean_iou": percent(ious),
                              "not_read_by_protocol": unread, "unparseable": unparseable}}


@registry.register("benchmark", "refcoco+")
class RefCOCOPlusScorer(RefCOCOScorer):
    name = "refcoco+"


@registry.register("benchmark", "refcocog")
class RefCOCOgScorer(RefCOCOScorer):
    name = "refcocog"
