"""VizWiz: always-normalised prediction, positional leave-one-out, answerability AP; TinyGPT-V compat."""
import json

import pytest

from tinygpt.evaluation import get_scorer
from tinygpt.evaluation.benchmarks.vizwiz import tinygptv_accuracy, vizwiz_accuracy


def answers(words):
    return [{"answer": w, "answer_confidence": "yes"} for w in words]


def test_prediction_is_always_normalised():
    assert vizwiz_accuracy("Yes.", answers(["yes"] * 10)) == 1.0  # VQAv2's rule would give 0


def test_human_answers_are_used_as_written():
    assert vizwiz_accuracy("yes", answers(["Yes"] * 10)) == 0.0


def test_leave_one_out_is_by_position_even_for_identical_entries():
    # the entries carry no answer_id, so identical dicts must still leave one at a time
    assert vizwiz_accuracy("cat", answers(["cat"] * 2 + ["dog"] * 8)) == pytest.approx(0.6)


def test_vizwiz_contraction_table_quirk():
    # "dont" becomes "don’t" (U+2019) in the VizWiz table, so it misses a straight "don't"
    assert vizwiz_accuracy("dont know", answers(["don't know"] * 10)) == 0.0
    assert vizwiz_accuracy("dont know", answers(["don\u2019t know"] * 10)) == 1.0


def write(tmp_path, name, obj):
    p = tmp_path / name
    p.write_text(json.dumps(obj))
    return str(p)


def ann_item(image, words, answer_type, answerable):
    return {"image": image, "question": "what is this?", "answers": answers(words),
            "answer_type": answer_type, "answerable": answerable}


ANN = [
    ann_item("a.jpg", ["yes"] * 10, "yes/no", 1),
    ann_item("b.jpg", ["white"] * 10, "other", 1),
    ann_item("c.jpg", ["unanswerable"] * 10, "unanswerable", 0),
    ann_item("d.jpg", ["unanswerable"] * 7 + ["red"] * 3, "unanswerable", 0),
]


def test_scorer_accuracy_and_answerability_from_answers(tmp_path):
    ann = write(tmp_path, "val.json", ANN)
    res = write(tmp_path, "res.json", [
        {"image": "a.jpg", "answer": "yes"}, {"image": "b.jpg", "answer": "unanswerable"},
        {"image": "c.jpg", "answer": "Unanswerable."}, {"image": "d.jpg", "answer": "red"}])
    r = get_scorer("vizwiz").score(res, ann=ann)
    # 1 + 0 + 1 + (3 x 2/3 + 7 x 1)/10 = 2.9 over 4
    assert r["overall"] == 72.5
    assert r["breakdown"]["per_answer_type"] == {"other": 0.0, "unanswerable": 95.0, "yes/no": 100.0}
    # P(answerable) = [1, 0, 0, 1]; unanswerable scores [0, 1, 1, 0] vs gold [0, 0, 1, 1]:
    # AP = 0.5 x 1/2 (threshold 1) + 0.5 x 2/4 (threshold 0) = 0.5; F1 = 2/(2+1+1) = 0.5
    assert r["breakdown"]["answerability"] == {"average_precision": 50.0, "f1": 50.0}


def test_answerability_from_probabilities(tmp_path):
    ann = write(tmp_path, "val.json", ANN)
    res = [{"image": f"{img}.jpg", "answer": "x", "answerable": p}
           for img, p in zip("abcd", (0.9, 0.6, 0.2, 0.4))]
    r = get_scorer("vizwiz").score(res, ann=ann)
    # unanswerable scores 0.1, 0.4, 0.8, 0.6: both unanswerables rank first -> AP 1, F1 1
    assert r["breakdown"]["answerability"] == {"average_precision": 100.0, "f1": 100.0}


def test_compat_credits_an_empty_prediction(tmp_path):
    ann = write(tmp_path, "val.json", [ann_item("a.jpg", ["white"] * 10, "other", 1),
                                       ann_item("b.jpg", ["blue"] * 10, "other", 1)])
    res = write(tmp_path, "res.json", [{"image": "a.jpg", "answer": ""},
                                       {"image": "b.jpg", "answer": "blue"}])
    official = get_scorer("vizwiz").score(res, ann=ann)
    compat = get_scorer("vizwiz").score(res, ann=ann, compat="tinygptv")
    assert official["overall"] == 50.0
    assert compat["overall"] == 100.0  # "" is a substring of "white"
    assert compat["compat"] == "tinygptv"


def test_compat_substring_and_underscore_split():
    two_white = ["white"] * 2 + ["grey"] * 8
    assert tinygptv_accuracy("it is white", two_white) == pytest.approx(2 / 3)
    # "a_b" is split into "a" and "b": one hit out of three pieces
    assert tinygptv_accuracy("b", ["a_b", "c"]) == pytest.approx(1 / 3)


def test_compat_cuts_raw_answers_where_tinygptvs_script_does():
    from tinygpt.evaluation.benchmarks.gqa import gqa_hit
    from tinygpt.evaluation.benchmarks.hateful_memes import hateful_memes_label
    from tinygpt.evaluation.benchmarks.vsr import vsr_hits

    # VizWiz and Hateful Memes: cut at "###", keep what follows the last "Assistant:".
    assert tinygptv_accuracy("Assistant: red###Human: and?", ["red"] * 10) == 1.0
    assert tinygptv_accuracy("blue###Assistant: red", ["red"] * 10) == 0.0  # "blue" once cut
    assert hateful_memes_label("Assistant: No.###Human: yes?") == 0
    # GQA / VSR see the text after TinyGPT-V's generate ("[/INST]" prefix and "</s>" dropped).
    assert gqa_hit("[INST] q [/INST] Left</s> right", "left") and not gqa_hit("x</s> left", "left")
    assert vsr_hits("[INST] is it? [/INST] True<unk>", 1) == 1
