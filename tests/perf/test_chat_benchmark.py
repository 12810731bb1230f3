"""benchmarks/chat.py on the tiny preset: both arms measured on one model, the JSON row complete."""
from __future__ import annotations

import argparse
import copy
import json

import pytest
import torch

from benchmarks import _common as C
from benchmarks import chat, generate
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
    # fp32 weights: auto computes exactly what the exact reference computes; int8 does not
    assert quality["auto_min_cosine_vs_exact"] > 0.99999 and 0.99 < quality["min_cosine_vs_exact"] < 0.99999
    assert quality["positions"] == 1 + 4 + 32  # BOS + the tiny preset's visual tokens + the prompt
    own = result["own_process"]  # each arm built as a user's build, in a process of its own
    assert own["int8"]["weights_gb"] < 0.8 * own["auto"]["weights_gb"]  # the tiny preset is mostly embeddings
    assert all(own[arm]["peak_rss_gb"] > own[arm]["weights_gb"] and own[arm]["ttft_s"] > 0 for arm in own)
    # the build's peak counts too (each turn starts a new peak window)
    assert all(own[arm]["peak_rss_gb"] == max(own[arm]["build_peak_rss_gb"], own[arm]["turn_peak_rss_gb"]) for arm in own)
    assert set(result["speedups"]) == {"int8_vs_auto_b1"}


def test_exact_reference_computes_bf16_weights_in_fp32_and_restores_the_model(tmp_path, monkeypatch):
    """The reference the int8 quality is taken against: the bf16 weights with every matmul and
    activation in fp32 -- what the same model converted to fp32 computes -- and afterwards the model
    is the bf16 build again."""
    monkeypatch.setattr(C, "workdir", lambda name: tmp_path / name)
    args = argparse.Namespace(full_size=False, cfg_path=None, preset="tiny", image_size=None, dtype="bf16",
                              training_build=False, compute_dtype="storage")
    model, *_ = generate.build(args, torch.device("cpu"))
    fp32 = copy.deepcopy(model).float()
    dtypes = {name: p.dtype for name, p in model.named_parameters()}
    images = torch.randn(2, 3, 28, 28)
    embeds = torch.randn(2, 7, model.llm.config.hidden_size)
    arms = chat.Arms(model, torch.device("cpu"))
    with torch.no_grad():
        with arms.exact():
            visual = model.encode_images(images)
            logits = model.llm(inputs_embeds=embeds).logits
        want_visual, want_logits = fp32.encode_images(images), fp32.llm(inputs_embeds=embeds).logits
        stored = model.llm(inputs_embeds=embeds.bfloat16()).logits
    assert visual.dtype == logits.dtype == torch.float32
    torch.testing.assert_close(visual, want_visual, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(logits, want_logits, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(stored.float(), want_logits, rtol=1e-5, atol=1e-5)  # bf16 compute is not exact
    assert {name: p.dtype for name, p in model.named_parameters()} == dtypes
