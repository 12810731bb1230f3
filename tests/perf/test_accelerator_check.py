"""scripts/accelerator_check.sh on CPU (what CI keeps working until a GPU/NPU runs it): the shell
wrapper runs benchmarks.accelerator_check end to end with a short training, writes its JSON and
markdown report where told, and passes."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_accelerator_check_passes_on_cpu_and_writes_its_report(tmp_path):
    out = tmp_path / "accelerator_cpu.json"
    env = {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(["bash", str(ROOT / "scripts/accelerator_check.sh"), "--device", "cpu", "--steps", "12",
                           "--no-tests", "--out", str(out)], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert proc.returncode in (0, 1), proc.stdout[-2000:] + proc.stderr[-2000:]
    report = json.loads(out.read_text())
    # The exit status is the report's verdict; of its criteria, 12 steps leave the greedy agreement
    # to near-ties (an undertrained model), so the test holds the others
    assert report["device"] == "cpu" and proc.returncode == (0 if report["ok"] else 1)
    assert report["training"]["ok"] is True
    assert report["doctor"]["environment"]["device"] == "cpu"
    training = report["training"]
    # precision auto on a CPU is fp32 (a bf16-autocast step of stage 1 takes minutes on a shared
    # 2-core host): the comparison is then exact, and the path a GPU/NPU takes is the same code
    assert training["device_run"]["precision"] == training["cpu_run"]["precision"] == "fp32"
    assert training["final_relative_diff"] < 1e-3
    assert len(training["device_run"]["loss"]) == len(training["cpu_run"]["loss"]) >= 10
    assert training["final_relative_diff"] <= training["tolerance"]
    assert report["inference"]["min_cosine"] >= 0.99 and 0 < report["inference"]["greedy_agreement"] <= 1
    assert report["throughput"]["generate_total_tok_s"] > 0
    table = out.with_suffix(".md").read_text()
    assert "| training fp32 vs cpu fp32 | ok |" in table and "| inference bf16 vs cpu fp32 |" in table and "| batched generation |" in table
