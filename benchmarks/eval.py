"""Evaluation benchmark: questions/s of batched VQA answering through the real evaluation runner.

    python dataset/make_synthetic.py --out /tmp/bench_syn --train-images 400 --eval-images 40
    python -m benchmarks.eval --data /tmp/bench_syn                 # batch 1 vs 8, the tiny recipe

The model is the tiny recipe's architecture (`train_configs/tiny/stage1.yaml`'s model section, the
synthetic tokenizer) built for inference (`build_model(..., training=False)`), random weights unless
`--ckpt` names trained ones.  The questions are the synthetic VQAv2 split (160 questions, 40 images),
asked by `EvaluationRunner` exactly as `eval_scripts/evaluate.py` asks them: DataLoader with the eval
transform, `model.generate` per batch (left padding, KV cache, greedy, stop at the end marker),
answers appended to the rank's JSONL, then merged and scored with the official VQA metric.
  questions/s   questions / seconds of the answering phase (image loading included, scoring not)
  score s       merge + official scoring, once per run
With random weights no answer ever ends early, so every batch generates `--max-new-tokens` tokens:
the figure is the slowest case per token budget.  A trained model stops at its end marker; a batch
then runs until its longest answer (batching wastes the steps after the shorter ones end).
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import time

import torch

from tinygpt.common import device as devices
from tinygpt.common.config import BenchmarkConfig

from . import _common as C

TINY_CFG = "train_configs/tiny/stage1.yaml"


def build(args, device):
    import tinygpt

    cfg = tinygpt.load_config(args.cfg_path, [f"run.num_workers={args.num_workers}",
                                              f"run.precision={args.precision}"])
    cfg.model.llm.tokenizer = os.path.join(args.data, "tokenizer")
    cfg.model.ckpt = list(args.ckpt)
    ev = os.path.join(args.data, "eval")
    cfg.evaluation.benchmarks = {"vqav2": BenchmarkConfig(
        scorer="vqav2", questions=os.path.join(ev, "vqav2", "questions.json"),
        annotations=os.path.join(ev, "vqav2", "annotations.json"), image_root=os.path.join(ev, "images"),
        prompt="[vqa] {}", max_new_tokens=args.max_new_tokens)}
    torch.manual_seed(0)
    t = time.perf_counter()
    model = tinygpt.build_model(cfg, device, training=False)
    return cfg, model, time.perf_counter() - t


def run_once(cfg, model, device, batch: int, max_samples: int = 0) -> dict:
    """One fresh evaluation (no resume) at `batch`; answering and scoring timed apart."""
    from tinygpt.evaluation.runner import EvaluationRunner, Report, prepare, select_benchmarks

    bench = cfg.evaluation.benchmarks["vqav2"]
    bench.batch_size, bench.max_samples = batch, max_samples
    shutil.rmtree(cfg.evaluation.output_dir, ignore_errors=True)
    splits = prepare(cfg, select_benchmarks(cfg))
    runner = EvaluationRunner(cfg, model, device, splits, restart=True, progress=False)
    split = splits["vqav2"]
    with C.Timer(device) as answer:
        runner.answer_all("vqav2", split)
    report = Report(runner.output_dir)
    with C.Timer(device) as score:
        runner.merge_and_score("vqav2", split, report)
    n = len(split.questions)
    result = report.results.get("vqav2", {})
    return {"batch": batch, "questions": n, "answer_s": answer.seconds, "questions_per_s": n / answer.seconds,
            "score_s": score.seconds, "errors": report.errors or None,
            "accuracy": result.get("overall", result.get("accuracy"))}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="/tmp/bench_syn", help="output of dataset/make_synthetic.py")
    parser.add_argument("--cfg-path", default=TINY_CFG, help="the model section is used (weights are random)")
    parser.add_argument("--ckpt", nargs="*", default=[], help="trained weights to load (model.ckpt)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--max-new-tokens", type=int, default=10)
    parser.add_argument("--num-workers", type=int, default=0, help="run.num_workers of the image DataLoader")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    parser.add_argument("--repeats", type=int, default=2, help="alternating runs per batch size; median reported")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (default: torch's, one per core); 1 resists a shared host")
    parser.add_argument("--device", default="auto")
    C.add_output_args(parser)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if not os.path.isdir(os.path.join(args.data, "eval", "vqav2")):
        parser.error(f"{args.data} has no eval/vqav2: run `python dataset/make_synthetic.py --out {args.data} "
                     "--train-images 400 --eval-images 40` first")

    device = C.resolve(args.device)
    info = C.machine()
    cfg, model, build_s = build(args, device)
    cfg.evaluation.output_dir = str(C.workdir("eval") / "out")
    print(f"{args.cfg_path} (inference build) in {build_s:.1f} s on {device}; "
          f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f}M params", flush=True)

    run_once(cfg, model, device, max(args.batches), max_samples=2 * max(args.batches))  # warm-up
    runs = {b: [] for b in args.batches}
    for _ in range(args.repeats):  # alternate batch sizes so that host load hits all alike
        for b in args.batches:
            runs[b].append(run_once(cfg, model, device, b))
            print(f"  batch {b}: {runs[b][-1]['questions_per_s']:.1f} questions/s", flush=True)
    rows = []
    for b, rs in runs.items():
        row = dict(rs[0])
        row["questions_per_s"] = statistics.median(r["questions_per_s"] for r in rs)
        row["best_questions_per_s"] = max(r["questions_per_s"] for r in rs)
        row["answer_s"] = statistics.median(r["answer_s"] for r in rs)
        row["score_s"] = statistics.median(r["score_s"] for r in rs)
        row["all_questions_per_s"] = [r["questions_per_s"] for r in rs]
        rows.append(row)
    base = next((r["questions_per_s"] for r in rows if r["batch"] == 1), None)
    for r in rows:
        r["x_batch1"] = r["questions_per_s"] / base if base else None
    print(C.table(rows, [("batch", "batch", "d"), ("questions", "questions", "d"),
                         ("answer_s", "answer s", ".2f"), ("questions_per_s", "questions/s (median)", ".1f"),
                         ("best_questions_per_s", "best", ".1f"), ("x_batch1", "x batch 1", ".2f"),
                         ("score_s", "score s", ".2f")]))
    result = {"benchmark": "eval", "machine": info, "device": str(device), "torch": torch.__version__,
              "config": args.cfg_path, "ckpt": args.ckpt, "max_new_tokens": args.max_new_tokens,
              "num_workers": args.num_workers, "precision": str(devices.autocast_dtype(device, args.precision)),
              "torch_threads": torch.get_num_threads(),
              "build_s": build_s, "rows": rows}
    out = C.write_json(C.result_path(args, "eval_vqa_tiny.json"), result)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
