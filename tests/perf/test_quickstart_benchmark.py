"""benchmarks/quickstart.py: quickstart.sh's record becomes one history row (wall and CPU seconds,
scores, commit), each stage's median samples/s is read from its log, and a run is kept once."""
from __future__ import annotations

import json

from benchmarks import quickstart

STEPS = {"setup": (1, 0.5), "data": (15, 9.0), "stage1": (150, 140.0), "stage2": (80, 75.0),
         "stage3": (120, 110.0), "stage4": (130, 120.0), "eval": (40, 38.0)}


def _record(root, commit="abc1234"):
    root.mkdir(parents=True, exist_ok=True)
    for n, rates in ((1, [40.0, 50.0, 60.0]), (3, [90.0, 70.0])):
        stage = root / f"stage{n}"
        stage.mkdir(exist_ok=True)
        (stage / "metrics.jsonl").write_text("".join(
            json.dumps({"step": 50 * (i + 1), "loss": 1.0, "samples_per_s": r}) + "\n" for i, r in enumerate(rates)))
    record = {"date": "2026-12-03 10:00", "commit": commit, "forced": True, "cpu": "AMD EPYC", "cpu_count": 2,
              "loadavg_at_start": "0.10 0.20 0.30", "loadavg_at_end": "1.00 1.00 1.00",
              "steps": {k: {"wall_s": w, "cpu_s": c} for k, (w, c) in STEPS.items()}, "total_s": 536,
              "scores": {"vqav2": 90.5, "refcoco": 80.25, "coco_caption": 500.0}}
    path = root / "quickstart.json"
    path.write_text(json.dumps(record))
    return path


def test_record_becomes_one_history_row(tmp_path, capsys):
    record = _record(tmp_path / "output")
    history = tmp_path / "results" / "quickstart.json"
    for _ in range(2):  # the same run twice: kept once
        assert quickstart.main(["--record", str(record), "--out", str(history)]) == 0
    runs = json.loads(history.read_text())["runs"]
    assert len(runs) == 1
    assert runs[0]["stages"]["stage1"] == {"steps": 150, "median_samples_per_s": 50.0}
    assert runs[0]["stages"]["stage3"]["median_samples_per_s"] == 80.0 and "stage2" not in runs[0]["stages"]
    printed = capsys.readouterr().out
    assert "| 2026-12-03 10:00 | abc1234 | AMD EPYC | 0.10 0.20 0.30 | 1 (0) | 15 (9) | 150 (140) |" in printed
    assert "| 536 | 90.50 | 80.25 | 500.00 |" in printed

    quickstart.main(["--record", str(_record(tmp_path / "output", commit="def5678")), "--out", str(history)])
    assert [r["commit"] for r in json.loads(history.read_text())["runs"]] == ["abc1234", "def5678"]


def test_missing_record_says_how_to_make_one(tmp_path, capsys):
    assert quickstart.main(["--record", str(tmp_path / "none.json"), "--out", str(tmp_path / "h.json")]) == 2
    assert "bash quickstart.sh" in capsys.readouterr().err


def test_a_stage_skipped_because_its_checkpoint_existed_says_so(tmp_path, capsys):
    record = _record(tmp_path / "output")
    run = json.loads(record.read_text())
    run["steps"]["stage1"] = {"wall_s": 0, "cpu_s": 0, "skipped": True}  # what quickstart.sh writes then
    record.write_text(json.dumps(run))
    assert quickstart.main(["--record", str(record), "--out", str(tmp_path / "h.json")]) == 0
    assert "| 15 (9) | skipped | 80 (75) |" in capsys.readouterr().out
