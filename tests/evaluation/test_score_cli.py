"""`python -m tinygpt.evaluation.score` end to end, the registry and the markdown table."""
import importlib
import json
import os
import subprocess
import sys

import pytest

from tinygpt.common.registry import registry
from tinygpt.evaluation import markdown_table
from tinygpt.evaluation.score import main

ANN = {"annotations": [
    {"question_id": q, "image_id": 1, "question_type": "what is", "answer_type": "other",
     "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": i + 1} for i, a in enumerate(ans)]}
    for q, ans in ((1, ["cat"] * 2 + ["dog"] * 8), (2, ["red"] * 10))]}


def files(tmp_path, results):
    ann, res = tmp_path / "ann.json", tmp_path / "res.json"
    ann.write_text(json.dumps(ANN))
    res.write_text(json.dumps(results))
    return str(ann), str(res)


def test_cli_prints_and_writes_json(tmp_path, capsys):
    ann, res = files(tmp_path, [{"question_id": 1, "answer": "cat"}, {"question_id": 2, "answer": "red"}])
    out_dir = tmp_path / "out"
    rc = main(["--benchmark", "vqav2", "--pred", res, "--ann", ann, "--json", str(out_dir / "r.json")])
    assert rc == 0
    printed = capsys.readouterr().out
    assert printed.splitlines()[0] == "vqav2 vqa_accuracy: 80.00  (n=2)"  # (0.6 + 1) / 2
    assert "per_answer_type" in printed and "other" in printed
    written = json.loads((out_dir / "r.json").read_text())
    assert written["overall"] == 80.0 and written["breakdown"]["per_answer_type"] == {"other": 80.0}
    assert os.listdir(out_dir) == ["r.json"]  # the temp file was renamed, nothing left behind


def test_cli_bad_input_exits_2_with_one_line(tmp_path, capsys):
    ann, res = files(tmp_path, [{"question_id": 1, "answer": "cat"}])
    assert main(["--benchmark", "vqav2", "--pred", res, "--ann", ann]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no prediction for question_id 2" in err and "res.json" in err

    assert main(["--benchmark", "vqav2", "--pred", str(tmp_path / "nope.json"), "--ann", ann]) == 2
    assert "results file not found" in capsys.readouterr().err

    (tmp_path / "broken.json").write_text("{")
    assert main(["--benchmark", "vqav2", "--pred", res, "--ann", str(tmp_path / "broken.json")]) == 2
    assert "broken.json: malformed JSON" in capsys.readouterr().err

    assert main(["--benchmark", "vqav2", "--pred", res, "--ann", ann, "--compat", "tinygptv"]) == 2
    assert "not defined for vqav2" in capsys.readouterr().err


def test_cli_as_a_module(tmp_path):
    ann, res = files(tmp_path, [{"question_id": 1, "answer": "dog"}, {"question_id": 2, "answer": "red"}])
    proc = subprocess.run([sys.executable, "-m", "tinygpt.evaluation.score", "--benchmark", "okvqa",
                           "--pred", res, "--ann", ann], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("okvqa vqa_accuracy: 100.00")


def test_registry_has_every_benchmark_and_reimport_is_safe():
    import tinygpt.evaluation as evaluation
    expected = {"vqav2", "okvqa", "gqa", "vizwiz", "iconqa", "vsr", "hateful_memes",
                "refcoco", "refcoco+", "refcocog", "coco_caption"}
    assert expected <= set(registry.names("benchmark"))
    importlib.reload(evaluation)
    assert registry.get("benchmark", "refcoco+")().name == "refcoco+"


def test_markdown_table():
    table = markdown_table({
        "gqa": {"metric": "accuracy", "overall": 50.0, "n": 4, "compat": None,
                "breakdown": {"binary": 100.0, "open": 0.0, "per_structural_type": {"query": 0.0}}},
        "vizwiz": {"metric": "vqa_accuracy", "overall": 72.5, "n": 4, "compat": "tinygptv",
                   "breakdown": {"answerability": {"average_precision": 50.0, "f1": 50.0}}},
    })
    assert table == (
        "| Benchmark | Metric | Score | N | Details |\n"
        "|---|---|---:|---:|---|\n"
        "| gqa | accuracy | 50.00 | 4 | binary 100.00, open 0.00 |\n"
        "| vizwiz | vqa_accuracy (tinygptv compat) | 72.50 | 4 | "
        "answerability.average_precision 50.00, answerability.f1 50.00 |\n")


REF = {"img_id": 1, "sents": "the dog", "bbox": [10, 10, 50, 50], "height": 100, "width": 100}


def _vqa_ann(**changes):
    ann = json.loads(json.dumps(ANN))
    ann["annotations"][1].update(changes)
    return ann


@pytest.mark.parametrize("benchmark, ann, pred, words", [
    ("refcoco", [{**REF, "bbox": [10, 10, float("nan"), 50]}], [{"img_id": 1, "sents": "the dog", "pred": "{<10>}"}],
     ["entry 0 bbox w is nan; it must be a finite number"]),
    ("refcoco", [{**REF, "bbox": [10, float("inf"), 50, 50]}], None, ["entry 0 bbox y is inf"]),
    ("refcoco", [{**REF, "bbox": [60, 60, -50, -50]}], None, ["entry 0 bbox w is -50; it must be >= 0"]),
    ("refcoco", [{**REF, "bbox": [True, False, 50, 50]}], None, ["entry 0 bbox x is True; it must be a number, not bool"]),
    ("refcoco", [{**REF, "width": float("inf")}], None, ["entry 0 field 'width' is inf"]),
    ("refcoco", [{**REF, "height": True}], None, ["entry 0 field 'height' is bool"]),
    ("vqav2", _vqa_ann(answers=[]), [{"question_id": 1, "answer": "cat"}, {"question_id": 2, "answer": "red"}],
     ["entry 1 has no human answer"]),
    ("vqav2", None, [{"question_id": 1, "answer": "cat"}, {"question_id": 2, "answer": "red"}],
     ["a number in it is too long to read"]),
])
def test_annotations_that_would_score_silently_wrong_are_one_line_naming_file_and_record(
        tmp_path, capsys, benchmark, ann, pred, words):
    ann_path, pred_path = tmp_path / "ann.json", tmp_path / "pred.json"
    if ann is None:  # a 5000-digit question_id
        ann_path.write_text(json.dumps(ANN).replace('"question_id": 2', '"question_id": ' + "7" * 5000))
    else:
        ann_path.write_text(json.dumps(ann))  # NaN / Infinity as Python's json writes them
    pred_path.write_text(json.dumps(pred or [{"img_id": 1, "sents": "the dog", "pred": "{<10><10><60><60>}"}]))
    assert main(["--benchmark", benchmark, "--pred", str(pred_path), "--ann", str(ann_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err and str(ann_path) in err, err
    for word in words:
        assert word in err, err
