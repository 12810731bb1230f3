"""Which Linears get LoRA (models/lora.py): TinyGPT-V's fused q/k/v exactly as it was, peft's
per-model-type defaults where peft has one, every Linear but the LM head (peft's all-linear) where it
has none or with `lora.mlp`, the YAML's `targets` above all; the choice is recorded in checkpoints,
shown by `python -m tinygpt.inspect`, and a file adapted elsewhere is refused naming the key to set."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from backbones import save_llm
from models.test_llm_families import family_model
from tiny import tiny_model_config
from tinygpt.common.config import LoRAConfig
from tinygpt.common.errors import UserError
from tinygpt.models import lora
from tinygpt.models.build import build_model
from tinygpt.models.llm import family_of
from tinygpt.models.weights import WeightLoadError, load_checkpoint, save_trainable

ATTN = ("k_proj", "o_proj", "q_proj", "v_proj")
MLP = ("down_proj", "gate_proj", "up_proj")
# family: (modules by default, with lora.mlp) on the tiny models of tests/backbones.py
EXPECTED = {
    "tinygptv_phi": (("dense", "query_key_value"), ("dense", "fc1", "fc2", "query_key_value")),
    "phi": (("fc1", "fc2", "q_proj", "v_proj"), ("dense", "fc1", "fc2", "k_proj", "q_proj", "v_proj")),
    # Phi-3 fuses q/k/v and gate/up; peft has no default for it: all-linear either way.
    "phi3": (("down_proj", "gate_up_proj", "o_proj", "qkv_proj"),) * 2,
    **{family: (("q_proj", "v_proj"), tuple(sorted(ATTN + MLP))) for family in ("qwen2", "llama", "gemma2", "stablelm")},
}
# LoRA of rank r on a Linear(in, out) adds r * (in + out); r = 2, H = 32, k/v width 16, MLP 64, 2 layers.
COUNTS = {
    # q_proj 2*(32+32) + v_proj 2*(32+16) = 224; fc1 2*(32+64) + fc2 = 384; + k 96 + dense 128
    "phi": (2 * (224 + 384), 2 * (224 + 384 + 96 + 128)),
    "phi3": (2 * (192 + 128 + 320 + 192),) * 2,
    **{family: (2 * 224, 2 * (448 + 576)) for family in ("qwen2", "llama", "gemma2", "stablelm")},
    # TinyGPT-V's Phi (4 k/v heads): query_key_value 2*(32+96) + dense 128 = 384; fc1 2*(32+128) + fc2 = 640
    "tinygptv_phi": (2 * 384, 2 * (384 + 640)),
}


def injected(family, tmp_path, **cfg):
    model = family_model(family, tmp_path)
    targets = lora.inject_lora(model, LoRAConfig(r=2, alpha=4, **cfg), family_of(model))
    return model, targets


@pytest.mark.parametrize("family", EXPECTED)
@pytest.mark.parametrize("mlp", [False, True])
def test_default_targets_per_family(family, mlp, tmp_path):
    model, targets = injected(family, tmp_path, mlp=mlp)
    assert targets.modules == EXPECTED[family][mlp] == lora.adapted_modules(model)
    assert sum(p.numel() for n, p in model.named_parameters() if "lora_" in n) == COUNTS[family][mlp]
    assert "lm_head" not in targets.modules  # never the head (nor the embeddings: not Linears)
    if family == "tinygptv_phi":
        assert targets.origin == "TinyGPT-V's fused q/k/v + dense"
    elif family == "phi3" or mlp:
        assert "all-linear" in targets.origin
    else:
        assert targets.origin == f"peft's default for {family}"


def test_a_family_without_our_table_trains_its_attention_and_mlp(tmp_path):
    """The issue's new-user case: a type peft has no default for gets every Linear but the head."""
    from transformers import GraniteConfig, GraniteForCausalLM

    model = GraniteForCausalLM(GraniteConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                             num_attention_heads=4, num_key_value_heads=2))
    targets = lora.inject_lora(model, LoRAConfig(r=2), "granite")
    assert targets.modules == tuple(sorted(ATTN + MLP))
    assert targets.origin == "every Linear but the LM head (peft's all-linear: peft has no default for granite)"


