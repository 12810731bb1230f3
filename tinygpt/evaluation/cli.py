"""The body of eval_scripts/evaluate.py (and its thin eval_vqa / eval_ref / eval_caption wrappers).

    python eval_scripts/evaluate.py --cfg-path eval_configs/tiny.yaml
    torchrun --nproc-per-node 8 eval_scripts/evaluate.py --cfg-path eval_configs/tinygptv_stage4.yaml \
        --benchmarks gqa,vsr,hateful_memes [--compat tinygptv] [--options evaluation.benchmarks.gqa.max_samples=500]

Order: config -> benchmark selection and every file/image checked (before any weights load) ->
device and process group -> model -> EvaluationRunner.  Prints the metrics table and where the
files are.  Exit status: 0 done, 1 some benchmark could not be scored, 2 bad config or input.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Optional, Sequence

from tinygpt.common.errors import entry_point
from tinygpt.evaluation.metrics.base import COMPAT_MODES

_USES = {
    None: "evaluate benchmarks from an eval config",
    "vqa": "evaluate VQA-style benchmarks (vqav2, okvqa, gqa, vizwiz, iconqa, vsr, hateful_memes)",
    "ref": "evaluate referring-expression grounding (refcoco, refcoco+, refcocog)",
    "caption": "evaluate captioning (coco_caption)",
}


def build_parser(prog: str, family: Optional[str]) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=f"{_USES[family]}; see docs/evaluation.md.")
    p.add_argument("--cfg-path", required=True, help="eval_configs/<config>.yaml")
    p.add_argument("--benchmarks", "--dataset", dest="benchmarks", default="",
                   help="comma-separated evaluation.benchmarks keys (default: every configured one"
                        + (" of this family" if family else "") + ")")
    p.add_argument("--options", nargs="*", default=[], help="overrides, e.g. evaluation.benchmarks.gqa.max_samples=100")
    p.add_argument("--model", metavar="DIR", help="evaluate an exported model directory (python -m tinygpt.export) "
                   "instead of the config's model section")
    p.add_argument("--compat", choices=COMPAT_MODES,
                   help="also score with TinyGPT-V's lenient rules where defined (reported as separate rows)")
    p.add_argument("--restart", action="store_true",
                   help="discard earlier partial answers instead of resuming from them")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


@entry_point("evaluate.py")
def main(argv: Optional[Sequence[str]] = None, *, prog: str = "evaluate.py", family: Optional[str] = None) -> int:
    args = build_parser(prog, family).parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import tinygpt
    from tinygpt.common import device as devices
    from tinygpt.common import dist
    from tinygpt.common.rng import seed_everything
    from tinygpt.evaluation.runner import EvaluationRunner, prepare, select_benchmarks

    names = [n.strip() for n in args.benchmarks.split(",") if n.strip()]
    try:
        cfg = tinygpt.load_config(args.cfg_path, args.options)
        if args.model:
            from tinygpt.export import load_exported_config

            cfg.model = load_exported_config(args.model).model
            if not any(o.startswith("evaluation.output_dir=") for o in args.options):
                # Its own answers and scores, beside the model: never mixed with the config's run.
                cfg.evaluation.output_dir = os.path.join(args.model, "eval")
        splits = prepare(cfg, select_benchmarks(cfg, names, family))
        device = devices.resolve_device(cfg.run.device)
        info = dist.init_distributed(device)
        seed_everything(cfg.run.seed)  # same weights on every rank where a config leaves some random
        model = tinygpt.build_model(cfg, device, training=False)  # LoRA merged, frozen, half precision
        report = EvaluationRunner(cfg, model, device, splits, compat=args.compat, restart=args.restart,
                                  progress=not args.no_progress).run()
    finally:
        dist.cleanup()
    if not info.is_main:
        return 0
    if report.table:
        print(report.table)
    for label, path in report.predictions.items():
        print(f"predictions ({label}): {path}")
    print(f"results: {report.results_json}")
    print(f"table: {report.results_md}")
    for row, message in report.errors.items():
        print(f"{prog}: {row} not scored: {message}", file=sys.stderr)
    return 1 if report.errors else 0


if __name__ == "__main__":
    sys.exit(main())
