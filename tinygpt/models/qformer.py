"""BLIP-2 Q-Former on transformers' `Blip2QFormerModel` (BERT-base width, cross-attention every 2nd
layer), without the text-side embeddings, FFNs and heads that TinyGPT-V drops."""
from __future__ import annotations

import torch
from torch import nn
from transformers import Blip2QFormerConfig, Blip2QFormerModel

from ..common.config import QFormerConfig

# The model attribute of the auxiliary cell head (QFormerConfig.cell_classes): a training aid that
# checkpoint_final leaves out and the weight loader treats as its own group.
CELL_HEAD = "cell_head"


def build_qformer(cfg: QFormerConfig, encoder_width: int) -> tuple[Blip2QFormerModel, nn.Parameter]:
    """Returns the Q-Former and its learned query tokens [1, num_query_tokens, width]."""
    config = Blip2QFormerConfig(
        hidden_size=cfg.width,
        num_hidden_layers=cfg.depth,
        num_attention_heads=cfg.heads,
        intermediate_size=cfg.mlp_dim,
        cross_attention_frequency=cfg.cross_attention_freq,
        encoder_hidden_size=encoder_width,
        layer_norm_eps=1e-12,  # BERT's eps, as in LAVIS
        # At BERT's 0.02 a from-scratch Q-Former's output is ~LN(query tokens): the cross-attention
        # adds 0.5% of image-dependent signal, and the first thousand steps go into growing it.
        initializer_range=cfg.init_std,
    )
    config._attn_implementation = "sdpa"
    qformer = Blip2QFormerModel(config)
    # BLIP-2 initialises the queries with std 0.02 (BERT initializer_range).
    query_tokens = nn.Parameter(torch.randn(1, cfg.num_query_tokens, cfg.width) * 0.02)
    return qformer, query_tokens
