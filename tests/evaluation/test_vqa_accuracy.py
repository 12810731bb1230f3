"""Official VQA accuracy: per-question rule and the VQAv2 / OK-VQA scorers on official-format files."""
import json

import pytest

from tinygpt.evaluation import EvalInputError, get_scorer
from tinygpt.evaluation.benchmarks.vqa import vqa_accuracy


def entries(answers):
    return [{"answer": a, "answer_confidence": "yes", "answer_id": i + 1} for i, a in enumerate(answers)]


def test_leave_one_out_average_two_of_ten():
    # leaving out one of the 2 "cat": 1 match -> 1/3 (x2); leaving out a "dog": 2 -> 2/3 (x8)
    assert vqa_accuracy("cat", entries(["cat"] * 2 + ["dog"] * 8)) == pytest.approx(0.6)
    assert vqa_accuracy("cat", entries(["cat"] * 1 + ["dog"] * 9)) == pytest.approx(0.3)
    assert vqa_accuracy("cat", entries(["cat"] * 3 + ["dog"] * 7)) == pytest.approx(0.9)
    assert vqa_accuracy("cat", entries(["cat"] * 4 + ["dog"] * 6)) == 1.0
    assert vqa_accuracy("dog", entries(["cat"] * 2 + ["dog"] * 8)) == 1.0
    assert vqa_accuracy("bird", entries(["cat"] * 2 + ["dog"] * 8)) == 0.0


def test_identical_answers_get_no_normalisation():
    ten_yes = entries(["yes"] * 10)
    assert vqa_accuracy("yes", ten_yes) == 1.0
    assert vqa_accuracy(" yes\n", ten_yes) == 1.0  # whitespace handling still applies
    assert vqa_accuracy("Yes", ten_yes) == 0.0     # no lower-casing
    assert vqa_accuracy("yes.", ten_yes) == 0.0    # no punctuation rule
    # once the humans disagree, the same prediction is normalised and matches
    mixed = entries(["yes"] * 9 + ["no"])
    assert vqa_accuracy("Yes.", mixed) == 1.0


def test_human_answers_are_normalised_when_they_differ():
    assert vqa_accuracy("two", entries(["two"] * 5 + ["2"] * 5)) == 1.0
    # "a dog" and "dog" merge into 6 x "dog"
    assert vqa_accuracy("the dog", entries(["a dog"] * 3 + ["dog"] * 3 + ["cat"] * 4)) == 1.0


def test_leave_one_out_compares_whole_entries():
    # two byte-identical entries (same answer_id) leave together, as in the official code
    dup = [{"answer": "cat", "answer_id": 1}] * 2 + entries(["dog"] * 8)
    assert vqa_accuracy("cat", dup) == pytest.approx((0 + 0 + 8 * 2 / 3) / 10)
    # bare strings count as distinct entries
    assert vqa_accuracy("cat", ["cat"] * 2 + ["dog"] * 8) == pytest.approx(0.6)


def write(path, obj):
    path.write_text(json.dumps(obj))
    return str(path)


def vqa_files(tmp_path, results):
    qs = {"questions": [{"question_id": q, "image_id": 9, "question": "?"} for q in (1, 2, 3)]}
    anns = {"annotations": [
        {"question_id": 1, "image_id": 9, "question_type": "is the", "answer_type": "yes/no",
         "answers": entries(["yes"] * 10), "multiple_choice_answer": "yes"},
        {"question_id": 2, "image_id": 9, "question_type": "how many", "answer_type": "number",
         "answers": entries(["2"] * 2 + ["3"] * 8), "multiple_choice_answer": "3"},
        {"question_id": 3, "image_id": 9, "question_type": "what color is the", "answer_type": "other",
         "answers": entries(["red"] * 10), "multiple_choice_answer": "red"},
    ]}
    return (write(tmp_path / "ques.json", qs), write(tmp_path / "ann.json", anns),
            write(tmp_path / "res.json", results))


GOOD_RESULTS = [{"question_id": 1, "answer": "yes"}, {"question_id": 2, "answer": "two"},
                {"question_id": 3, "answer": "Red"}]


def test_vqav2_scorer_on_official_files(tmp_path):
    ques, ann, res = vqa_files(tmp_path, GOOD_RESULTS)
    r = get_scorer("vqav2").score(res, ann=ann, ques=ques)
    # 1.0 + 0.6 + 0.0 ("Red" vs ten identical "red": no normalisation) over 3
    assert r["overall"] == 53.33
    assert r["n"] == 3
    assert r["breakdown"]["per_answer_type"] == {"number": 60.0, "other": 0.0, "yes/no": 100.0}
    assert r["breakdown"]["per_question_type"] == {
        "how many": 60.0, "is the": 100.0, "what color is the": 0.0}
    assert r["benchmark"] == "vqav2" and r["metric"] == "vqa_accuracy" and r["compat"] is None