def test_targets_override_every_default_and_a_missing_name_is_refused(tmp_path):
    for family in ("tinygptv_phi", "qwen2", "phi3"):
        model = family_model(family, tmp_path)
        name = "dense" if family == "tinygptv_phi" else "o_proj"
        targets = lora.inject_lora(model, LoRAConfig(r=2, targets=[name], mlp=True), family_of(model))
        assert targets.modules == (name,) and targets.origin == "model.llm.lora.targets"
    with pytest.raises(UserError, match=r"stage2.yaml: key 'model.llm.lora.targets': the qwen2 LLM has no Linear "
                                        r"named qkv_proj \(its Linears: down_proj, gate_proj, .*\)"):
        lora.inject_lora(family_model("qwen2", tmp_path), LoRAConfig(r=2, targets=["qkv_proj"]), "qwen2", "stage2.yaml")


def test_a_peft_default_naming_no_module_of_the_model_falls_back_to_all_linear(tmp_path, monkeypatch):
    monkeypatch.setitem(lora.PEFT_DEFAULTS, "llama", r".*\.self_attn\.(q_proj|o_proj)")  # a regex default
    assert injected("llama", tmp_path)[1].modules == ("o_proj", "q_proj")
    monkeypatch.setitem(lora.PEFT_DEFAULTS, "llama", r".*language_model\..*\.q_proj")  # Gemma-4 style: no match
    targets = injected("llama", tmp_path)[1]
    assert targets.modules == tuple(sorted(ATTN + MLP))
    assert "peft has a default naming no module of this model" in targets.origin


def test_rank_zero_is_no_lora(tmp_path):
    model = family_model("qwen2", tmp_path)
    assert lora.inject_lora(model, LoRAConfig(r=0), "qwen2") is None and not lora.adapted_modules(model)


# ----------------------------------------------------------------------------- through the model
def qwen_config(root, tmp, **lora_cfg):
    cfg = tiny_model_config(root)
    if not (tmp / "qwen").exists():
        save_llm("qwen2", tmp / "qwen", vocab_size=512)
    cfg.llm.family, cfg.llm.hf_config = "auto", str(tmp / "qwen")
    for key, value in lora_cfg.items():
        setattr(cfg.llm.lora, key, value)
    return cfg


def test_targets_are_recorded_in_the_checkpoint_and_a_mismatch_names_the_key(tiny_root, tmp_path):
    model = build_model(qwen_config(tiny_root, tmp_path), "cpu", load_weights=False)
    assert model.lora_targets.modules == ("q_proj", "v_proj")
    save_trainable(model, str(tmp_path / "stage2.safetensors"))
    with safe_open(str(tmp_path / "stage2.safetensors"), "pt") as f:
        assert json.loads(f.metadata()["lora_targets"]) == ["q_proj", "v_proj"]

    # The same defaults load it; LoRA on every Linear does not, and the error says how to load it.
    assert load_checkpoint(build_model(qwen_config(tiny_root, tmp_path), "cpu", load_weights=False),
                           str(tmp_path / "stage2.safetensors")).ok
    wide = build_model(qwen_config(tiny_root, tmp_path, mlp=True), "cpu", load_weights=False)
    before = {n: p.clone() for n, p in wide.named_parameters() if "lora_" in n}
    with pytest.raises(WeightLoadError, match=r"stage2.safetensors: its LoRA adapters are on q_proj, v_proj but this "
                                              r"model puts them on down_proj, gate_proj, k_proj, o_proj, q_proj, "
                                              r"up_proj, v_proj; set model.llm.lora.targets: \[q_proj, v_proj\]"):
        load_checkpoint(wide, str(tmp_path / "stage2.safetensors"))
    assert all(torch.equal(p, before[n]) for n, p in wide.named_parameters() if "lora_" in n)
    narrowed = build_model(qwen_config(tiny_root, tmp_path, targets=["q_proj", "v_proj"], mlp=True), "cpu",
                           load_weights=False)
    assert load_checkpoint(narrowed, str(tmp_path / "stage2.safetensors")).ok


def test_inspect_shows_the_chosen_modules(capsys, monkeypatch):
    import tinygpt.inspect
    from pathlib import Path

    monkeypatch.chdir(Path(__file__).resolve().parents[2])
    assert tinygpt.inspect.main(["--cfg-path", "train_configs/tinygptv_stage2.yaml"]) == 0
    assert "LoRA targets: dense, query_key_value (TinyGPT-V's fused q/k/v + dense)" in capsys.readouterr().out
    assert tinygpt.inspect.main(["--cfg-path", "train_configs/tinygptv_stage1.yaml", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["lora_targets"] is None
    assert tinygpt.inspect.main(["--cfg-path", "train_configs/llava_siglip_qwen2.5/stage2.yaml", "--json",
                                 "--options", "model.llm.lora.r=8"]) == 0
    assert json.loads(capsys.readouterr().out)["lora_targets"] == {"modules": ["q_proj", "v_proj"],
                                                                  "origin": "peft's default for qwen2"}
