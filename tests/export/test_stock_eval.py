"""A held-out VQA evaluation of an exported directory through plain transformers (stock_eval: the
questions asked in a process without tinygpt, batched with left padding) gives tinygpt's own
evaluation's predictions and score, to the last digit."""
from __future__ import annotations

import json

import pytest

from exports import layout_config, trained_checkpoint
from tinygpt.common.config import BenchmarkConfig
from tinygpt.common.errors import UserError
from tinygpt.evaluation.runner import EvaluationRunner, prepare
from tinygpt.export.hf import build_inference_model, export_hf
from tinygpt.export.stock_eval import evaluate_directory


@pytest.mark.slow
def test_held_out_vqa_through_plain_transformers_matches_tinygpt(tmp_path, tiny_root):
    from tinygpt.datasets.synthetic import generate

    generate(str(tmp_path / "syn"), train_images=2, eval_images=6, image_size=28, questions_per_image=2,
             vocab_size=300)
    ev = tmp_path / "syn" / "eval"
    cfg = trained_checkpoint(layout_config("full", tiny_root), tmp_path, talkative=True)
    cfg.evaluation.output_dir = str(tmp_path / "eval")
    cfg.evaluation.benchmarks = {"vqav2": BenchmarkConfig(
        questions=str(ev / "vqav2/questions.json"), annotations=str(ev / "vqav2/annotations.json"),
        image_root=str(ev / "images"), prompt="[vqa] {}", scorer="vqav2", max_new_tokens=6, batch_size=5)}
    export_hf(cfg, str(tmp_path / "hf"), verify=False)

    ours = EvaluationRunner(cfg, build_inference_model(cfg), "cpu", prepare(cfg, ["vqav2"]), progress=False).run()
    theirs = evaluate_directory(cfg, str(tmp_path / "hf"), str(tmp_path / "eval-hf"), ["vqav2"])
    predictions = json.loads((tmp_path / "eval" / "vqav2" / "predictions.json").read_text())
    assert len(predictions) == 12 and len({p["answer"] for p in predictions}) > 1  # varied, non-trivial answers
    assert json.loads((tmp_path / "eval-hf" / "vqav2" / "predictions.json").read_text()) == predictions
    assert theirs["vqav2"] == {k: v for k, v in ours.results["vqav2"].items() if k in theirs["vqav2"]}

    cfg.evaluation.benchmarks["vqav2"].prompt = "<Img><ImageHere></Img> {}"
    with pytest.raises(UserError, match="evaluation.benchmarks.vqav2"):
        evaluate_directory(cfg, str(tmp_path / "hf"), str(tmp_path / "eval-hf"), ["vqav2"])
