"""A held-out evaluation of an exported `--format hf` directory through plain transformers.

    python -m tinygpt.export.stock_eval --cfg-path eval_configs/tiny.yaml --model-dir exported/tiny-hf \
        --out output/tiny/eval-hf [--benchmarks vqav2]

tinygpt reads the benchmark's questions and images as `eval_scripts/evaluate.py` does (runner.prepare);
stock_check.py's `answer` mode, in a process that never imports tinygpt, asks them of the directory
(processor + chat_template + `model.generate`, greedy, the benchmark's batch size and max_new_tokens,
left padding); tinygpt then cleans the answers as its runner does and scores them with the benchmark's
official scorer.  So the score differs from `evaluate.py`'s only if the model's answers do.
Generation benchmarks whose prompt leaves the image to the model (VQA-style) only.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile

from ..common import atomic
from ..common.errors import UserError, entry_point
from ..conversation.protocol import IMAGE_SLOT


def evaluate_directory(cfg, model_dir: str, out: str, labels: list[str]) -> dict[str, dict]:
    """{label: the scorer's result} for the exported directory's answers to `labels`."""
    from ..evaluation import get_scorer
    from ..evaluation.runner import EvaluationRunner, benchmark, prepare
    from .verify import run_stock

    from ..models.build import resolve_prompt_style

    style = resolve_prompt_style(cfg.model, cfg.source, warn=False)  # the checkpoint's, as the model's build
    if style is None:
        raise UserError(f"{cfg.source}: model.prompt_template is the tokenizer's chat_template; set the template "
                        "it renders to clean the answers by")
    results = {}
    for label, split in prepare(cfg, labels).items():
        bench = cfg.evaluation.benchmarks[label]
        protocol = benchmark(bench.scorer)
        if protocol.mode != "generate" or IMAGE_SLOT in bench.prompt:
            raise UserError(f"{cfg.source}: evaluation.benchmarks.{label}: only generation benchmarks whose prompt "
                            "leaves the image to the model (VQA-style) are asked through transformers here")
        asked = [[os.path.abspath(q.image), bench.prompt.replace("{}", q.text, 1)] for q in split.questions]
        batches = [asked[i:i + bench.batch_size] for i in range(0, len(asked), bench.batch_size)]
        os.makedirs(os.path.join(out, label), exist_ok=True)
        with tempfile.TemporaryDirectory() as work:
            answers_path = os.path.join(work, "answers.json")
            run_stock("answer", os.path.abspath(model_dir), batches, bench.max_new_tokens, work, answers_path)
            with open(answers_path, encoding="utf-8") as f:
                raw = json.load(f)
        records = [{**q.record, protocol.field: EvaluationRunner.clean(style.clean_answer(text), protocol)}
                   for q, text in zip(split.questions, raw)]
        predictions = os.path.join(out, label, "predictions.json")
        atomic.write_json(predictions, records)
        results[label] = get_scorer(bench.scorer).score(predictions, ann=split.ann, ques=split.ques)
        atomic.write_json(os.path.join(out, label, "score.json"), results[label])
    return results


@entry_point("python -m tinygpt.export.stock_eval")
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tinygpt.export.stock_eval", description=__doc__.splitlines()[0])
    parser.add_argument("--cfg-path", required=True, help="the evaluation config (its benchmarks and prompt style)")
    parser.add_argument("--options", nargs="*", default=[])
    parser.add_argument("--model-dir", required=True, help="a `python -m tinygpt.export --format hf` directory")
    parser.add_argument("--out", required=True, help="where predictions.json and score.json go, per benchmark")
    parser.add_argument("--benchmarks", default="vqav2", help="comma-separated labels of evaluation.benchmarks")
    args = parser.parse_args(argv)
    import tinygpt

    cfg = tinygpt.load_config(args.cfg_path, args.options)
    labels = [b for b in args.benchmarks.split(",") if b]
    unknown = [b for b in labels if b not in cfg.evaluation.benchmarks]
    if unknown:
        raise UserError(f"{args.cfg_path}: no evaluation.benchmarks.{unknown[0]}")
    for label, result in evaluate_directory(cfg, args.model_dir, args.out, labels).items():
        print(f"{label}: {json.dumps(result.get('overall', result))[:200]}")
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
