"""Phi-2 with TinyGPT-V's changes, built on transformers' Phi classes.

What transformers' `PhiForCausalLM` lacks, and this file adds:
  * a *fused* QKV projection `query_key_value` [3*H, H], rows ordered [q; k; v].  TinyGPT-V puts its
    LoRA on a fused QKV, so one LoRA A matrix is shared by q, k and v; that is the function family
    (and the 45,266,944 trainable parameters) we must reproduce.  Split `q_proj/k_proj/v_proj` and
    the legacy per-head-interleaved layout are converted into this one by `weights.py`.
  * per-head LayerNorm on q and k before RoPE (`q_layernorm`, `k_layernorm`, always on);
  * an RMSNorm `post_layernorm` on the attention branch before the residual sum.
All norms keep fp32 weights (`norms.py`).  Everything else (rotary embedding, masks, KV cache, the
attention kernels behind `ALL_ATTENTION_FUNCTIONS`, generation) is transformers' own.
"""
from __future__ import annotations

import torch
from torch import nn
from transformers import PhiConfig
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.phi.modeling_phi import (
    PhiForCausalLM,
    PhiMLP,
    PhiModel,
    PhiPreTrainedModel,
    PhiRotaryEmbedding,
    apply_rotary_pos_emb,
    eager_attention_forward,
)

from .norms import FloatLayerNorm, FloatRMSNorm

POST_NORM_EPS = 1e-6  # TinyGPT-V's post_layernorm eps (not config.layer_norm_eps)


class FusedQKVPhiAttention(nn.Module):
    """Phi attention with one `query_key_value` projection and per-head q/k LayerNorm.

    hidden_states [B, T, H] -> output [B, T, H].
    """

    def __init__(self, config: PhiConfig, layer_idx: int):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.num_key_value_groups = self.num_heads // self.num_kv_heads
        self.scaling = self.head_dim**-0.5
        self.attention_dropout = config.attention_dropout
        self.is_causal = True
        self.split_sizes = [self.num_heads * self.head_dim] + [self.num_kv_heads * self.head_dim] * 2
        self.query_key_value = nn.Linear(config.hidden_size, sum(self.split_sizes), bias=True)
        self.dense = nn.Linear(self.num_heads * self.head_dim, config.hidden_size, bias=True)
        self.rotary_ndims = int(self.head_dim * config.rope_parameters["partial_rotary_factor"])
        self.q_layernorm = FloatLayerNorm(self.head_dim, eps=config.layer_norm_eps)
        self.k_layernorm = FloatLayerNorm(self.head_dim, eps=config.layer_norm_eps)

    def forward(self, hidden_states, position_embeddings, attention_mask, cache=None, **kwargs):
        batch, seq = hidden_states.shape[:2]
        q, k, v = self.query_key_value(hidden_states).split(self.split_sizes, dim=-1)
        q = self.q_layernorm(q.view(batch, seq, -1, self.head_dim)).transpose(1, 2)
        k = self.k_layernorm(k.view(batch, seq, -1, self.head_dim)).transpose(1, 2)
        v = v.view(batch, seq, -1, self.head_dim).transpose(1, 2)

        # Phi rotates only the first `rotary_ndims` channels of each head (partial rotary 0.4).
        cos, sin = position_embeddings
        r = self.rotary_ndims
        q_rot, k_rot = apply_rotary_pos_emb(q[..., :r], k[..., :r], cos, sin)
        q = torch.cat((q_rot, q[..., r:]), dim=-1)
        k = torch.cat((k_rot, k[..., r:]), dim=-1)

        if cache is not None:
            k, v = cache.update(k, v, self.layer_idx)

        attend = ALL_ATTENTION_FUNCTIONS.get_interface(self.config._attn_implementation, eager_attention_forward)
        out, weights = attend(
            self, q, k, v, attention_mask,
            dropout=self.attention_dropout if self.training else 0.0,
            scaling=self.scaling,
            **kwargs,
        )
        return self.dense(out.reshape(batch, seq, -1)), weights


