"""Hateful Memes: AUROC of P("yes") (the challenge's headline metric) plus accuracy.

Each prediction carries `proba`, the model's probability that the answer to "is this meme
hateful?" is "yes" (e.g. softmax over the "yes"/"no" next-token logits), and optionally `label`,
its 0/1 decision; without `label` the decision is proba >= 0.5.  `--compat tinygptv` instead
reports TinyGPT-V's accuracy from the generated text (`answer` field, "yes"/"no" substrings).


"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from tinygpt.common.registry import registry
from tinygpt.evaluation.formats import EvalInputError, expect_list, load_json, match_predictions, require, source_name
from tinygpt.evaluation.metrics.base import Scorer, percent
from tinygpt.evaluation.metrics.ranking import auroc
from tinygpt.evaluation.metrics.tinygptv_compat import chat_answer
from tinygpt.evaluation.questions import Question, Source, Split, check_unique, cut, question_reader


@dataclass
class MemeItem:
    id: str
    label: int
    proba: float | None  # P("yes, hateful"), for AUROC
    pred_label: int | None
    answer: str | None  # the generated text, for --compat tinygptv


def read_predictions(pred: Any, ann: Any) -> list[MemeItem]:
    """Official Hateful Memes split (`dev_seen.jsonl`: {"id", "img", "label", "text"}) and
    predictions `[{"id", "proba", "label"?, "answer"?}]` mirroring the challenge submission columns
    (proba = P(hateful) = P("yes"); label = the 0/1 decision) plus the generated text."""
    ann_name, pred_name = source_name(ann, "annotations"), source_name(pred, "predictions")
    anns = expect_list(load_json(ann, "annotations"), ann_name)
    for i, a in enumerate(anns):
        require(a, "id", ann_name, i, (int, str))
        if require(a, "label", ann_name, i, int) not in (0, 1):
            raise EvalInputError(f"{ann_name}: entry {i} label must be 0 or 1")
    preds = expect_list(load_json(pred, "predictions"), pred_name)
    pairs = match_predictions(anns, preds, lambda a, i: str(a["id"]),
                              lambda p, i: str(require(p, "id", pred_name, i, (int, str))),
                              ann_name, pred_name, "id")
    items = []
    for a, p in pairs:
        pid = f"for id {a['id']!r}"
        proba = p.get("proba")
        if proba is not None:
            proba = float(require(p, "proba", pred_name, pid, (int, float)))
        label = p.get("label")
        if label is not None and require(p, "label", pred_name, pid, int) not in (0, 1):
            raise EvalInputError(f"{pred_name}: entry {pid} label must be 0 or 1")
        answer = p.get("answer")
        if answer is not None:
            require(p, "answer", pred_name, pid, str)
        items.append(MemeItem(str(a["id"]), a["label"], proba, label, answer))
    return items


@question_reader
def questions_to_ask(src: Source) -> Split:
    """Hateful Memes: dev_seen.jsonl lines {"id", "img": "img/01235.png", "text", "label"};
    images <img> under image_root (the dataset's data/ folder)."""
    path, data = src.load("annotations", fallback="questions", what="annotations")
    rows = cut(expect_list(data, path), src.bench.max_samples)
    questions = []
    for i, a in enumerate(rows):
        meme, img = require(a, "id", path, i, (int, str)), require(a, "img", path, i, str)
        questions.append(Question(str(meme), require(a, "text", path, i, str), {"id": meme},
                                  [img, os.path.basename(img)]))
    check_unique(questions, src, "annotations")
    src.find_images(questions)
    return Split(questions, path if src.bench.max_samples <= 0 else rows)


def hateful_memes_label(answer: str) -> int | None:
    """1 / 0 / None (unmatched) from the generated text."""
    text = chat_answer(answer).lower()
    if "yes" in text:
        return 1
    if "no" in text:
        return 0
    return None


@registry.register("benchmark", "hateful_memes")
class HatefulMemesScorer(Scorer):
    """Hateful Memes dev_seen / test_seen: AUROC (overall) and accuracy."""

    family = "vqa"
    mode, field, lower = "yes_no", "answer", True
    questions_to_ask = staticmethod(questions_to_ask)

    name = "hateful_memes"
    metric = "auroc"
    compat_modes = ("tinygptv",)

    def _score(self, pred: Any, ann: Any, ques: Any, compat: str | None) -> dict:
        items = read_predictions(pred, ann)
        if compat == "tinygptv":
            missing = next((it.id for it in items if it.answer is None), None)
            if missing is not None:
                raise EvalInputError(f"--compat tinygptv scores the generated text: prediction "
                                     f"for id {missing} has no 'answer' field")
            decided = [hateful_memes_label(it.answer) for it in items]
            hits = [float(d == it.label) for d, it in zip(decided, items)]
            return {"overall": percent(hits), "n": len(hits), "metric": "accuracy",
                    "breakdown": {"unmatched": sum(1 for d in decided if d is None)}}
        missing = next((it.id for it in items if it.proba is None), None)
        if missing is not None:
            raise EvalInputError(f"prediction for id {missing} has no 'proba' field (P(\"yes\")), "
                                 "which AUROC needs; --compat tinygptv scores text answers instead")
        labels = [it.label for it in items]
        if len(set(labels)) < 2:
            raise EvalInputError("AUROC needs both hateful and non-hateful memes in the annotations")
        decided = [it.pred_label if it.pred_label is not None else int(it.proba >= 0.5)
                   for it in items]
        accuracy = percent([float(d == y) for d, y in zip(decided, labels)])
        return {"overall": round(100 * auroc([it.proba for it in items], labels), 2),
                "n": len(items), "breakdown": {"accuracy": accuracy}}
