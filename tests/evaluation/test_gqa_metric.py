"""GQA: exact match on balanced questions, binary/open split, TinyGPT-V substring compat."""
import json

import pytest

from tinygpt.evaluation import EvalInputError, get_scorer


def q(answer, structural=None, semantic=None, balanced=True):
    out = {"imageId": "n1", "question": "?", "answer": answer, "isBalanced": balanced}
    if structural:
        out["types"] = {"structural": structural, "semantic": semantic, "detailed": "x"}
    return out


QUESTIONS = {
    "1": q("yes", "verify", "attr"),
    "2": q("red", "query", "attr"),
    "3": q("left", "choose", "rel"),
    "4": q("no", "logical", "obj", balanced=False),
    "5": q("table", "query", "cat"),
}
PREDS = [{"questionId": "1", "prediction": "yes"}, {"questionId": "2", "prediction": "Red"},
         {"questionId": "3", "prediction": "left"}, {"questionId": "4", "prediction": "no"},
         {"questionId": "5", "prediction": "the table"}]


def files(tmp_path, questions, preds):
    qp, pp = tmp_path / "testdev_balanced_questions.json", tmp_path / "pred.json"
    qp.write_text(json.dumps(questions))
    pp.write_text(json.dumps(preds))
    return str(qp), str(pp)


def test_official_exact_match_and_split(tmp_path):
    ques, pred = files(tmp_path, QUESTIONS, PREDS)
    r = get_scorer("gqa").score(pred, ann=ques)
    # balanced: 1 right, 2 wrong (case), 3 right, 5 wrong (extra word); 4 is unbalanced
    assert r["n"] == 4 and r["overall"] == 50.0
    assert r["breakdown"]["binary"] == 100.0  # verify + choose
    assert r["breakdown"]["open"] == 0.0      # query
    assert r["breakdown"]["per_structural_type"] == {"choose": 100.0, "query": 0.0, "verify": 100.0}
    assert r["breakdown"]["per_semantic_type"] == {"attr": 50.0, "cat": 0.0, "rel": 100.0}


def test_compat_substring_rule(tmp_path):
    ques, pred = files(tmp_path, QUESTIONS, PREDS)
    r = get_scorer("gqa").score(pred, ann=ques, compat="tinygptv")
    assert r["overall"] == 100.0  # "red" in "red", "table" in "the table"


def test_without_types_binary_means_yes_no(tmp_path):
    ques, pred = files(tmp_path, {"1": q("yes"), "2": q("red")},
                       [{"questionId": "1", "prediction": "yes"}, {"questionId": "2", "prediction": "blue"}])
    r = get_scorer("gqa").score(pred, ann=ques)
    assert (r["breakdown"]["binary"], r["breakdown"]["open"]) == (100.0, 0.0)
    assert "per_structural_type" not in r["breakdown"] and "consistency" not in r["breakdown"]


def test_missing_prediction_names_question(tmp_path):
    ques, pred = files(tmp_path, QUESTIONS, PREDS[:4])
    with pytest.raises(EvalInputError, match=r"no prediction for questionId '5'"):
        get_scorer("gqa").score(pred, ann=ques)


def test_split_without_questions_is_left_out(tmp_path):
    ques, pred = files(tmp_path, {"1": q("red", "query", "attr")},
                       [{"questionId": "1", "prediction": "red"}])
    assert get_scorer("gqa").score(pred, ann=ques)["breakdown"]["open"] == 100.0
    assert "binary" not in get_scorer("gqa").score(pred, ann=ques)["breakdown"]


def test_empty_annotations_are_an_error(tmp_path):
    ques, pred = files(tmp_path, {}, [])
    with pytest.raises(EvalInputError, match="nothing to score"):
        get_scorer("gqa").score(pred, ann=ques)


def step(operation, argument):
    return {"operation": operation, "argument": argument, "dependencies": []}


def full(question, answer, structural, semantic, detailed, group, program, entailed, balanced=True):
    return {"imageId": "n1", "question": question, "answer": answer, "isBalanced": balanced,
            "types": {"structural": structural, "semantic": semantic, "detailed": detailed},
            "groups": {"global": group, "local": None}, "semantic": program, "entailed": entailed}


def test_every_eval_py_figure_on_a_hand_worked_case(tmp_path):
    questions = {
        "1": full("is the cup red", "yes", "verify", "attr", "verifyAttr", None,
                  [step("select", "cup"), step("verify color", "red")], ["6"]),
        "2": full("what color is the cup", "red", "query", "attr", "queryAttr", "color",
                  [step("select", "cup"), step("query", "color")], ["1", "2"]),
        "3": full("what is on the table", "cup", "query", "rel", "relS", "thing",
                  [step("select", "table"), step("relate", "on"), step("query", "name")], []),
        "4": full("what do the cup and plate have in common", "color", "compare", "obj", "twoCommon", None,
                  [step("select", "cup"), step("select", "plate"), step("common", "")], []),
        "6": full("is the cup blue", "no", "verify", "attr", "verifyAttr", None, [], [], balanced=False),
    }
    preds = [{"questionId": k, "prediction": v} for k, v in
             (("1", "yes"), ("2", "red"), ("3", "plate"), ("4", "material"), ("6", "yes"))]
    ques, pred = files(tmp_path, questions, preds)
    choices = tmp_path / "val_choices.json"
    choices.write_text(json.dumps({
        "1": {"valid": ["yes", "no"], "plausible": ["yes", "no"]},
        "2": {"valid": ["red", "blue", "white"], "plausible": ["red", "white"]},
        "3": {"valid": ["cup", "plate", "fork"], "plausible": ["cup", "fork"]},
        "4": {"valid": ["x"], "plausible": ["x"]},  # a "Common" question: color/material/shape instead
    }))
    r = get_scorer("gqa").score(pred, ann=ques, ques=str(choices))
    b = r["breakdown"]
    assert r["overall"] == 50.0 and r["n"] == 4  # 1 and 2 right; 6 is unbalanced
    assert (b["binary"], b["open"]) == (50.0, 50.0)  # verify 1 + compare 0; query 1 + 0
    # Right and entailing others: 1 (entails 6, answered wrong) and 2 (entails 1 besides itself, right).
    assert b["consistency"] == 50.0
    assert b["validity"] == 100.0 and b["plausibility"] == 75.0  # "plate" is valid, not plausible
    # chi-square: group color (gold red 1, predicted red 1) 0; group thing (gold cup 1, predicted plate) 1;
    # weighted by size (1 and 1): 0.5, / 100 = 0.005 -> 0.01
    assert b["distribution"] == 0.01
    assert b["per_structural_type"] == {"compare": 0.0, "query": 50.0, "verify": 100.0}
    assert b["per_semantic_type"] == {"attr": 100.0, "obj": 0.0, "rel": 0.0}
    assert b["per_steps_number"] == {"2": 66.67, "3": 0.0}  # "query: name" is not a step
    assert b["per_words_number"] == {"4": 100.0, "5": 50.0, "9": 0.0}


def test_consistency_needs_the_entailed_predictions(tmp_path):
    questions = {"1": full("is it red", "yes", "verify", "attr", "verifyAttr", None, [], ["7"])}
    ques, pred = files(tmp_path, questions, [{"questionId": "1", "prediction": "yes"}])
    r = get_scorer("gqa").score(pred, ann=ques)
    assert "consistency" not in r["breakdown"] and any("entailed question 7" in n for n in r["notes"])
