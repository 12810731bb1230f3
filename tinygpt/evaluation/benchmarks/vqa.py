"""VQA accuracy for VQAv2 and OK-VQA, as GT-Vision-Lab's official `vqaEval.py` computes it.

Per question, with the ten human answer entries:

1. Newlines/tabs become spaces and both the prediction and the human answers are stripped.
2. Only if the (whitespace-cleaned) human answers are *not all identical* are the answers and
   the prediction normalised (`vqa_normalize.normalize_answer`).  When all ten agree nothing
   else happens: "Yes" scores 0 against ten "yes", and so does "yes.".
3. For each of the ten entries, leave that entry out and count the remaining entries whose answer
   equals the prediction: min(count / 3, 1).  The question's accuracy is the mean of those ten.
   The official code leaves out by *entry* (`item != gtAnsDatum` on whole answer dicts), so
   two byte-identical entries, answer_id included, would leave together; official files have
   distinct answer_ids so this is one entry at a time.  Example: a prediction that 2 of 10
   humans gave scores (2 x 1/3 + 8 x 2/3) / 10 = 0.6.

Overall, per answer type and per question type are means x100, rounded to 2 decimals with Python
2's `round` (half away from zero), as the official Python 2 script rounds; `per_question` holds each
question's accuracy x100 rounded the same way (the official `evalQA`).


"""
from __future__ import annotations

import dataclasses
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from tinygpt.common.registry import registry
from tinygpt.evaluation.formats import (EvalInputError, expect_list, index_unique, load_json, match_predictions, require,
                                        require_answers, source_name)
from tinygpt.evaluation.metrics.base import Scorer, grouped_percent, percent, py2_round
from tinygpt.evaluation.metrics.tinygptv_compat import generated
from tinygpt.evaluation.metrics.vqa_normalize import clean_whitespace, normalize_answer
from tinygpt.evaluation.questions import Question, Source, Split, check_unique, cut, question_reader
from tinygpt.evaluation.questions import coco_image_names


@dataclass
class VQAItem:
    """One VQAv2 / OK-VQA question: its ten answer entries (dicts, as in the file) and the prediction."""
    question_id: int
    answers: list[dict]
    question_type: str
    answer_type: str
    prediction: str


def read_predictions(pred: Any, ann: Any, ques: Any = None) -> list[VQAItem]:
    """Official VQA files: annotations `{"annotations": [...]}`, questions `{"questions": [...]}`
    (optional; only checked to cover the same question ids) and results `[{"question_id", "answer"}]`.
    """
    ann_name, pred_name = source_name(ann, "annotations"), source_name(pred, "results")
    anns = expect_list(load_json(ann, "annotations"), ann_name, "annotations")
    for i, a in enumerate(anns):
        require(a, "question_id", ann_name, i, int)
        for key in ("question_type", "answer_type"):
            require(a, key, ann_name, i, str)
        require_answers(a, ann_name, i)
    if ques is not None:
        ques_name = source_name(ques, "questions")
        qs = expect_list(load_json(ques, "questions"), ques_name, "questions")
        q_ids = set(index_unique(qs, lambda q, i: require(q, "question_id", ques_name, i, int),
                                 ques_name, "question_id"))
        a_ids = {a["question_id"] for a in anns}
        stray = next(iter(sorted(a_ids ^ q_ids)), None)
        if stray is not None:
            where = ann_name if stray in a_ids else ques_name
            raise EvalInputError(f"question_id {stray} is only in {where}: the questions and "
                                 "annotations files are from different splits")
    preds = expect_list(load_json(pred, "results"), pred_name)
    pairs = match_predictions(
        anns, preds, lambda a, i: a["question_id"],
        lambda p, i: require(p, "question_id", pred_name, i, int),
        ann_name, pred_name, "question_id")
    return [VQAItem(a["question_id"], a["answers"], a["question_type"], a["answer_type"],
                    require(p, "answer", pred_name, f"for question_id {a['question_id']}", str)) for a, p in pairs]



