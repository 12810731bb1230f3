"""The quickstart row: wall and CPU seconds per step of `bash quickstart.sh` and the scores it
reached, with the commit and machine it measured, kept as a history.

    bash quickstart.sh --force            # writes output/tiny/quickstart.json
    python -m benchmarks.quickstart       # adds it to benchmarks/results/quickstart.json, prints the history

quickstart.sh records each step's wall seconds and the CPU seconds (user + sys) of its processes:
on a machine shared with other work the wall time grows while the CPU time stays near what the
step needs, so a row whose wall time is far above its CPU time says the machine was busy.  Each
stage's median training samples/s comes from its metrics.jsonl.  A run already in the history
(same date and commit) is not added twice.  The first row (2026-12-02, before issue #20's changes)
was taken from the README's figures and its stages' logs; its CPU seconds were not recorded.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from . import _common as C

STEPS = ("setup", "data", "stage1", "stage2", "stage3", "stage4", "eval")
SCORES = (("vqav2", "VQA"), ("refcoco", "Acc@0.5"), ("coco_caption", "CIDEr"))


def stage_rates(output: Path) -> dict:
    """Median samples/s and steps of each stage's training log."""
    rates = {}
    for n in range(1, 5):
        path = output / f"stage{n}" / "metrics.jsonl"
        if path.exists():
            rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            sps = [r["samples_per_s"] for r in rows if "samples_per_s" in r]
            rates[f"stage{n}"] = {"steps": rows[-1]["step"] if rows else 0,
                                  "median_samples_per_s": statistics.median(sps) if sps else None}
    return rates


def row(run: dict) -> dict:
    """One history table row (seconds as `wall (cpu)`)."""
    steps = run["steps"]
    out = {"date": run["date"], "commit": run["commit"], "cpu": run["cpu"], "load": run.get("loadavg_at_start", "")}
    for name in STEPS:
        s = steps.get(name)
        if not s or s.get("skipped"):  # skipped: its checkpoint was there (a run without --force)
            out[name] = "skipped" if s else "-"
            continue
        out[name] = f"{s['wall_s']:.0f}" + (f" ({s['cpu_s']:.0f})" if s.get("cpu_s") is not None else "")
    out["total"] = f"{run['total_s']:.0f}"
    for key, label in SCORES:
        score = run["scores"].get(key)
        out[label] = f"{score:.2f}" if score is not None else "-"
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--record", default="output/tiny/quickstart.json", help="what quickstart.sh wrote")
    parser.add_argument("--out", default=str(C.RESULTS / "quickstart.json"), help="the history file")
    args = parser.parse_args(argv)

    record_path = Path(args.record)
    if not record_path.exists():
        print(f"{record_path}: not found; run `bash quickstart.sh` first", file=sys.stderr)
        return 2
    run = json.loads(record_path.read_text())
    run["stages"] = stage_rates(record_path.parent)
    out = Path(args.out)
    history = json.loads(out.read_text())["runs"] if out.exists() else []
    if not any((r["date"], r["commit"]) == (run["date"], run["commit"]) for r in history):
        history.append(run)
    C.write_json(out, {"benchmark": "quickstart", "runs": history})
    print(C.table([row(r) for r in history], [
        ("date", "date", "s"), ("commit", "commit", "s"), ("cpu", "CPU", "s"), ("load", "load at start", "s"),
        *[(name, f"{name} s wall (CPU)", "s") for name in STEPS], ("total", "total s", "s"),
        *[(label, label, "s") for _, label in SCORES]]))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
