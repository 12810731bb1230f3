"""AUROC / average precision by hand, and the Hateful Memes, VSR and IconQA scorers."""
import json

import pytest

from tinygpt.evaluation import EvalInputError, get_scorer
from tinygpt.evaluation.metrics.ranking import auroc, average_precision, f1_binary
from tinygpt.evaluation.benchmarks.vsr import parse_true_false


def test_auroc_by_hand():
    # pairs (pos, neg): 0.35>0.1 yes, 0.35>0.4 no, 0.8>0.1 yes, 0.8>0.4 yes -> 3/4
    assert auroc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == 0.75


def test_auroc_ties_count_half():
    # pos 0.5 ties both negatives (1/2 each), pos 0.9 beats both -> (1 + 2) / 4
    assert auroc([0.5, 0.5, 0.5, 0.9], [0, 1, 0, 1]) == 0.75
    assert auroc([0.3] * 4, [0, 1, 0, 1]) == 0.5


def test_auroc_needs_both_classes():
    with pytest.raises(ValueError, match="same class"):
        auroc([0.1, 0.2], [1, 1])


def test_average_precision_by_hand():
    # thresholds 0.8 (P 1, R .5), 0.4 (P 1/2, R .5), 0.35 (P 2/3, R 1): .5*1 + .5*2/3
    assert average_precision([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(5 / 6)
    # a tie enters as one threshold: (0.9: R 0) then (0.5: P 1/3, R 1)
    assert average_precision([0.5, 0.5, 0.9], [1, 0, 0]) == pytest.approx(1 / 3)


def test_f1():
    assert f1_binary([1, 1, 0, 0], [1, 0, 1, 0]) == 0.5
    assert f1_binary([0, 0], [1, 0]) == 0.0


def write(tmp_path, name, rows, jsonl=False):
    p = tmp_path / name
    p.write_text("\n".join(json.dumps(r) for r in rows) + "\n" if jsonl else json.dumps(rows))
    return str(p)


MEMES = [{"id": 101, "img": "img/00101.png", "label": 0, "text": "a"},
         {"id": 102, "img": "img/00102.png", "label": 0, "text": "b"},
         {"id": 103, "img": "img/00103.png", "label": 1, "text": "c"},
         {"id": 104, "img": "img/00104.png", "label": 1, "text": "d"}]


def test_hateful_memes_auroc_and_accuracy(tmp_path):
    ann = write(tmp_path, "dev_seen.jsonl", MEMES, jsonl=True)
    preds = [{"id": i, "proba": p} for i, p in zip((101, 102, 103, 104), (0.1, 0.4, 0.35, 0.8))]
    r = get_scorer("hateful_memes").score(write(tmp_path, "p.json", preds), ann=ann)
    assert r["metric"] == "auroc" and r["overall"] == 75.0
    assert r["breakdown"]["accuracy"] == 75.0  # decisions 0,0,0,1 at proba >= 0.5
    for p in preds:
        p["label"] = 1  # an explicit decision column overrides the 0.5 threshold
    assert get_scorer("hateful_memes").score(preds, ann=ann)["breakdown"]["accuracy"] == 50.0


def test_hateful_memes_compat_is_text_accuracy(tmp_path):
    ann = write(tmp_path, "dev_seen.jsonl", MEMES, jsonl=True)
    preds = [{"id": i, "answer": a} for i, a in
             zip((101, 102, 103, 104), ("No.", "not hateful", "Yes it is", "maybe"))]
    r = get_scorer("hateful_memes").score(preds, ann=ann, compat="tinygptv")
    # "no" inside "not" counts as no; "maybe" matches nothing and is wrong
    assert r["metric"] == "accuracy" and r["overall"] == 75.0
    assert r["breakdown"]["unmatched"] == 1
    with pytest.raises(EvalInputError, match=r"no 'proba' field"):
        get_scorer("hateful_memes").score(preds, ann=ann)


VSR = [("1.jpg", "The cat is left of the dog.", 1, "left of", "Yes"),
       ("2.jpg", "The cup is left of the plate.", 0, "left of", "false."),
       ("3.jpg", "The book is on the table.", 1, "on", "yes, it is"),
       ("4.jpg", "The hat is on the man.", 0, "on", "True"),
       ("5.jpg", "The ball is under the car.", 0, "under", "no"),
       ("6.jpg", "The cat is under the bed.", 1, "under", "true, yes")]


def vsr_files(tmp_path):
    ann = write(tmp_path, "test.jsonl", [{"image": i, "caption": c, "label": y, "relation": r}
                                         for i, c, y, r, _ in VSR], jsonl=True)
    pred = write(tmp_path, "p.json", [{"image": i, "caption": c, "pred": p} for i, c, _, _, p in VSR])
    return ann, pred


def test_vsr_strict_parse():
    assert parse_true_false(" Yes. ") == 1 and parse_true_false("FALSE") == 0
    assert parse_true_false("yes, it is") is None and parse_true_false("") is None


def test_vsr_official_and_compat(tmp_path):
    ann, pred = vsr_files(tmp_path)
    r = get_scorer("vsr").score(pred, ann=ann)
    assert r["overall"] == 50.0  # items 1, 2, 5 right; 3 and 6 unparseable; 4 wrong
    assert r["breakdown"]["unparseable"] == 2
    assert r["breakdown"]["per_relation"] == {"left of": 100.0, "on": 0.0, "under": 50.0}
    c = get_scorer("vsr").score(pred, ann=ann, compat="tinygptv")
    # hits 1,1,1,0,1 and 2 for "true, yes" (both substrings): 6 / 6
    assert c["overall"] == 100.0 and c["breakdown"]["double_counted"] == 1


def test_iconqa_list_format(tmp_path):
    ann = write(tmp_path, "iconqa_test.json", [
        {"image_id": "7", "question": "?", "choices": ["a", "b"], "answer": 0},
        {"image_id": "8", "question": "?", "choices": ["a", "b", "c"], "answer": 2},
        {"image_id": "9", "question": "?", "choices": ["a", "b", "c"], "answer": 1}])
    preds = [{"question_id": q, "pred": p} for q, p in (("7", 0), ("8", 2), ("9", 0))]
    r = get_scorer("iconqa").score(preds, ann=ann)
    assert r["overall"] == 66.67
    assert r["breakdown"]["per_num_choices"] == {"2_choices": 100.0, "3_choices": 50.0}
    assert get_scorer("iconqa").score(preds, ann=ann, compat="tinygptv")["overall"] == 66.67


def test_iconqa_official_problems_and_splits(tmp_path):
    problems = {"10": {"question": "?", "choices": ["x", "y"], "answer": 1, "ques_type": "choose_txt"},
                "11": {"question": "?", "choices": ["x", "y"], "answer": 0, "ques_type": "choose_txt"},
                "12": {"question": "?", "choices": ["x", "y"], "answer": 0, "ques_type": "choose_txt"}}
    ann = write(tmp_path, "problems.json", problems)
    splits = write(tmp_path, "pid_splits.json", {"choose_txt_test": ["10", "11"], "choose_txt_val": ["12"]})
    preds = [{"question_id": "10", "pred": 1}, {"question_id": "11", "pred": 1}]
    assert get_scorer("iconqa").score(preds, ann=ann, ques=splits)["overall"] == 50.0
    with pytest.raises(EvalInputError, match="pid_splits.json"):
        get_scorer("iconqa").score(preds, ann=ann)
