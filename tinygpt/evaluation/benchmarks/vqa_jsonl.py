"""A user's own held-out VQA split (docs/own-data.md), in the training format of the `vqa_jsonl`
dataset type: one `{"image", "question", "answer"}` per line, `answer` a string or a list.

Scored with vqa.py's rules: a question with ten or more human answers gets the official VQA
accuracy (`vqa_accuracy`); one with fewer is right when the prediction equals one of them after
the official answer normalisation (`normalize_answer`: case, articles, punctuation, number words),
since VQA's "3 of the other annotators" rule needs ten.  `per_answer`: accuracy per gold answer.

    evaluation.benchmarks.mine: {scorer: vqa_jsonl, annotations: heldout.jsonl, image_root: photos/,
                                 prompt: "[vqa] {}"}
"""
from __future__ import annotations

from collections import defaultdict
from typing import Any

from tinygpt.common.registry import registry
from tinygpt.evaluation.formats import EvalInputError, expect_list, load_json, match_predictions, require, source_name
from tinygpt.evaluation.metrics.base import Scorer, grouped_percent, percent
from tinygpt.evaluation.metrics.vqa_normalize import clean_whitespace, normalize_answer
from tinygpt.evaluation.benchmarks.vqa import vqa_accuracy
from tinygpt.evaluation.questions import Question, Source, Split, cut, question_reader


def _answers(row: dict, name: str, index: int) -> list[str]:
    answers = require(row, "answer", name, index, (str, list))
    answers = [answers] if isinstance(answers, str) else answers
    if not answers or not all(isinstance(a, str) for a in answers):
        raise EvalInputError(f"{name}: entry {index} field 'answer' must be a string or a non-empty list of strings")
    return answers


@question_reader
def questions_to_ask(src: Source) -> Split:
    """The JSONL `annotations` file; images `image` under image_root.  Line numbers are the keys."""
    path, data = src.load("annotations", fallback="questions", what="annotations")
    rows = cut(expect_list(data, path), src.bench.max_samples)
    questions = []
    for i, row in enumerate(rows):
        image = require(row, "image", path, i, str)
        _answers(row, path, i)
        questions.append(Question(f"#{i}", require(row, "question", path, i, str), {"index": i}, [image]))
    src.find_images(questions)
    return Split(questions, path if src.bench.max_samples <= 0 else rows)


def read_predictions(pred: Any, ann: Any) -> list[tuple[list[str], str]]:
    """(gold answers, prediction) per line of the JSONL `ann`; predictions `[{"index", "answer"}]`
    (the line's position in the file)."""
    ann_name, pred_name = source_name(ann, "annotations"), source_name(pred, "predictions")
    rows = expect_list(load_json(ann, "annotations"), ann_name)
    gold = [_answers(row, ann_name, i) for i, row in enumerate(rows)]
    preds = expect_list(load_json(pred, "predictions"), pred_name)
    pairs = match_predictions(rows, preds, lambda a, i: i, lambda p, i: require(p, "index", pred_name, i, int),
                              ann_name, pred_name, "index")
    return [(answers, require(p, "answer", pred_name, f"for index {i}", str))
            for i, (answers, (_, p)) in enumerate(zip(gold, pairs))]


def answer_score(prediction: str, answers: list[str]) -> float:
    if len(answers) >= 10:
        return vqa_accuracy(prediction, answers)
    return float(normalize_answer(clean_whitespace(prediction)) in
                 {normalize_answer(clean_whitespace(a)) for a in answers})


@registry.register("benchmark", "vqa_jsonl")
class VQAJsonlScorer(Scorer):
    """A user's {"image", "question", "answer"} JSONL: accuracy (see the module docstring)."""

    family = "vqa"
    mode, field, lower = "generate", "answer", True
    questions_to_ask = staticmethod(questions_to_ask)

    name = "vqa_jsonl"
    metric = "accuracy"

    def _score(self, pred: Any, ann: Any, ques: Any, compat: str | None) -> dict:
        scores, per_answer = [], defaultdict(list)
        for answers, prediction in read_predictions(pred, ann):
            scores.append(answer_score(prediction, answers))
            per_answer[answers[0]].append(scores[-1])
        return {"overall": percent(scores), "n": len(scores),
                "breakdown": {"per_answer": grouped_percent(per_answer)}}
