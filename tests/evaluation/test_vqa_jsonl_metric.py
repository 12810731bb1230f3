"""The vqa_jsonl benchmark: a user's own {"image", "question", "answer"} held-out split."""
from __future__ import annotations

import json

import pytest

from tinygpt.evaluation import EvalInputError, get_scorer


def write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_one_answer_matches_after_vqa_normalisation_and_ten_answers_use_vqa_accuracy(tmp_path):
    ann = write(tmp_path / "heldout.jsonl", [
        {"image": "a.png", "question": "colour?", "answer": "Red"},
        {"image": "b.png", "question": "how many?", "answer": ["2", "two"]},
        {"image": "c.png", "question": "what?", "answer": "a cat"},
        {"image": "d.png", "question": "sport?", "answer": ["tennis"] * 2 + ["squash"] * 8},
    ])
    preds = [{"index": 0, "answer": "red."}, {"index": 1, "answer": "two"},
             {"index": 2, "answer": "dog"}, {"index": 3, "answer": "tennis"}]
    result = get_scorer("vqa_jsonl").score(preds, ann=ann)
    # 1 + 1 + 0 + official accuracy of an answer 2 of 10 gave (0.6), over 4
    assert (result["overall"], result["n"], result["metric"]) == (65.0, 4, "accuracy")
    assert result["breakdown"]["per_answer"] == {"2": 100.0, "Red": 100.0, "a cat": 0.0, "tennis": 60.0}


def test_a_missing_prediction_or_a_bad_answer_names_the_file(tmp_path):
    ann = write(tmp_path / "heldout.jsonl", [{"image": "a.png", "question": "q", "answer": "x"},
                                             {"image": "b.png", "question": "q", "answer": "y"}])
    with pytest.raises(EvalInputError, match="no prediction for index 1"):
        get_scorer("vqa_jsonl").score([{"index": 0, "answer": "x"}], ann=ann)
    bad = write(tmp_path / "bad.jsonl", [{"image": "a.png", "question": "q", "answer": []}])
    with pytest.raises(EvalInputError, match=r"bad\.jsonl: entry 0 field 'answer' must be"):
        get_scorer("vqa_jsonl").score([{"index": 0, "answer": "x"}], ann=bad)
