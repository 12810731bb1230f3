"""VizWiz-VQA accuracy and answerability, as the official VizWiz evaluation computes them.

Accuracy differs from VQAv2's (`benchmarks/vqa.py`) in three ways, all taken from the VizWiz script:
the prediction is *always* normalised (punctuation, digits, articles, contractions with VizWiz's
own typographic-apostrophe table) whatever the humans answered; the human answers are used as
written (only the prediction is normalised); and the leave-one-out drops one answer by position.
Per question: mean over the ten left-out answers of min(#remaining equal answers / 3, 1).

Answerability follows the official `evaluate_unanswerability`: *unanswerable* is the positive
class, scored by 1 - P(answerable); we report its average precision (the headline answerability
figure) and the F1 of `1 - P(answerable) > 0.5`.  P(answerable) is the result's `answerable`
field when present (a probability or 0/1); otherwise it is 0 when the normalised answer is
"unanswerable" and 1 for any other answer.


"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from tinygpt.common.registry import registry
from tinygpt.evaluation.formats import (EvalInputError, expect_list, load_json, match_predictions, require,
                                        require_answers, source_name)
from tinygpt.evaluation.metrics.base import Scorer, grouped_percent, percent
from tinygpt.evaluation.metrics.ranking import average_precision, f1_binary
from tinygpt.evaluation.metrics.tinygptv_compat import chat_answer
from tinygpt.evaluation.metrics.vqa_normalize import normalize_answer
from tinygpt.evaluation.questions import Question, Source, Split, check_unique, cut, question_reader


@dataclass
class VizWizItem:
    image: str
    answers: list[dict]
    answer_type: str
    answerable: int
    prediction: str
    pred_answerable: float | None  # P(answerable) or 0/1 when the results carry it


def read_predictions(pred: Any, ann: Any) -> list[VizWizItem]:
    """Official VizWiz-VQA files: annotations `[{"image", "question", "answers": [{"answer",
    "answer_confidence"}], "answer_type", "answerable"}]`; results `[{"image", "answer"}]`, optionally
    with `"answerable"` (a probability or 0/1) for the answerability task."""
    ann_name, pred_name = source_name(ann, "annotations"), source_name(pred, "results")
    anns = expect_list(load_json(ann, "annotations"), ann_name)
    for i, a in enumerate(anns):
        require(a, "image", ann_name, i, str)
        require(a, "answer_type", ann_name, i, str)
        require(a, "answerable", ann_name, i, int)
        require_answers(a, ann_name, i)
    preds = expect_list(load_json(pred, "results"), pred_name)
    pairs = match_predictions(anns, preds, lambda a, i: a["image"],
                              lambda p, i: require(p, "image", pred_name, i, str),
                              ann_name, pred_name, "image")
    items = []
    for a, p in pairs:
        answerable = p.get("answerable")
        if answerable is not None:
            answerable = float(require(p, "answerable", pred_name, f"for image {a['image']!r}",
                                         (int, float)))
        items.append(VizWizItem(a["image"], a["answers"], a["answer_type"], a["answerable"],
                                require(p, "answer", pred_name, f"for image {a['image']!r}", str),
                                answerable))
    return items


@question_reader
def questions_to_ask(src: Source) -> Split:
    """VizWiz-VQA: val.json [{"image", "question", "answers", ...}]; images <image> under image_root."""
    path, data = src.load("annotations", fallback="questions", what="annotations")
    rows = cut(expect_list(data, path), src.bench.max_samples)
    questions = []
    for i, a in enumerate(rows):
        image = require(a, "image", path, i, str)
        questions.append(Question(image, require(a, "question", path, i, str), {"image": image}, [image]))
    check_unique(questions, src, "annotations")
    src.find_images(questions)
    return Split(questions, path if src.bench.max_samples <= 0 else rows)


def tinygptv_accuracy(prediction: str, answers: Sequence[str]) -> float:
    """Lenient per-question VizWiz accuracy in [0, 1]."""
    pred = chat_answer(prediction).lower()
    pieces = "_".join(answers).split("_")
    count = sum(1 for gt in (p.lower() for p in pieces) if gt == pred or gt in pred or pred in gt)
    return min(count / 3.0, 1.0)


def vizwiz_normalize(prediction: str) -> str:
    return normalize_answer(prediction, "vizwiz")


def vizwiz_accuracy(prediction: str, answers: Sequence[Mapping | str]) -> float:
    """Official VizWiz accuracy in [0, 1] of one prediction against the human answers."""
    gts = [a["answer"] if isinstance(a, Mapping) else a for a in answers]
    pred = vizwiz_normalize(prediction)
    per_left_out = []
    for i in range(len(gts)):
        matches = sum(1 for j, gt in enumerate(gts) if j != i and gt == pred)
        per_left_out.append(min(1, float(matches) / 3))
    return float(sum(per_left_out)) / len(per_left_out)


def answerability(p_answerable: Sequence[float], answerable: Sequence[int]) -> dict[str, float]:
    """{"average_precision", "f1"} in percent, unanswerable as the positive class."""
    gold_unanswerable = [1 - a for a in answerable]
    score_unanswerable = [1.0 - p for p in p_answerable]
    if not any(gold_unanswerable):
        raise EvalInputError("VizWiz answerability needs at least one unanswerable question")
    return {
        "average_precision": round(100 * average_precision(score_unanswerable, gold_unanswerable), 2),
        "f1": round(100 * f1_binary([int(s > 0.5) for s in score_unanswerable], gold_unanswerable), 2),
    }


@registry.register("benchmark", "vizwiz")
class VizWizScorer(Scorer):
    """VizWiz-VQA val: official accuracy (overall, per answer type) and answerability."""

    family = "vqa"
    mode, field, lower = "generate", "answer", True
    questions_to_ask = staticmethod(questions_to_ask)

    name = "vizwiz"
    metric = "vqa_accuracy"
    compat_modes = ("tinygptv",)

    def _score(self, pred: Any, ann: Any, ques: Any, compat: str | None) -> dict:
        items = read_predictions(pred, ann)
        if compat == "tinygptv":
            accs = [tinygptv_accuracy(it.prediction, [a["answer"] for a in it.answers])
                    for it in items]
            return {"overall": percent(accs), "n": len(accs), "breakdown": {}}
        accs = [vizwiz_accuracy(it.prediction, it.answers) for it in items]
        by_type: dict[str, list[float]] = defaultdict(list)
        for it, acc in zip(items, accs):
            by_type[it.answer_type].append(acc)
        p_answerable = [it.pred_answerable if it.pred_answerable is not None
                        else float(vizwiz_normalize(it.prediction) != "unanswerable") for it in items]
        breakdown: dict[str, Any] = {"per_answer_type": grouped_percent(by_type, py2=True)}
        notes = []
        if any(it.answerable == 0 for it in items):
            breakdown["answerability"] = answerability(p_answerable, [it.answerable for it in items])
        else:
            notes.append("answerability skipped: no unanswerable question in the annotations")
        return {"overall": percent(accs, py2=True), "n": len(accs), "breakdown": breakdown, "notes": notes}
