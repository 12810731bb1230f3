"""Any HF causal LM as `model.llm` (tinygpt/models/llm.py, weights/hf_causal_lm.py): for each family a
tiny random model from the family's own transformers config class, saved with save_pretrained, built
with build_causal_lm and loaded through our loader: every key placed, logits equal to transformers'
own; its norms found and kept in fp32 (LoRA targets: test_lora_targets.py).
"""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from backbones import FAMILIES, SHAPE, reference_llm
from tinygpt.common.errors import UserError
from tinygpt.models import llm as llms
from tinygpt.models import phi
from tinygpt.models.weights import WeightLoadError, load_hf_causal_lm

class Holder(nn.Module):
    """What the loader sees: a model with an `llm` attribute."""

    def __init__(self, llm: nn.Module):
        super().__init__()
        self.llm = llm


def reference(family: str, seed: int = 0) -> nn.Module:
    return reference_llm(family, seed)


def saved(family: str, directory, **save_kwargs) -> nn.Module:
    model = reference(family)
    model.save_pretrained(directory, **save_kwargs)
    return model


def loaded(directory, path=None):
    torch.manual_seed(1)  # a different init than the reference's: only the file can make them equal
    holder = Holder(llms.build_causal_lm(directory, "eager")).eval()
    return holder, load_hf_causal_lm(holder, str(path or directory))


IDS = torch.tensor([[5, 17, 99, 3, 42, 7], [1, 2, 3, 4, 5, 6]])


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_loads_exactly_from_save_pretrained(family, tmp_path):
    ref = saved(family, tmp_path)
    holder, report = loaded(tmp_path)
    assert report.ok and not report.unexpected and not report.missing, report.summary()
    assert set(report.loaded) == {n for n, _ in holder.named_parameters()}  # every parameter from the file
    assert llms.family_of(holder.llm) == family
    with torch.no_grad():
        torch.testing.assert_close(holder.llm(IDS).logits, ref(IDS).logits)


def test_tied_head_is_the_embedding_and_a_file_copy_of_it_is_ignored(tmp_path):
    ref = reference("qwen2")
    # torch.save of a state dict keeps lm_head.weight (the same tensor as the embedding) as its own key.
    torch.save(ref.state_dict(), tmp_path / "pytorch_model.bin")
    ref.config.save_pretrained(tmp_path)
    holder, report = loaded(tmp_path)
    assert report.ok and report.ignored == {"lm_head.weight": "tied to model.embed_tokens.weight (tie_word_embeddings)"}
    assert holder.llm.lm_head.weight is holder.llm.model.embed_tokens.weight
    with torch.no_grad():
        torch.testing.assert_close(holder.llm(IDS).logits, ref(IDS).logits)


def test_sharded_safetensors_directory(tmp_path):
    ref = saved("llama", tmp_path, max_shard_size="20KB")
    assert (tmp_path / "model.safetensors.index.json").exists() and len(list(tmp_path.glob("*.safetensors"))) > 2
    holder, report = loaded(tmp_path)
    assert report.ok and not report.ignored
    with torch.no_grad():
        torch.testing.assert_close(holder.llm(IDS).logits, ref(IDS).logits)


def test_a_missing_or_foreign_key_refuses_before_touching_the_model(tmp_path):
    ref = saved("llama", tmp_path)
    state = {k: v.contiguous() for k, v in ref.state_dict().items() if k != "model.layers.1.mlp.up_proj.weight"}
    state["model.layers.0.self_attn.qkv_proj.weight"] = torch.zeros(64, 32)
    save_file(state, tmp_path / "partial.safetensors")
    holder = Holder(llms.build_causal_lm(tmp_path))
    before = holder.llm.model.embed_tokens.weight.clone()
    with pytest.raises(WeightLoadError) as err:
        load_hf_causal_lm(holder, str(tmp_path / "partial.safetensors"))
    assert err.value.report.missing == ["llm.model.layers.1.mlp.up_proj.weight"]
    assert err.value.report.unexpected == ["model.layers.0.self_attn.qkv_proj.weight (-> llm.model.layers.0.self_attn.qkv_proj.weight)"]
    assert torch.equal(holder.llm.model.embed_tokens.weight, before)


def test_the_config_dtype_does_not_choose_the_build_dtype(tmp_path):
    config_class, _, extra = FAMILIES["qwen2"]
    config = config_class(**SHAPE, **extra)
    config.dtype = "bfloat16"  # what published config.json files say
    config.save_pretrained(tmp_path)
    assert {p.dtype for p in llms.build_causal_lm(tmp_path / "config.json").parameters()} == {torch.float32}
    with torch.device("meta"):
        assert {p.device.type for p in llms.build_causal_lm(tmp_path).parameters()} == {"meta"}


