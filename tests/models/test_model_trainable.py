"""What trains in each stage: the tiny model's parameter sets, and the full-size counts on meta."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import tinygpt.models.tinygpt_v  # noqa: F401  (registers the "tinygpt_v" arch)
from tiny import tiny_model_config
from tinygpt.common.config import load_config
from tinygpt.inspect import count_parameters
from tinygpt.models.build import build_model

ROOT = Path(__file__).resolve().parents[2]
NORMS = ("input_layernorm.weight", "post_layernorm.weight", "q_layernorm.weight", "k_layernorm.weight",
         "final_layernorm.weight")


def trainable(model):
    return {n for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("lora_r", [0, 4])
def test_tiny_trainable_sets(tiny_root, lora_r):
    model = build_model(tiny_model_config(tiny_root, lora_r=lora_r), "cpu", load_weights=False)
    names = trainable(model)
    n_layers = len(model.llm.model.layers)
    projector = {n for n in names if n.startswith("projector.")}
    norms = {n for n in names if n.endswith(NORMS)}
    lora = {n for n in names if "lora_" in n}
    assert projector == {f"projector.{fc}.{leaf}" for fc in ("fc1", "fc2") for leaf in ("weight", "bias")}
    assert len(norms) == 4 * n_layers + 1  # norm weights only: their biases never train
    assert not any(n.endswith("layernorm.bias") for n in names)
    if lora_r:  # stages 2-4: A and B on the fused QKV and on dense, per layer
        assert lora == {f"llm.model.layers.{i}.self_attn.{m}.lora_{ab}.default.weight"
                        for i in range(n_layers) for m in ("query_key_value", "dense") for ab in "AB"}
    else:  # stage 1: no LoRA at all
        assert lora == set() and not any("lora_" in n for n, _ in model.named_parameters())
    assert names == projector | norms | lora  # towers and the Phi base stay frozen


FULL = {1: 13_809_664, 2: 45_266_944, 3: 45_266_944, 4: 45_266_944}


@pytest.mark.parametrize("stage", [1, 2, 3, 4])
def test_full_size_trainable_counts_on_meta(stage, monkeypatch):
    monkeypatch.chdir(ROOT)  # configs name paths relative to the repository root
    cfg = load_config(ROOT / f"train_configs/tinygptv_stage{stage}.yaml")
    rows = count_parameters(build_model(cfg, "meta"))
    assert rows["all"]["trainable"] == FULL[stage]
    assert rows["qformer"] == {"total": 105_137_664, "trainable": 0}
    assert rows["query_tokens"] == {"total": 24_576, "trainable": 0}
    assert rows["projector"]["trainable"] == 768 * 4096 + 4096 + 4096 * 2560 + 2560
    assert rows.get("llm_lora", {"trainable": 0})["trainable"] == (0 if stage == 1 else 31_457_280)


# SigLIP so400m without its head and final norm (27 blocks of width 1152: 412,984,944), the MLP
# connector 1152 -> 896 -> 896 (1152*896 + 896 + 896*896 + 896), Qwen2.5-0.5B with tied embeddings.
SIGLIP, MLP, QWEN = 412_984_944, 1152 * 896 + 896 + 896 * 896 + 896, 494_032_768


@pytest.mark.parametrize("stage,trains", [(1, MLP), (2, MLP + QWEN)])
def test_llava_recipe_counts_on_meta(stage, trains, monkeypatch):
    monkeypatch.chdir(ROOT)
    cfg = load_config(ROOT / f"train_configs/llava_siglip_qwen2.5/stage{stage}.yaml")
    model = build_model(cfg, "meta")
    rows = count_parameters(model)
    assert rows["visual_encoder"] == {"total": SIGLIP, "trainable": 0}
    assert rows["projector"] == {"total": MLP, "trainable": MLP}
    assert rows["all"] == {"total": SIGLIP + MLP + QWEN, "trainable": trains}
    assert model.n_visual_tokens == (384 // 14) ** 2 == 729


def test_inspect_cli_prints_the_counts(capsys, monkeypatch):
    import tinygpt.inspect

    monkeypatch.chdir(ROOT)
    assert tinygpt.inspect.main(["--cfg-path", str(ROOT / "train_configs/tinygptv_stage2.yaml"), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["parameters"]
    assert rows["all"]["trainable"] == 45_266_944
