"""Every model type of transformers' causal-LM auto mapping as `model.llm`, and a list of vision
models as `model.vision.kind: hf` (benchmarks/backbones.py):
a tiny random config of its own class, saved with save_pretrained, joined to a tiny tower, LoRA with
the defaults, train steps on a fixed batch (loss finite and falling), saved, rebuilt for inference
from the files (the same loss), generating.  Each type must do what docs/backbones.md's table
(benchmarks/results/backbones_llm.json) says: work, or fail at the stage the table gives, whose
reason is printed.  A type the table does not know yet must work or be one transformers cannot
make tiny.  After a transformers upgrade: `python -m benchmarks.backbones --record` (and `--only onnx
--record` for the sample of the ONNX walk at the end)."""
from __future__ import annotations

import pytest
import torch

from benchmarks.backbones import TOWER_TYPES, causal_lm_types, recorded, walk_llm, walk_onnx, walk_tower
# transformers itself cannot give (or run) a tiny model of the type
NOT_OURS = ("tiny config", "instantiate", "transformers' own forward")


@pytest.fixture
def one_thread():
    # Tiny matmuls on a shared machine: one thread is ~10x faster than two waiting for each other.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def check(row: dict, recorded_row: dict | None) -> None:
    print(f"{row['family']}: {'works' if row['works'] else row['stage'] + ': ' + row['why']} ({row['seconds']} s)")
    if recorded_row is None:
        assert row["works"] or row["stage"] in NOT_OURS, row
    else:
        assert (row["works"], row["stage"]) == (recorded_row["works"], recorded_row["stage"]), (row, recorded_row)
    if row["works"]:
        assert row["lora"] and "lm_head" not in row["lora"]


@pytest.mark.slow
@pytest.mark.parametrize("family", causal_lm_types())
def test_every_causal_lm_family(family, tmp_path, one_thread):
    check(walk_llm(family, tmp_path), recorded("llm").get(family))


@pytest.mark.slow
@pytest.mark.parametrize("tower", TOWER_TYPES)
def test_vision_towers_through_kind_hf(tower, tmp_path, one_thread):
    """Each tower's features are transformers' own penultimate hidden states without the prefix
    tokens, and it trains, reloads and answers (benchmarks/backbones.py walk_tower)."""
    check(walk_tower(tower, tmp_path), recorded("towers").get(tower))


# The ONNX walk (docs/export.md's table) takes ~5 s a type: a sample of what it distinguishes, held to the
# recorded table (MoE through batched_mm experts, Gemma-3's scaled embeddings and sliding layers,
# RoBERTa's own positions, a recurrent state refused up front, per-layer head sizes refused).
ONNX_SAMPLE = ("mixtral", "gemma3_text", "data2vec-text", "rwkv", "gemma4_unified_text")


@pytest.mark.slow
@pytest.mark.parametrize("family", ONNX_SAMPLE)
def test_onnx_export_of_a_sample_of_families(family, tmp_path, one_thread):
    row, want = walk_onnx(family, tmp_path), recorded("onnx")[family]
    print(f"{family}: {'works' if row['works'] else row['stage'] + ': ' + row['why']} ({row['seconds']} s)")
    assert (row["works"], row["stage"]) == (want["works"], want["stage"]), (row, want)
    if row["works"]:
        assert row["logits_diff"] < 1e-4
