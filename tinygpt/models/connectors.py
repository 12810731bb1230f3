"""Connectors: vision features [B, N, D_vision] -> visual tokens [B, Q, D_llm], the part between the
vision tower and the LLM (`model.connector.kind`).

* `qformer` -- BLIP-2's Q-Former with its learned query tokens (qformer.py) and TinyGPT-V's two linear
  layers (projector.py), Q = `model.qformer.num_query_tokens` (32).  The model builds those two itself:
  their parameter names (`qformer.*`, `query_tokens`, `projector.*`) are what BLIP-2 and TinyGPT-V files
  load into, so they are not wrapped here.
* `mlp` -- LLaVA-1.5's `mlp2x_gelu`: Linear(D_vision, D_llm) -> GELU -> Linear(D_llm, D_llm); Q = N.
* `linear` -- one Linear(D_vision, D_llm) (LLaVA-1's projector); Q = N.
* `resampler` -- learned queries cross-attending to the features (Qwen-VL's / mllm-npu's resampler,
  here with `depth` pre-norm layers of cross-attention + MLP), Q = `num_queries` whatever N is.

Each built connector answers `n_visual_tokens(n_patches)`: Q for N input features.
"""
from __future__ import annotations

import torch
from torch import nn

from ..common.config import ConfigError, ConnectorConfig


class MLPConnector(nn.Module):
    """LLaVA-1.5's mlp2x_gelu: [B, N, D_vision] -> [B, N, D_llm]."""

    def __init__(self, d_vision: int, d_llm: int):
        super().__init__()
        self.fc1 = nn.Linear(d_vision, d_llm)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(d_llm, d_llm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))

    def n_visual_tokens(self, n_patches: int) -> int:
        return n_patches


class LinearConnector(nn.Module):
    """One Linear: [B, N, D_vision] -> [B, N, D_llm]."""

    def __init__(self, d_vision: int, d_llm: int):
        super().__init__()
        self.proj = nn.Linear(d_vision, d_llm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)

    def n_visual_tokens(self, n_patches: int) -> int:
        return n_patches


class ResamplerLayer(nn.Module):
    """queries [B, Q, D] attend to features [B, N, D] (pre-norm), then a 4x GELU MLP; both residual."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.norm_q = nn.LayerNorm(width)
        self.norm_kv = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.norm_mlp = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, queries: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
        kv = self.norm_kv(feats)
        queries = queries + self.attn(self.norm_q(queries), kv, kv, need_weights=False)[0]
        return queries + self.mlp(self.norm_mlp(queries))


class Resampler(nn.Module):
    """[B, N, D_vision] -> [B, num_queries, D_llm]: the features projected to D_llm, `depth` layers of
    learned queries cross-attending to them, a final LayerNorm and an output Linear(D_llm, D_llm).
    No extra position embedding: ViT features already carry their patch positions."""

    def __init__(self, d_vision: int, d_llm: int, num_queries: int, depth: int, heads: int):
        super().__init__()
        self.queries = nn.Parameter(torch.empty(num_queries, d_llm))
        nn.init.trunc_normal_(self.queries, std=0.02)  # BLIP-2 / Qwen-VL's query init
        self.kv_proj = nn.Linear(d_vision, d_llm)
        self.layers = nn.ModuleList(ResamplerLayer(d_llm, heads) for _ in range(depth))
        self.norm_out = nn.LayerNorm(d_llm)
        self.proj = nn.Linear(d_llm, d_llm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.kv_proj(x)
        queries = self.queries.expand(x.shape[0], -1, -1)
        for layer in self.layers:
            queries = layer(queries, feats)
        return self.proj(self.norm_out(queries))

    def n_visual_tokens(self, n_patches: int) -> int:
        return self.queries.shape[0]


def build_connector(cfg: ConnectorConfig, d_vision: int, d_llm: int, source: str = "<config>") -> nn.Module:
    """The `mlp`, `linear` or `resampler` connector for D_vision -> D_llm (`qformer` is built by the
    model from qformer.py + projector.py; see the module docstring)."""
    if cfg.kind == "mlp":
        return MLPConnector(d_vision, d_llm)
    if cfg.kind == "linear":
        return LinearConnector(d_vision, d_llm)
    if cfg.kind == "resampler":
        if d_llm % cfg.heads:
            raise ConfigError(f"{source}: key 'model.connector.heads' is {cfg.heads}, which does not divide the "
                              f"LLM width {d_llm} the resampler works in")
        return Resampler(d_vision, d_llm, cfg.num_queries, cfg.depth, cfg.heads)
    raise ValueError(f"connector kind {cfg.kind!r} is not built by build_connector")