def test_okvqa_scorer_uses_the_same_rule(tmp_path):
    ques, ann, res = vqa_files(tmp_path, GOOD_RESULTS)
    r = get_scorer("okvqa").score(res, ann=ann)
    assert r["benchmark"] == "okvqa" and r["overall"] == 53.33


def test_in_memory_lists_are_accepted(tmp_path):
    _, ann, _ = vqa_files(tmp_path, GOOD_RESULTS)
    assert get_scorer("vqav2").score(GOOD_RESULTS, ann=json.load(open(ann)))["overall"] == 53.33


def test_missing_question_names_the_question_id(tmp_path):
    ques, ann, res = vqa_files(tmp_path, GOOD_RESULTS[:2])
    with pytest.raises(EvalInputError, match=r"no prediction for question_id 3"):
        get_scorer("vqav2").score(res, ann=ann, ques=ques)


def test_unknown_and_duplicate_question_ids_are_errors(tmp_path):
    _, ann, res = vqa_files(tmp_path, GOOD_RESULTS + [{"question_id": 99, "answer": "x"}])
    with pytest.raises(EvalInputError, match=r"unknown question_id 99"):
        get_scorer("vqav2").score(res, ann=ann)
    _, ann, res = vqa_files(tmp_path, GOOD_RESULTS + [{"question_id": 1, "answer": "x"}])
    with pytest.raises(EvalInputError, match=r"duplicate prediction for question_id 1"):
        get_scorer("vqav2").score(res, ann=ann)


def test_questions_from_another_split_are_an_error(tmp_path):
    _, ann, res = vqa_files(tmp_path, GOOD_RESULTS)
    other = write(tmp_path / "other.json", {"questions": [{"question_id": 1}, {"question_id": 7}]})
    with pytest.raises(EvalInputError, match=r"question_id 2 is only in .*ann.json"):
        get_scorer("vqav2").score(res, ann=ann, ques=other)


def test_malformed_json_names_the_file(tmp_path):
    _, ann, _ = vqa_files(tmp_path, GOOD_RESULTS)
    bad = tmp_path / "bad.json"
    bad.write_text('[{"question_id": 1,')
    with pytest.raises(EvalInputError, match=r"bad.json: malformed JSON"):
        get_scorer("vqav2").score(str(bad), ann=ann)


def test_missing_field_names_file_entry_and_field(tmp_path):
    _, ann, res = vqa_files(tmp_path, [{"question_id": 1, "answer": "yes"}, {"question_id": 2},
                                       {"question_id": 3, "answer": "red"}])
    with pytest.raises(EvalInputError, match=r"res.json: entry for question_id 2 has no 'answer' field"):
        get_scorer("vqav2").score(res, ann=ann)


def test_percentages_round_as_python_2_and_per_question_figures(tmp_path):
    # 1 of 32 questions right: 100 * 1 / 32 = 3.125 exactly; Python 2 rounds it to 3.13 (3 would
    # give 3.12 with Python 3's round).
    n = 32
    qs = {"questions": [{"question_id": q, "image_id": 9, "question": "?"} for q in range(n)]}
    anns = {"annotations": [{"question_id": q, "image_id": 9, "question_type": "what", "answer_type": "other",
                             "answers": entries(["red"] * 10)} for q in range(n)]}
    res = [{"question_id": q, "answer": "red" if q == 0 else "blue"} for q in range(n)]
    r = get_scorer("vqav2").score(res, ann=anns, ques=qs)
    assert r["overall"] == 3.13 and r["breakdown"]["per_answer_type"] == {"other": 3.13}
    assert r["per_question"]["0"] == 100.0 and r["per_question"]["1"] == 0.0 and len(r["per_question"]) == n


def test_okvqa_compat_post_processes_raw_answers_as_tinygptv(tmp_path):
    ques, ann, _ = vqa_files(tmp_path, GOOD_RESULTS)
    raw = [{"question_id": 1, "answer": "Yes###Human: is it?"}, {"question_id": 2, "answer": "[INST] x [/INST] two</s>"},
           {"question_id": 3, "answer": "RED ###"}]
    assert get_scorer("okvqa").score(raw, ann=ann)["overall"] == 0.0
    r = get_scorer("okvqa").score(raw, ann=ann, compat="tinygptv")
    # lower-cased, cut at ###, [/INST] prefix and </s> dropped: "yes", "two", "red" -> (1 + 0.6 + 1) / 3
    assert r["overall"] == 86.67 and r["compat"] == "tinygptv"
