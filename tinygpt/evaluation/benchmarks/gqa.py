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
from dataclasses import dataclass
from typing import Any

from tinygpt.common.registry import registry
from tinygpt.evaluation.formats import EvalInputError, expect_list, load_json, match_predictions, require, source_name
from tinygpt.evaluation.metrics.base import Scorer, percent
from tinygpt.evaluation.metrics.tinygptv_compat import generated
from tinygpt.evaluation.questions import Question, Source, Split, cut, question_reader


@dataclass
class GQAItem:
    question_id: str
    answer: str
    structural: str | None  # official types.structural (verify/query/choose/logical/compare)
    semantic: str | None
    prediction: str
    detailed: str | None = None  # types.detailed ("...Common..." changes the validity rule)
    group: str | None = None  # groups.global: the answer-distribution group
    text: str | None = None  # the question (eval.py's words number)
    program: list | None = None  # "semantic": the reasoning steps
    entailed: list | None = None  # questions whose answers follow from this one's


@dataclass
class GQASplit:
    """The balanced questions to score, and every question's gold answer and prediction (the
    entailed questions of consistency are mostly unbalanced)."""
    items: list[GQAItem]
    answers: dict[str, str]
    predictions: dict[str, str]


def read_predictions(pred: Any, ques: Any) -> GQASplit:
    """Official GQA questions `{qid: {"imageId", "question", "answer", "types": {...}, "isBalanced"}}`
    and predictions `[{"questionId", "prediction"}]`.

    Like the official eval.py only balanced questions are scored; a question without an
    `isBalanced` field counts as balanced (the *_balanced_questions.json files are all balanced).
    Predictions for unbalanced questions are kept aside (consistency reads them).
    """
    q_name, pred_name = source_name(ques, "questions"), source_name(pred, "predictions")
    qs = load_json(ques, "questions")
    if not isinstance(qs, dict):
        raise EvalInputError(f"{q_name}: expected a JSON object {{questionId: question}}")
    gold, unbalanced = [], set()
    for qid, q in qs.items():
        if not isinstance(q, dict):
            raise EvalInputError(f"{q_name}: question {qid} is not an object")
        if not q.get("isBalanced", True):
            unbalanced.add(str(qid))  # predictions for these are allowed and ignored
            continue
        types = q.get("types") or {}
        if not isinstance(types, dict):
            raise EvalInputError(f"{q_name}: question {qid} field 'types' is not an object")
        groups = q.get("groups") if isinstance(q.get("groups"), dict) else {}
        gold.append(GQAItem(str(qid), require(q, "answer", q_name, f"for question {qid!r}", str),
                            types.get("structural"), types.get("semantic"), "", types.get("detailed"),
                            groups.get("global"), q.get("question"), q.get("semantic"), q.get("entailed")))
    rows = expect_list(load_json(pred, "predictions"), pred_name)
    every = {str(require(p, "questionId", pred_name, i, (str, int))):
             require(p, "prediction", pred_name, f"for questionId {p.get('questionId')!r}", str)
             for i, p in enumerate(rows)}
    preds = [p for i, p in enumerate(rows) if str(p["questionId"]) not in unbalanced]
    pairs = match_predictions(gold, preds, lambda g, i: g.question_id, lambda p, i: str(p["questionId"]),
                              q_name, pred_name, "questionId")
    for g, p in pairs:
        g.prediction = p["prediction"]
    answers = {str(qid): q["answer"] for qid, q in qs.items() if isinstance(q.get("answer"), str)}
    return GQASplit([g for g, _ in pairs], answers, every)


@question_reader
def questions_to_ask(src: Source) -> Split:
    """GQA: the questions file {questionId: {"imageId", "question", "answer", "isBalanced"}} (it is
    also the scorer's annotations; `annotations`, when `questions` is set, is the choices file).  Only balanced questions are asked, as only they are scored.
    Images: <imageId>.jpg under image_root."""
    path, data = src.load("questions", fallback="annotations", what="questions")
    if not isinstance(data, dict):
        raise EvalInputError(f"{path}: expected a JSON object {{questionId: question}}")
    items = [(str(qid), q) for qid, q in data.items() if not isinstance(q, dict) or q.get("isBalanced", True)]
    items = cut(items, src.bench.max_samples)
    questions = []
    for qid, q in items:
        if not isinstance(q, dict):
            raise EvalInputError(f"{path}: question {qid} is not an object")
        where = f"for question {qid!r}"
        image = str(require(q, "imageId", path, where, (str, int)))
        questions.append(Question(qid, require(q, "question", path, where, str), {"questionId": qid},
                                  [f"{image}.jpg", image]))
    src.find_images(questions)
    # With `questions` set, `annotations` may name the choices file (val_choices.json): validity and
    # plausibility.  testdev has none.
    choices = src.bench.annotations if src.bench.questions else None
    return Split(questions, path if src.bench.max_samples <= 0 else dict(items), choices)


def gqa_answer(raw: str) -> str:
    return generated(raw).lower().replace("<unk>", "").strip()


def gqa_hit(prediction: str, answer: str) -> bool:
    return answer in gqa_answer(prediction).lower()


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


@registry.register("benchmark", "gqa")
class GQAScorer(Scorer):
    """GQA testdev/val balanced: exact-match accuracy and the other figures of eval.py."""

    family = "vqa"
    mode, field, lower = "generate", "prediction", True
    questions_to_ask = staticmethod(questions_to_ask)

    name = "gqa"
    metric = "accuracy"
    compat_modes = ("tinygptv",)

    def _score(self, pred: Any, ann: Any, ques: Any, compat: str | None) -> dict:
        # GQA's answers live in its questions file: --ann is that file; --ques, optional, the choices.
        split = read_predictions(pred, ann)
        items = split.items
        if compat == "tinygptv":
            hits = [gqa_hit(it.prediction, it.answer) for it in items]
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
