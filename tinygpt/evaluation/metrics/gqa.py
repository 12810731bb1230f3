"""GQA, the official `eval.py`'s figures (computed as it computes them, from the files it reads).

A prediction is right when it equals the gold answer exactly (no case folding, no stripping;
the generation side should emit the bare lower-case answer).  Only balanced questions count.
Percentages are eval.py's `avg(scores) * 100`, printed to 2 decimals.

* binary / open: a question is *open* when `types.structural == "query"` and *binary* otherwise
  (verify, logical, choose, compare), exactly as eval.py does ("choose" questions, "red or blue?",
  are binary although their answers are not yes/no); without `types` we fall back to binary iff the
  gold answer is yes/no.
* per structural / semantic type, per reasoning steps (the program's operations, less "exist",
  "query: name" and "choose name") and per words number, where the questions file has them.
* consistency: over the balanced questions answered right that entail others, the mean accuracy on
  their entailed questions (mostly unbalanced: it needs predictions for all_questions); skipped with
  a note when predictions for entailed questions are missing.
* distribution: chi-square between the gold and the predicted answer histograms of each
  `groups.global` group, weighted by the group's size, / 100 (lower is better).
* validity / plausibility: the prediction is in the question's `valid` / `plausible` answers of the
  choices file (`--ques` / the benchmark's `annotations`; "Common" questions: color, material or
  shape), as eval.py; without a choices file (testdev has none) they are not reported.
(Grounding needs attention maps and scene graphs and is not computed.)
"""
from __future__ import annotations

from collections import defaultdict
from typing import Any

from tinygpt.evaluation.formats import EvalInputError, GQAItem, GQASplit, load_json, read_gqa, source_name
from tinygpt.evaluation.metrics import tinygptv_compat
from tinygpt.evaluation.metrics.base import Scorer, percent


def gqa_answer_kind(item: GQAItem) -> str:
    """"binary" or "open" (see module docstring for the rule)."""
    if item.structural is not None:
        return "open" if item.structural == "query" else "binary"
    return "binary" if item.answer in ("yes", "no") else "open"


def _pct(values: list[float]) -> float:
    """eval.py's `avg(l) * 100` (0 for an empty list), to 2 decimals."""
    return round((float(sum(values)) / len(values) if values else 0.0) * 100, 2)


def _grouped(groups: dict) -> dict:
    return {str(k): _pct(groups[k]) for k in sorted(groups)}


_NOT_A_STEP = ("exist", "query: name", "choose name")


def reasoning_steps(program: list) -> int:
    """eval.py's steps number: operations of the program, less those that add no reasoning."""
    return len([op for op in program
                if not any(o in f"{op.get('operation')}: {op.get('argument')}" for o in _NOT_A_STEP)])


def chi_square(gold: dict, predicted: dict) -> float:
    """Per group: sum over gold answers of (predicted - gold)^2 / gold; averaged weighted by the
    group's question count (eval.py's `chiSquare`)."""
    total, weight = 0.0, 0
    for group, answers in gold.items():
        score = sum((float(predicted[group].get(a, 0) - e) ** 2) / e for a, e in answers.items())
        n = sum(answers.values())
        total, weight = total + score * n, weight + n
    return total / weight if weight else 0.0


def _belongs(prediction: str, answers: list, item: GQAItem) -> bool:
    if item.detailed and "Common" in item.detailed:
        answers = ["color", "material", "shape"]
    return prediction in answers


class GQAScorer(Scorer):
    """GQA testdev/val balanced: exact-match accuracy and the other figures of eval.py."""

    name = "gqa"
    metric = "accuracy"
    compat_modes = ("tinygptv",)

    def _score(self, pred: Any, ann: Any, ques: Any, compat: str | None) -> dict:
        # GQA's answers live in its questions file: --ann is that file; --ques, optional, the choices.
        split = read_gqa(pred, ann)
        items = split.items
        if compat == "tinygptv":
            hits = [tinygptv_compat.gqa_hit(it.prediction, it.answer) for it in items]
            return {"overall": percent([float(h) for h in hits]), "n": len(items), "breakdown": {}}
        scores = [float(it.prediction == it.answer) for it in items]
        kinds: dict[str, list[float]] = defaultdict(list)
        per: dict[str, dict] = {k: defaultdict(list) for k in ("structural", "semantic", "steps", "words")}
        gold_dist: dict = defaultdict(lambda: defaultdict(int))
        pred_dist: dict = defaultdict(lambda: defaultdict(int))
        for it, s in zip(items, scores):
            kinds[gqa_answer_kind(it)].append(s)
            for key, value in (("structural", it.structural), ("semantic", it.semantic),
                               ("steps", reasoning_steps(it.program) if isinstance(it.program, list) else None),
                               ("words", len(it.text.split()) if isinstance(it.text, str) else None)):
                if value is not None:
                    per[key][value].append(s)
            if it.group is not None:
                gold_dist[it.group][it.answer] += 1
                pred_dist[it.group][it.prediction] += 1
        # a split with no questions is left out rather than shown as 0.00
        breakdown: dict[str, Any] = {k: _pct(kinds[k]) for k in ("binary", "open") if kinds[k]}
        notes: list[str] = []
        consistency = self._consistency(split, scores, notes)
        if consistency is not None:
            breakdown["consistency"] = consistency
        if ques is not None:
            breakdown.update(self._validity(items, load_json(ques, "choices"), source_name(ques, "choices")))
        if gold_dist:
            breakdown["distribution"] = round(chi_square(gold_dist, pred_dist) / 100, 2)
        for key, name in (("structural", "per_structural_type"), ("semantic", "per_semantic_type"),
                          ("steps", "per_steps_number"), ("words", "per_words_number")):
            if per[key]:
                breakdown[name] = _grouped(per[key])
        return {"overall": _pct(scores), "n": len(scores), "breakdown": breakdown, "notes": notes}

    @staticmethod
    def _consistency(split: GQASplit, scores: list[float], notes: list[str]) -> float | None:
        if not any(it.entailed for it in split.items):
            return None
        per_question = []
        for it, right in zip(split.items, scores):
            others = [e for e in (it.entailed or []) if str(e) != it.question_id]
            if not right or not others:
                continue
            missing = [e for e in others if str(e) not in split.predictions or str(e) not in split.answers]
            if missing:
                notes.append(f"consistency skipped: no prediction (or question) for entailed question "
                             f"{missing[0]} of {it.question_id}; it needs answers to all_questions")
                return None
            per_question.append(sum(float(split.predictions[str(e)] == split.answers[str(e)]) for e in others)
                                / len(others))
        return _pct(per_question)

    @staticmethod
    def _validity(items: list[GQAItem], choices: Any, name: str) -> dict:
        if not isinstance(choices, dict):
            raise EvalInputError(f"{name}: expected a JSON object {{questionId: {{valid, plausible}}}}")
        out = {}
        for field in ("valid", "plausible"):
            hits = []
            for it in items:
                entry = choices.get(it.question_id)
                if not isinstance(entry, dict) or not isinstance(entry.get(field), list):
                    raise EvalInputError(f"{name}: no '{field}' list for question {it.question_id!r}")
                hits.append(float(_belongs(it.prediction, entry[field], it)))
            out["validity" if field == "valid" else "plausibility"] = _pct(hits)
        return out
