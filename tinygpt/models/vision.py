"""EVA ViT-g/14 as BLIP-2 uses it, on transformers' `Blip2VisionModel`.

transformers' BLIP-2 vision tower *is* LAVIS's EVA ViT-g (fused qkv with q/v biases, GELU MLP,
pre-norm blocks, eps 1e-6); its defaults are the 39-block, width-1408 tower.  BLIP-2 applies
`ln_vision` (a separate LayerNorm, eps 1e-5) to the tower output, so the model owns that norm and the
tower's own `post_layernorm` is replaced by an identity.
"""
from __future__ import annotations

from torch import nn
from transformers import Blip2VisionConfig, Blip2VisionModel

from ..common.config import VisionConfig

LN_VISION_EPS = 1e-5  # LAVIS builds ln_vision with nn.LayerNorm's default eps


def build_vision_tower(cfg: VisionConfig) -> Blip2VisionModel:
    """images [B, 3, S, S] -> hidden states [B, 1 + (S/patch)^2, width] (257 tokens at 224 px)."""
    config = Blip2VisionConfig(
        hidden_size=cfg.width,
        intermediate_size=cfg.mlp_dim,
        num_hidden_layers=cfg.depth,
        num_attention_heads=cfg.heads,
        image_size=cfg.image_size,
        patch_size=cfg.patch_size,
        qkv_bias=True,
        layer_norm_eps=1e-6,
        attention_dropout=0.0,
        # transformers' BLIP-2 default is 1e-10 (its towers are always loaded from a checkpoint); a
        # tower trained from scratch (the tiny recipe) needs a real init: timm/EVA use std 0.02.
        initializer_range=0.02,
    )
    config._attn_implementation = "sdpa"
    tower = Blip2VisionModel(config)
    tower.post_layernorm = nn.Identity()
    # With std 0.02 the position signal is ~25x weaker than the patch content, and a Q-Former trained
    # from scratch then pools the patches position-blind (a linear probe of its outputs could not
    # tell which grid cells hold a shape); the tiny recipe starts it at the content's scale.
    nn.init.trunc_normal_(tower.embeddings.position_embedding, std=cfg.pos_embed_std,
                          a=-2 * cfg.pos_embed_std, b=2 * cfg.pos_embed_std)
    return tower
