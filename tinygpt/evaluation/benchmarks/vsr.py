"""VSR (Visual Spatial Reasoning) true/false accuracy.

The prediction is parsed strictly: after lower-casing, stripping whitespace and trailing
". ! ," it must be exactly "yes"/"true" (the caption holds) or "no"/"false" (it does not).
Anything else ("yes, it is", "maybe", "") is counted wrong and reported as `unparseable`, so a
model that rambles cannot hide behind a substring match.  `--compat tinygptv` applies TinyGPT-V's
substring rule instead (see `tinygptv_compat`).


"""
from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from tinygpt.common.registry import registry
from tinygpt.evaluation.formats import EvalInputError, expect_list, load_json, match_predictions, require, source_name
from tinygpt.evaluation.metrics.base import Scorer, grouped_percent, percent
from tinygpt.evaluation.metrics.tinygptv_compat import generated
from tinygpt.evaluation.questions import Question, Source, Split, cut, question_reader


@dataclass
class VSRItem:
    image: str
    caption: str
    label: int  # 1 = the caption is true of the image
    relation: str
    prediction: str


def read_predictions(pred: Any, ann: Any) -> list[VSRItem]:
    """Official VSR split file (`test.jsonl`: {"image", "caption", "label": 0/1, "relation", ...})
    and predictions `[{"image", "caption", "pred"}]` matched on (image, caption)."""
    ann_name, pred_name = source_name(ann, "annotations"), source_name(pred, "predictions")
    anns = expect_list(load_json(ann, "annotations"), ann_name)
    for i, a in enumerate(anns):
        require(a, "image", ann_name, i, str)
        require(a, "caption", ann_name, i, str)
        if require(a, "label", ann_name, i, int) not in (0, 1):
            raise EvalInputError(f"{ann_name}: entry {i} label must be 0 or 1")
    preds = expect_list(load_json(pred, "predictions"), pred_name)
    pairs = match_predictions(
        anns, preds, lambda a, i: (a["image"], a["caption"]),
        lambda p, i: (require(p, "image", pred_name, i, str), require(p, "caption", pred_name, i, str)),
        ann_name, pred_name, "(image, caption)", unique=False)
    return [VSRItem(a["image"], a["caption"], a["label"], str(a.get("relation", "")),
                    require(p, "pred", pred_name, f"for image {a['image']!r}", str)) for a, p in pairs]


@question_reader
def questions_to_ask(src: Source) -> Split:
    """VSR: test.jsonl lines {"image", "caption", "label"}; images <image> under image_root, or
    under its train2017/ or val2017/ folders (COCO 2017 as downloaded)."""
    path, data = src.load("annotations", fallback="questions", what="annotations")
    rows = cut(expect_list(data, path), src.bench.max_samples)
    questions = []
    for i, a in enumerate(rows):
        image, caption = require(a, "image", path, i, str), require(a, "caption", path, i, str)
        # (image, caption) may repeat, so the line number is the stable key
        questions.append(Question(f"#{i}", caption, {"image": image, "caption": caption},
                                  [image, os.path.join("train2017", image), os.path.join("val2017", image)]))
    src.find_images(questions)
    return Split(questions, path if src.bench.max_samples <= 0 else rows)


def vsr_answer(raw: str) -> str:
    return generated(raw).replace("<unk>", "").strip()


def vsr_hits(prediction: str, label: int) -> int:
    """0, 1 or 2 (sic) hits for one VSR prediction; `label` 1 = true, 0 = false."""
    text = vsr_answer(prediction).lower()
    word, synonym = ("true", "yes") if label == 1 else ("false", "no")
    return int(word in text) + int(synonym in text)


_TRUE = {"yes", "true"}
_FALSE = {"no", "false"}


def parse_true_false(prediction: str) -> int | None:
    """1 for yes/true, 0 for no/false, None for anything else."""
    word = prediction.strip().lower().rstrip(".!,").strip()
    if word in _TRUE:
        return 1
    if word in _FALSE:
        return 0
    return None


@registry.register("benchmark", "vsr")
class VSRScorer(Scorer):
    """VSR (zero-shot or random split test.jsonl): accuracy, per relation, unparseable count."""

    family = "vqa"
    mode, field, lower = "generate", "pred", True
    questions_to_ask = staticmethod(questions_to_ask)

    name = "vsr"
    metric = "accuracy"
    compat_modes = ("tinygptv",)

    def _score(self, pred: Any, ann: Any, ques: Any, compat: str | None) -> dict:
        items = read_predictions(pred, ann)
        if compat == "tinygptv":
            hits = [vsr_hits(it.prediction, it.label) for it in items]
            # hits may be 2 for one item: TinyGPT-V's figure is sum(hits) / n, uncapped.
            return {"overall": percent(hits), "n": len(hits),
                    "breakdown": {"double_counted": sum(1 for h in hits if h == 2)}}
        parsed = [parse_true_false(it.prediction) for it in items]
        hits = [float(p == it.label) for p, it in zip(parsed, items)]
        by_relation: dict[str, list[float]] = defaultdict(list)
        for it, h in zip(items, hits):
            if it.relation:
                by_relation[it.relation].append(h)
        breakdown: dict[str, Any] = {"unparseable": sum(1 for p in parsed if p is None)}
        if by_relation:
            breakdown["per_relation"] = grouped_percent(by_relation)
        return {"overall": percent(hits), "n": len(hits), "breakdown": breakdown}