class TinyGPTVPhiDecoderLayer(GradientCheckpointingLayer):
    """Phi's parallel block, with `post_layernorm` on the attention branch."""

    def __init__(self, config: PhiConfig, layer_idx: int):
        super().__init__()
        self.self_attn = FusedQKVPhiAttention(config, layer_idx)
        self.mlp = PhiMLP(config)
        self.input_layernorm = FloatLayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.post_layernorm = FloatRMSNorm(config.hidden_size, eps=POST_NORM_EPS)
        self.resid_dropout = nn.Dropout(config.resid_pdrop)

    def forward(self, hidden_states, attention_mask=None, position_ids=None, past_key_values=None,
                use_cache=False, position_embeddings=None, cache=None, **kwargs):
        normed = self.input_layernorm(hidden_states)
        attn, _ = self.self_attn(
            normed,
            position_embeddings=position_embeddings,
            attention_mask=attention_mask,
            # The KV cache: transformers < 5.24 names it past_key_values, 5.24+ cache.  Missing it
            # would not fail: generation would silently attend to the new token only.
            cache=cache if cache is not None else past_key_values,
            **kwargs,
        )
        attn = self.resid_dropout(self.post_layernorm(attn))
        mlp = self.resid_dropout(self.mlp(normed))
        return attn + mlp + hidden_states


class TinyGPTVPhiModel(PhiModel):
    """PhiModel whose layers are TinyGPT-V's; forward, masks and cache are inherited."""

    _can_record_outputs = {"hidden_states": TinyGPTVPhiDecoderLayer, "attentions": FusedQKVPhiAttention}

    def __init__(self, config: PhiConfig):
        PhiPreTrainedModel.__init__(self, config)
        self.padding_idx = config.pad_token_id
        self.vocab_size = config.vocab_size
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, self.padding_idx)
        self.layers = nn.ModuleList(TinyGPTVPhiDecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.rotary_emb = PhiRotaryEmbedding(config=config)
        self.gradient_checkpointing = False
        self.embed_dropout = nn.Dropout(config.embd_pdrop)
        self.final_layernorm = FloatLayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.post_init()


class TinyGPTVPhiForCausalLM(PhiForCausalLM):
    _can_record_outputs = TinyGPTVPhiModel._can_record_outputs

    def __init__(self, config: PhiConfig):
        PhiPreTrainedModel.__init__(self, config)
        self.model = TinyGPTVPhiModel(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=True)
        self.post_init()


def norm_weight_names(model: TinyGPTVPhiForCausalLM) -> list[str]:
    """The norm *weights* TinyGPT-V trains: per layer input/q/k/post norms, plus the final norm.

    Biases of these norms exist but never train (that is what makes 13,809,664 in stage 1).
    """
    names = []
    for name, module in model.named_modules():
        if isinstance(module, (FloatLayerNorm, FloatRMSNorm)):
            names.append(f"{name}.weight")
    return names


def load_phi_config(path: str, attn_implementation: str = "sdpa") -> PhiConfig:
    """Read an HF Phi config.json (file or directory) and switch on TinyGPT-V's q/k LayerNorm."""
    config = PhiConfig.from_pretrained(path)
    config.qk_layernorm = True
    config._attn_implementation = attn_implementation
    return config


def write_phi_config(path, vocab_size: int, hidden: int, layers: int, heads: int, max_positions: int = 2048):
    """A Phi-2-shaped config.json of another size (partial rotary 0.4, gelu_new, no dropout, untied
    head): what tests and benchmarks build their small LLMs from.  Returns `path`."""
    import json
    from pathlib import Path

    path = Path(path)
    path.write_text(json.dumps({
        "model_type": "phi", "architectures": ["PhiForCausalLM"], "vocab_size": vocab_size,
        "hidden_size": hidden, "intermediate_size": 4 * hidden, "num_hidden_layers": layers,
        "num_attention_heads": heads, "num_key_value_heads": heads, "partial_rotary_factor": 0.4,
        "max_position_embeddings": max_positions, "layer_norm_eps": 1e-5, "hidden_act": "gelu_new",
        "rope_theta": 10000.0, "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attention_dropout": 0.0,
        "bos_token_id": 0, "eos_token_id": 0, "tie_word_embeddings": False,
    }))
    return path