def test_unreadable_config_is_a_user_error(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "no_such_family"}')
    with pytest.raises(UserError, match="config.json: not a readable Hugging Face LLM config"):
        llms.build_causal_lm(tmp_path / "config.json")


def tinygptv_phi(tmp_path) -> nn.Module:
    config = phi.load_phi_config(str(phi.write_phi_config(tmp_path / "phi.json", 128, 32, 2, 4)))
    return phi.TinyGPTVPhiForCausalLM(config)


def family_model(family, tmp_path) -> nn.Module:
    return tinygptv_phi(tmp_path) if family == "tinygptv_phi" else reference(family)


# ----------------------------------------------------------------------------- norms
NORMS_PER_LAYER = {"phi": 1, "phi3": 2, "qwen2": 2, "llama": 2, "gemma2": 4, "stablelm": 2, "tinygptv_phi": 4}


@pytest.mark.parametrize("family", NORMS_PER_LAYER)
def test_norm_weight_names_finds_every_norm_by_class(family, tmp_path):
    model = family_model(family, tmp_path)
    names = llms.norm_weight_names(model)
    assert len(names) == 2 * NORMS_PER_LAYER[family] + 1  # per layer, and the final norm
    params = dict(model.named_parameters())
    assert all(params[n].shape == (32,) or params[n].shape == (8,) for n in names)  # hidden or head width
    if family == "tinygptv_phi":
        assert names == phi.norm_weight_names(model)  # the generic list is TinyGPT-V's own there


def test_transformers_rmsnorms_differ_in_how_they_treat_an_fp32_weight():
    """Why keep_norms_fp32 wraps the norms instead of only casting them (llm.py)."""
    from transformers.models.gemma2.modeling_gemma2 import Gemma2RMSNorm
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    x = torch.randn(2, 3, 32).bfloat16()
    assert LlamaRMSNorm(32)(x).dtype == torch.float32  # weight fp32 * normalised bf16 -> fp32
    assert Gemma2RMSNorm(32)(x).dtype == torch.bfloat16  # computes in fp32, hands back the input dtype
    norm = LlamaRMSNorm(32)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
    expected = (norm.weight * (x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + 1e-6))).bfloat16()
    llms.keep_norms_fp32(nn.ModuleList([norm]))
    assert isinstance(norm, LlamaRMSNorm) and norm.weight.dtype == torch.float32
    out = norm(x)
    assert out.dtype == torch.bfloat16 and torch.equal(out, expected)  # all in fp32, one rounding at the end


@pytest.mark.parametrize("family", FAMILIES)
def test_a_bf16_llm_runs_with_fp32_norms(family):
    ref = reference(family)
    model = reference(family).bfloat16()
    assert llms.keep_norms_fp32(model) == 2 * NORMS_PER_LAYER[family] + 1
    params = dict(model.named_parameters())
    assert {params[n].dtype for n in llms.norm_weight_names(model)} == {torch.float32}
    assert model.model.embed_tokens.weight.dtype == torch.bfloat16
    with torch.no_grad():
        logits = model(IDS).logits
        assert logits.dtype == torch.bfloat16
        torch.testing.assert_close(logits.float(), ref(IDS).logits, atol=0.05, rtol=0.05)


# ----------------------------------------------------------------------------- full size
def test_qwen2_5_0_5b_on_meta_has_its_published_parameter_count():
    with torch.device("meta"):
        model = llms.build_causal_lm("train_configs/llm/qwen2.5-0.5b.json")
    config = model.config
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads, config.num_key_value_heads,
            config.intermediate_size, config.vocab_size) == (896, 24, 14, 2, 4864, 151936)
    assert config.tie_word_embeddings and config.rope_parameters["rope_theta"] == 1e6
    embed = 151936 * 896  # 136,134,656, also the (tied) head
    q = 896 * 896 + 896  # 803,712 (q/k/v have biases, o has none)
    kv = 2 * (896 * 128 + 128)  # 2 k/v heads of 64: 229,632
    o = 896 * 896  # 802,816
    mlp = 3 * 896 * 4864  # gate, up, down: 13,074,432
    norms = 2 * 896
    layer = q + kv + o + mlp + norms  # 14,912,384
    total = embed + 24 * layer + 896  # + the final norm
    assert total == 494_032_768
    assert sum(p.numel() for p in model.parameters()) == total
    assert len(llms.norm_weight_names(model)) == 2 * 24 + 1
