"""benchmarks/quant_kernels.py at a small shape: every arm timed against bf16 with its error against
fp32, the chosen int8 arm (models/quantize.int8_linear) close, and a missing package a reported row."""
from __future__ import annotations

import sys

from benchmarks import quant_kernels


def test_arms_are_timed_and_checked_against_fp32(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchao", None)  # as where torchao is not installed
    monkeypatch.setitem(sys.modules, "torchao.quantization", None)
    rows = {r["arm"]: r for r in quant_kernels.measure(("small", 4, 256, 512),
                                                       ["bf16", "int8_dynamic", "int8_onednn", "int8_wo",
                                                        "int4_wo", "torchao_int8_wo"], rounds=2)}
    assert rows["bf16"]["vs_bf16"] == 1.0 and rows["bf16"]["rel_error"] < 0.01
    assert 0.001 < rows["int8_dynamic"]["rel_error"] < 0.05  # a real 8-bit product, close to fp32
    # the image side's kernel: the same quantization, the same error
    assert abs(rows["int8_onednn"]["rel_error"] - rows["int8_dynamic"]["rel_error"]) < 1e-4
    assert rows["int8_wo"]["rel_error"] < rows["int8_dynamic"]["rel_error"]  # weights only: inputs kept
    assert rows["int4_wo"]["rel_error"] > 0.05  # 16 levels per group of 128
    assert all(rows[a]["ms"] > 0 for a in ("bf16", "int8_dynamic", "int8_onednn", "int8_wo", "int4_wo"))
    assert "ModuleNotFoundError" in rows["torchao_int8_wo"]["error"] or "ImportError" in rows["torchao_int8_wo"]["error"]
