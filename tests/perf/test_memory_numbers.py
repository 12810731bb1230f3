"""benchmarks/memory.py on CPU: the peak follows a real allocation and the summary has the RSS."""
from __future__ import annotations

import torch

from benchmarks import _common as C
from benchmarks import memory


def test_cpu_memory_numbers():
    memory.reset_peak_memory("cpu")
    before = memory.peak_memory_bytes("cpu")
    block = torch.ones(64 * 2**20 // 4)  # 64 MiB, written so the pages are resident
    assert memory.peak_memory_bytes("cpu") >= before + 60 * 2**20 or before > 64 * 2**20
    del block
    summary = memory.memory_summary("cpu")
    assert summary["peak_rss"] > 0 and summary.get("rss", 1) > 0
    C.synchronize("cpu")  # a no-op without an accelerator