@question_reader
def questions_to_ask(src: Source) -> Split:
    """VQAv2 / OK-VQA: `questions` {"questions": [...], "data_subtype"}, `annotations` (optional:
    without them, e.g. VQAv2 test-dev, predictions are written for EvalAI but not scored).
    Images: COCO_<data_subtype>_<image_id:012d>.jpg under image_root."""
    path, ques = src.load("questions", what="questions")
    rows = cut(expect_list(ques, path, "questions"), src.bench.max_samples)
    # test-dev2015 questions are about COCO test2015 images
    subset = str(ques.get("data_subtype", "val2014")).replace("test-dev", "test")
    questions = []
    for i, q in enumerate(rows):
        qid = require(q, "question_id", path, i, int)
        image_id = require(q, "image_id", path, i, (int, str))
        questions.append(Question(str(qid), require(q, "question", path, i, str), {"question_id": qid},
                                  coco_image_names(image_id, subset)))
    check_unique(questions, src, "questions")
    src.find_images(questions)
    ann_path = src.path("annotations", required=False)
    if ann_path is None:
        return Split(questions, None, None, scorable=False)
    if src.bench.max_samples <= 0:
        return Split(questions, ann_path, path)
    keep = {q.record["question_id"] for q in questions}
    _, ann = src.load("annotations", what="annotations")
    ann_rows = [a for a in expect_list(ann, ann_path, "annotations") if a.get("question_id") in keep]
    return Split(questions, {**ann, "annotations": ann_rows}, {**ques, "questions": rows})


def okvqa_answer(raw: str) -> str:
    text = generated(raw).lower().replace("<unk>", "").strip().split("###")[0]
    return text.split("Assistant:")[-1].strip()


def _as_entries(answers: Sequence[Mapping | str]) -> list[dict]:
    """Answer entries as dicts; bare strings get their position as answer_id (distinct entries)."""
    return [dict(a) if isinstance(a, Mapping) else {"answer": a, "answer_id": i}
            for i, a in enumerate(answers)]


def vqa_accuracy(prediction: str, answers: Sequence[Mapping | str]) -> float:
    """Official accuracy in [0, 1] of one prediction against the human answers.

    `answers` are the annotation's answer entries (dicts with at least "answer", as in the
    official file) or plain strings.  See the module docstring for the rule.
    """
    entries = _as_entries(answers)
    for e in entries:
        e["answer"] = clean_whitespace(e["answer"])
    pred = clean_whitespace(prediction)
    if len({e["answer"] for e in entries}) > 1:
        for e in entries:
            e["answer"] = normalize_answer(e["answer"])
        pred = normalize_answer(pred)
    per_left_out = []
    for left_out in entries:
        matches = sum(1 for e in entries if e != left_out and e["answer"] == pred)
        per_left_out.append(min(1, float(matches) / 3))
    return float(sum(per_left_out)) / len(per_left_out)


def score_vqa_items(items: Sequence[Any]) -> dict:
    """Aggregate `formats.VQAItem`s into overall / per answer type / per question type."""
    accs = []
    per_question: dict[str, float] = {}
    by_answer_type: dict[str, list[float]] = defaultdict(list)
    by_question_type: dict[str, list[float]] = defaultdict(list)
    for it in items:
        acc = vqa_accuracy(it.prediction, it.answers)
        accs.append(acc)
        per_question[str(it.question_id)] = py2_round(100 * acc, 2)
        by_answer_type[it.answer_type].append(acc)
        by_question_type[it.question_type].append(acc)
    return {"overall": percent(accs, py2=True), "n": len(accs), "per_question": per_question,
            "breakdown": {"per_answer_type": grouped_percent(by_answer_type, py2=True),
                          "per_question_type": grouped_percent(by_question_type, py2=True)}}


@registry.register("benchmark", "vqav2")
class VQAv2Scorer(Scorer):
    """VQAv2 val (or any split with public annotations): official VQA accuracy."""

    family = "vqa"
    mode, field, lower = "generate", "answer", True
    questions_to_ask = staticmethod(questions_to_ask)

    name = "vqav2"
    metric = "vqa_accuracy"

    def _score(self, pred: Any, ann: Any, ques: Any, compat: str | None) -> dict:
        return score_vqa_items(read_predictions(pred, ann, ques))


@registry.register("benchmark", "okvqa")
class OKVQAScorer(VQAv2Scorer):
    """OK-VQA uses the VQAv2 files' format and the same official accuracy (TinyGPT-V too);
    `--compat tinygptv` first post-processes the answers as TinyGPT-V's script does."""

    name = "okvqa"
    compat_modes = ("tinygptv",)

    def _score(self, pred: Any, ann: Any, ques: Any, compat: str | None) -> dict:
        items = read_predictions(pred, ann, ques)
        if compat == "tinygptv":
            items = [dataclasses.replace(it, prediction=okvqa_answer(it.prediction)) for it in items]
        return score_vqa_items(items)
