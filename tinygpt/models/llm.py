"""Any Hugging Face causal LM as the model's language model: built from its config.json, and its
norm layers found (and kept in fp32) whatever their class.

    input_ids [B, T] or inputs_embeds [B, T, D_llm] -> logits [B, T, vocab]

The family is the HF config's `model_type`; TinyGPT-V's own Phi subclass (models/phi.py, fused
`query_key_value`) is the family "tinygptv_phi" (`family_of`).  Its LoRA targets: models/lora.py.
"""
from __future__ import annotations

import logging
import os

import torch
from torch import nn
from huggingface_hub.errors import StrictDataclassError
from transformers import AutoConfig, AutoModelForCausalLM, PretrainedConfig, PreTrainedModel

from ..common.errors import UserError
from ..common.numbers import number_problem, shown
from .norms import float_compute
from .phi import TinyGPTVPhiForCausalLM, load_phi_config

log = logging.getLogger(__name__)

TINYGPTV_FAMILY = "tinygptv_phi"  # `model.llm.family`: TinyGPT-V's Phi-2 subclass (models/phi.py)
AUTO_FAMILY = "auto"  # `model.llm.family`: any Hugging Face causal LM, by its config.json's model_type


def family_of(llm: nn.Module) -> str:
    """A built LLM's family: "tinygptv_phi" for TinyGPT-V's Phi subclass, else its `model_type`."""
    if isinstance(llm, TinyGPTVPhiForCausalLM):
        return TINYGPTV_FAMILY
    return llm.config.model_type


def cache_keyword(llm: nn.Module) -> str:
    """The name of the KV cache in `llm.forward`'s arguments and its output: transformers >= 5.24
    says `cache` (before: `past_key_values`, kept as a deprecated alias that warns)."""
    import inspect

    return "cache" if "cache" in inspect.signature(llm.forward).parameters else "past_key_values"


def embedding_dtype(llm: nn.Module) -> torch.dtype:
    """The dtype the LLM's input embeddings come out in: the table's, or for an int8 table
    (quantize.Int8Embedding, which has no float weight) the float dtype it dequantizes to."""
    table = llm.get_input_embeddings()
    weight = getattr(table, "weight", None)
    return weight.dtype if isinstance(weight, torch.Tensor) else table.dtype


def load_llm_config(family: str, hf_config_path: str, attn_implementation: str = "sdpa") -> PretrainedConfig:
    """The HF config of `model.llm`: Phi-2's with TinyGPT-V's q/k LayerNorm switched on, or (family
    "auto") whatever causal LM the config.json (file, or directory holding one) describes."""
    try:
        if family == TINYGPTV_FAMILY:
            config = load_phi_config(hf_config_path, attn_implementation)
        else:
            config = AutoConfig.from_pretrained(os.fspath(hf_config_path))
            config._attn_implementation = attn_implementation
    except (OSError, ValueError, KeyError, TypeError, StrictDataclassError) as exc:  # the last: a field's type
        raise UserError(f"{hf_config_path}: not a readable Hugging Face LLM config "
                        f"({' '.join(str(exc).split())[:200]})") from None
    _check_sizes(config, hf_config_path)
    return config


# The config.json sizes a model is built from: each a positive integer (a 0 would end in a division by zero).
_SIZES = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
          "intermediate_size", "max_position_embeddings")


def _check_sizes(config: PretrainedConfig, path: str) -> None:
    for name in _SIZES:
        value = getattr(config, name, None)
        if value is None:
            continue
        problem = "it must be an integer" if not isinstance(value, int) else number_problem(value, 1)
        if problem:
            raise UserError(f"{path}: {name!r} is {shown(value)}; {problem}")
    heads = getattr(config, "num_attention_heads", None)
    if heads and config.hidden_size % heads:
        raise UserError(f"{path}: hidden_size {config.hidden_size} is not a multiple of num_attention_heads {heads}")


def build_llm(family: str, config: PretrainedConfig) -> PreTrainedModel:
    """The LLM of `config` (from `load_llm_config`), randomly initialised on the current default
    device and dtype (`with torch.device("meta")` builds it without memory).  The config's own
    `torch_dtype` is deliberately not used: the caller decides the dtype."""
    if family == TINYGPTV_FAMILY:
        return TinyGPTVPhiForCausalLM(config)
    try:
        return AutoModelForCausalLM.from_config(config, attn_implementation=config._attn_implementation,
                                                dtype=torch.get_default_dtype())
    except ValueError as exc:  # e.g. Gemma-2 has no SDPA path in transformers 5.x
        if "attention implementation" not in str(exc) or config._attn_implementation == "eager":
            raise
        log.warning("model.llm.attn_implementation: %s has no %r attention; using 'eager'",
                    config.model_type, config._attn_implementation)
        config._attn_implementation = "eager"
        return AutoModelForCausalLM.from_config(config, attn_implementation="eager", dtype=torch.get_default_dtype())


def build_causal_lm(hf_config_path: str, attn_implementation: str = "sdpa") -> PreTrainedModel:
    """Any causal LM from its config.json (family "auto")."""
    return build_llm(AUTO_FAMILY, load_llm_config(AUTO_FAMILY, hf_config_path, attn_implementation))


# ----------------------------------------------------------------------------- norms
def _is_norm(module: nn.Module) -> bool:
    name = type(module).__name__
    return isinstance(module, (nn.LayerNorm, nn.RMSNorm)) or name.endswith(("RMSNorm", "LayerNorm"))


def norm_modules(llm: nn.Module) -> dict[str, nn.Module]:
    """{module name: module} of every normalisation layer with a weight: nn.LayerNorm / nn.RMSNorm
    and the families' own classes (LlamaRMSNorm, Qwen2RMSNorm, Gemma2RMSNorm, Phi3RMSNorm, ...)."""
    return {name: m for name, m in llm.named_modules()
            if _is_norm(m) and isinstance(getattr(m, "weight", None), nn.Parameter)}


def norm_weight_names(llm: nn.Module) -> list[str]:
    """Parameter names (relative to `llm`) of every norm *weight*: what "norms train" trains.
    Biases never train (TinyGPT-V's 13,809,664 in stage 1); on TinyGPT-V's Phi this is exactly
    models/phi.py's list."""
    return [f"{name}.weight" for name in norm_modules(llm)]


def keep_norms_fp32(llm: nn.Module) -> int:
    """Every norm layer of `llm` in fp32, computing in fp32 and handing back its input's dtype
    (norms.float_compute), so trained norm weights keep their small updates in a half-precision LLM.
    Returns the number of norm layers.

    Why a wrapper and not just `.float()`: the Llama-style RMSNorms (Llama, Qwen2, Phi3) upcast the
    normalisation but multiply by the weight in the weight's dtype, so an fp32 weight would turn their
    output fp32 and the next bf16 Linear would refuse it; nn.LayerNorm (Phi, StableLM) takes an fp32
    weight beside a bf16 input on some backends only, so the cast is made explicit.  Gemma2RMSNorm
    already computes in fp32 and returns the input dtype (wrapping it changes nothing).  tests/models/test_llm_families.py checks each of these facts.
    """
    modules = norm_modules(llm)
    for module in modules.values():
        float_compute(module)
    return len(modules)
