"""benchmarks/chat.py on the tiny preset: both arms measured on one model, the JSON row complete."""
from __future__ import annotations

import json

import pytest

from benchmarks import chat
from tinygpt.common import device as devices


def test_chat_row_measures_both_arms_and_records_the_commit(tmp_path, monkeypatch):
    monkeypatch.setattr(devices, "_matmul_probe", lambda dtype: {  # bf16 slow from 4 rows
        m: {"native_ms": 10.0 if m >= 4 else 1.0, "upcast_ms": 1.0 if m >= 4 else 2.0} for m in (1, 4, 16, 64)})
    out = tmp_path / "chat.json"
    assert chat.main(["--dtype", "bf16", "--rounds", "2", "--batches", "1", "4", "--new-tokens", "3",
                      "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["benchmark"] == "chat" and len(result["commit"]) == 40 and result["machine"]["cpu"]
    assert {(r["arm"], r["batch"]) for r in result["rows"]} == {(a, b) for a in ("storage", "auto") for b in (1, 4)}
    assert all(r["runs"] == 2 and r["ttft_s"] > 0 and r["peak_mem_gb"] > 0 for r in result["rows"])
    assert any(line.startswith("visual_encoder (bf16 weights, 5 rows/image): fp32") for line in result["choices"])
    assert result["policy"]["upcast_rows"] == 4 and set(result["speedups"]) == {"auto_vs_storage_b1", "auto_vs_storage_b4"}


@pytest.mark.slow
def test_int8_arm_is_timed_against_auto_with_its_quality_and_its_own_peak(tmp_path):
    out = tmp_path / "chat_int8.json"
    assert chat.main(["--arms", "auto", "int8", "--rounds", "2", "--batches", "1", "--new-tokens", "3",
                      "--own-process", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert {r["arm"] for r in result["rows"]} == {"auto", "int8"} and result["quantize_s"] > 0
    quality = result["int8_quality"]  # int8 Linears against the same float weights
    assert quality["min_cosine"] > 0.99 and 0 <= quality["greedy_agreement_forced"] <= 1
    assert quality["positions"] == 1 + 4 + 32  # BOS + the tiny preset's visual tokens + the prompt
    own = result["own_process"]  # each arm built as a user's build, in a process of its own
    assert own["int8"]["weights_gb"] < 0.8 * own["auto"]["weights_gb"]  # the tiny preset is mostly embeddings
    assert all(own[arm]["peak_rss_gb"] > own[arm]["weights_gb"] and own[arm]["ttft_s"] > 0 for arm in own)
    # the build's peak counts too (each turn starts a new peak window)
    assert all(own[arm]["peak_rss_gb"] == max(own[arm]["build_peak_rss_gb"], own[arm]["turn_peak_rss_gb"]) for arm in own)
    assert set(result["speedups"]) == {"int8_vs_auto_b1"}
