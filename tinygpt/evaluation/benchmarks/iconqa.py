"""IconQA choose_txt accuracy: was the chosen candidate the gold one?

The candidate is chosen elsewhere (TinyGPT-V ranks the candidates by the model's loss on each);
this module only compares the chosen index with the gold index.  TinyGPT-V's own script does the
same comparison, so `--compat tinygptv` gives the same number.


"""
from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from tinygpt.common.registry import registry
from tinygpt.evaluation.formats import EvalInputError, expect_list, load_json, match_predictions, require, source_name
from tinygpt.evaluation.metrics.base import Scorer, grouped_percent, percent
from tinygpt.evaluation.questions import Question, Source, Split, check_unique, cut, question_reader


@dataclass
class ChoiceItem:
    question_id: str
    gold: int
    pred: int
    n_choices: int


def read_predictions(pred: Any, ann: Any, ques: Any = None, split: str = "test") -> list[ChoiceItem]:
    """IconQA choose_txt: which candidate was chosen (index) vs the gold index.

    `ann` is either the official `problems.json` ({pid: {"question", "choices", "answer": index,
    "ques_type"}}), in which case `ques` must be the official `pid_splits.json` and the pids of
    `choose_txt_<split>` are scored; or an already-filtered list `[{"question_id", "choices",
    "answer"}]` (MiniGPT-v2's eval file names the id `image_id`, accepted too).
    Predictions: `[{"question_id", "pred": index}]`.
    """
    ann_name, pred_name = source_name(ann, "annotations"), source_name(pred, "predictions")
    data = load_json(ann, "annotations")
    if isinstance(data, dict):
        if ques is None:
            raise EvalInputError(f"{ann_name} is IconQA's problems.json: also pass pid_splits.json "
                                 "(--ques) so the choose_txt test split is known")
        ques_name = source_name(ques, "pid_splits")
        splits = load_json(ques, "pid_splits")
        key = f"choose_txt_{split}"
        if not isinstance(splits, dict) or not isinstance(splits.get(key), list):
            raise EvalInputError(f"{ques_name}: no {key!r} list of problem ids")
        rows = []
        for pid in splits[key]:
            if str(pid) not in data:
                raise EvalInputError(f"{ann_name}: problem {pid} (listed in {ques_name}) is missing")
            rows.append(dict(data[str(pid)], question_id=str(pid)))
    else:
        rows = [dict(r, question_id=str(r.get("question_id", r.get("image_id"))))
                for r in expect_list(data, ann_name)]
    gold = []
    for i, r in enumerate(rows):
        if r["question_id"] == "None":
            raise EvalInputError(f"{ann_name}: entry {i} has no 'question_id' (or 'image_id') field")
        where = f"for problem {r['question_id']!r}"
        choices = require(r, "choices", ann_name, where, list)
        answer = require(r, "answer", ann_name, where, int)
        if not 0 <= answer < len(choices):
            raise EvalInputError(f"{ann_name}: entry {where} answer {answer} is not an "
                                 f"index into its {len(choices)} choices")
        gold.append(ChoiceItem(r["question_id"], answer, -1, len(choices)))
    preds = expect_list(load_json(pred, "predictions"), pred_name)
    pairs = match_predictions(gold, preds, lambda g, i: g.question_id,
                              lambda p, i: str(require(p, "question_id", pred_name, i, (str, int))),
                              ann_name, pred_name, "question_id")
    for g, p in pairs:
        g.pred = require(p, "pred", pred_name, f"for question_id {g.question_id!r}", int)
    return [g for g, _ in pairs]


@question_reader
def questions_to_ask(src: Source) -> Split:
    """IconQA choose_txt: `annotations` problems.json + `questions` pid_splits.json (the
    choose_txt_test problems), or `annotations` a pre-filtered list [{"question_id" | "image_id",
    "question", "choices", "answer"}].  Images: <pid>/image.png under image_root."""
    path, data = src.load("annotations", what="problems")
    full_ques = None
    if isinstance(data, dict):
        full_ques, splits = src.load("questions", what="pid_splits")
        pids = splits.get("choose_txt_test") if isinstance(splits, dict) else None
        if not isinstance(pids, list):
            raise EvalInputError(f"{full_ques}: no 'choose_txt_test' list of problem ids")
        rows = []
        for pid in pids:
            if str(pid) not in data:
                raise EvalInputError(f"{path}: problem {pid} (listed in {full_ques}) is missing")
            rows.append(dict(data[str(pid)], question_id=str(pid)))
    else:
        rows = [dict(r, question_id=str(r.get("question_id", r.get("image_id")))) for r in expect_list(data, path)]
    rows = cut(rows, src.bench.max_samples)
    questions = []
    for r in rows:
        where = f"for problem {r['question_id']!r}"
        choices = require(r, "choices", path, where, list)
        if not choices or not all(isinstance(c, str) for c in choices):
            raise EvalInputError(f"{path}: entry {where} 'choices' must be a non-empty list of strings")
        questions.append(Question(r["question_id"], require(r, "question", path, where, str),
                                  {"question_id": r["question_id"]},
                                  [os.path.join(r["question_id"], "image.png")], candidates=list(choices)))
    check_unique(questions, src, "annotations")
    src.find_images(questions)
    if src.bench.max_samples <= 0:
        return Split(questions, path, full_ques)
    return Split(questions, [{"question_id": r["question_id"], "choices": r["choices"], "answer": r.get("answer")}
                             for r in rows])


@registry.register("benchmark", "iconqa")
class IconQAScorer(Scorer):
    """IconQA choose_txt (test split): accuracy, and accuracy by number of candidates."""

    family = "vqa"
    mode, field, lower = "rank", "pred", False
    questions_to_ask = staticmethod(questions_to_ask)

    name = "iconqa"
    metric = "accuracy"
    compat_modes = ("tinygptv",)

    def _score(self, pred: Any, ann: Any, ques: Any, compat: str | None) -> dict:
        items = read_predictions(pred, ann, ques)
        hits = [float(it.pred == it.gold) for it in items]
        by_n: dict[str, list[float]] = defaultdict(list)
        for it, h in zip(items, hits):
            by_n[f"{it.n_choices}_choices"].append(h)
        return {"overall": percent(hits), "n": len(hits),
                "breakdown": {"per_num_choices": grouped_percent(by_n),
                              "out_of_range": sum(1 for it in items
                                                  if not 0 <= it.pred < it.n_choices)}}
