"""Tiny random backbones of every supported family, saved as Hugging Face directories (what a user
brings), for the backbone tests: LLMs from each family's own transformers config class, CLIP,
SigLIP and (as an `hf` tower) DINOv2-with-registers towers."""
from __future__ import annotations

import torch
from torch import nn
from transformers import (
    CLIPVisionConfig,
    CLIPVisionModel,
    Dinov2WithRegistersConfig,
    Dinov2WithRegistersModel,
    Gemma2Config,
    Gemma2ForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    Phi3Config,
    Phi3ForCausalLM,
    PhiConfig,
    PhiForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
    SiglipVisionConfig,
    SiglipVisionModel,
    StableLmConfig,
    StableLmForCausalLM,
)

# hidden 32, 4 heads of 8 (2 k/v heads: k/v width 16), MLP 64, 2 layers, vocab 128.
SHAPE = dict(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
FAMILIES = {
    "phi": (PhiConfig, PhiForCausalLM, dict(partial_rotary_factor=0.5, tie_word_embeddings=False)),
    "phi3": (Phi3Config, Phi3ForCausalLM, dict(pad_token_id=0, bos_token_id=1, eos_token_id=2,
                                               tie_word_embeddings=False)),
    "qwen2": (Qwen2Config, Qwen2ForCausalLM, dict(tie_word_embeddings=True)),  # tied, as Qwen2.5-0.5B
    "llama": (LlamaConfig, LlamaForCausalLM, dict(tie_word_embeddings=False)),  # TinyLlama, SmolLM2
    "gemma2": (Gemma2Config, Gemma2ForCausalLM, dict(head_dim=8, query_pre_attn_scalar=8, sliding_window=16,
                                                     pad_token_id=0, bos_token_id=1, eos_token_id=2)),
    "stablelm": (StableLmConfig, StableLmForCausalLM, dict(partial_rotary_factor=0.25, use_qkv_bias=True,
                                                           tie_word_embeddings=False)),
}
# width 32, 2 blocks of 4 heads, 28 px images in 14 px patches: a 2 x 2 grid.
TOWER = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=28,
             patch_size=14)
# `dinov2`: a `model.vision.kind: hf` tower with 1 CLS + 4 register tokens in front of its patches.
TOWERS = {"clip": (CLIPVisionConfig, CLIPVisionModel), "siglip": (SiglipVisionConfig, SiglipVisionModel),
          "dinov2": (Dinov2WithRegistersConfig, Dinov2WithRegistersModel)}


def perturbed(model: nn.Module) -> nn.Module:
    """Every parameter moved off its init (norms != 1), so only a real load reproduces it."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


def reference_llm(family: str, seed: int = 0, **shape) -> nn.Module:
    """The family's own transformers model, random and perturbed (`shape` overrides SHAPE)."""
    config_class, model_class, extra = FAMILIES[family]
    torch.manual_seed(seed)
    return perturbed(model_class(config_class(**{**SHAPE, **shape}, **extra)))


def save_llm(family: str, directory, **shape) -> nn.Module:
    model = reference_llm(family, **shape)
    model.save_pretrained(directory)
    return model


def save_tower(kind: str, directory, **shape) -> nn.Module:
    """A vision-only CLIP / SigLIP / DINOv2-with-registers tower saved with save_pretrained."""
    config_class, model_class = TOWERS[kind]
    torch.manual_seed(0)
    model = perturbed(model_class(config_class(**{**TOWER, **shape})))
    model.save_pretrained(directory)
    return model
