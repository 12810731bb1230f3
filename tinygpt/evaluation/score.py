"""Score a prediction file against a benchmark's official annotations.

    python -m tinygpt.evaluation.score --benchmark vqav2 --pred preds.json \
        --ann v2_mscoco_val2014_annotations.json --ques v2_OpenEnded_mscoco_val2014_questions.json \
        [--compat tinygptv] [--json result.json] [--spice]

Prints the overall figure and the breakdown; `--json` also writes the full result (atomically).
Bad input (missing file, malformed JSON, a missing or unknown prediction) prints one line naming
the file and exits with status 2.
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from tinygpt.common import atomic
from tinygpt.common.errors import entry_point
from tinygpt.common.registry import registry
from tinygpt.evaluation import COMPAT_MODES, get_scorer


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tinygpt.evaluation.score",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--benchmark", required=True, choices=registry.names("benchmark"))
    p.add_argument("--pred", required=True, help="predictions / results JSON")
    p.add_argument("--ann", required=True,
                   help="official annotations (GQA: the questions file; IconQA: problems.json)")
    p.add_argument("--ques", help="official questions file (VQA) / pid_splits.json (IconQA)")
    p.add_argument("--compat", choices=COMPAT_MODES,
                   help="TinyGPT-V's lenient scoring (gqa, vsr, iconqa, vizwiz, hateful_memes)")
    p.add_argument("--json", dest="json_out", help="also write the full result here")
    p.add_argument("--spice", action="store_true", help="coco_caption: also compute SPICE")
    return p


def format_result(result: dict) -> str:
    """Human-readable: the headline, then each breakdown as `name  value` lines."""
    compat = f" [{result['compat']} compat]" if result.get("compat") else ""
    lines = [f"{result['benchmark']} {result['metric']}{compat}: {result['overall']:.2f}"
             f"  (n={result['n']})"]
    scalars = {k: v for k, v in result["breakdown"].items() if not isinstance(v, dict)}
    tables = {k: v for k, v in result["breakdown"].items() if isinstance(v, dict)}
    rows = list(scalars.items())
    for name, table in tables.items():
        rows.append((name, None))
        rows.extend((f"  {k}", v) for k, v in table.items())
    width = max((len(k) for k, _ in rows), default=0)
    for k, v in rows:
        if v is None:
            lines.append(k)
        else:
            value = f"{v:8.2f}" if isinstance(v, float) else f"{v:>8}"
            lines.append(f"{k.ljust(width)}  {value}")
    return "\n".join(lines)


@entry_point("python -m tinygpt.evaluation.score")
def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.spice and args.benchmark != "coco_caption":
        parser.error("--spice only applies to --benchmark coco_caption")
    options = {"spice": True} if args.spice else {}
    result = get_scorer(args.benchmark, **options).score(args.pred, ann=args.ann, ques=args.ques, compat=args.compat)
    print(format_result(result))
    for note in result["notes"]:
        print(f"note: {note}", file=sys.stderr)
    if args.json_out:
        atomic.write_json(args.json_out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
