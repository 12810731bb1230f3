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
from typing import Any, Mapping, Sequence

from tinygpt.evaluation.formats import read_vqa
from tinygpt.evaluation.metrics import tinygptv_compat
from tinygpt.evaluation.metrics.base import Scorer, grouped_percent, percent, py2_round
from tinygpt.evaluation.metrics.vqa_normalize import clean_whitespace, normalize_answer


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


class VQAv2Scorer(Scorer):
    """VQAv2 val (or any split with public annotations): official VQA accuracy."""

    name = "vqav2"
    metric = "vqa_accuracy"

    def _score(self, pred: Any, ann: Any, ques: Any, compat: str | None) -> dict:
        return score_vqa_items(read_vqa(pred, ann, ques))


class OKVQAScorer(VQAv2Scorer):
    """OK-VQA uses the VQAv2 files' format and the same official accuracy (TinyGPT-V too);
    `--compat tinygptv` first post-processes the answers as TinyGPT-V's script does."""

    name = "okvqa"
    compat_modes = ("tinygptv",)

    def _score(self, pred: Any, ann: Any, ques: Any, compat: str | None) -> dict:
        items = read_vqa(pred, ann, ques)
        if compat == "tinygptv":
            items = [dataclasses.replace(it, prediction=tinygptv_compat.okvqa_answer(it.prediction)) for it in items]
        return score_vqa_items(items)
