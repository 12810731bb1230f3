"""The README's quick-start figures are the last run recorded in benchmarks/results/quickstart.json
(`python -m benchmarks.quickstart` appends what `bash quickstart.sh` wrote), never typed by hand."""
import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ROWS = {"VQAv2-format questions": "vqav2", "RefCOCO-format referring expressions": "refcoco",
        "COCO-format captions": "coco_caption"}


def test_quickstart_scores_and_cpu_time_are_the_recorded_run():
    last = json.loads((ROOT / "benchmarks" / "results" / "quickstart.json").read_text())["runs"][-1]
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for label, key in ROWS.items():
        row = re.search(rf"^\| {re.escape(label)} \| [^|]+ \| ([\d.]+) \|", readme, re.M)
        assert row, f"README has no quick-start row for {label}"
        assert float(row.group(1)) == last["scores"][key], f"{label}: README {row.group(1)}, recorded {last['scores'][key]}"
    cpu_minutes = sum(step["cpu_s"] for step in last["steps"].values()) / 60
    said = re.search(r"about (\d+) minutes of CPU time", readme)
    assert said and int(said.group(1)) == round(cpu_minutes), f"README says {said and said.group(0)}, recorded {cpu_minutes:.1f}"
