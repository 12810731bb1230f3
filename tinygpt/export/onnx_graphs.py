"""The `onnx` target: the model for onnxruntime (`tinygpt/onnx_runtime.py`, no torch).

    python -m tinygpt.export --format onnx --cfg-path eval_configs/tiny.yaml --out exported/tiny-onnx

DIR/vision.onnx        images -> visual tokens
DIR/llm_step.onnx      the language model with its KV cache as tensors: one graph for the prefill and
                       each decode step
DIR/embed_tokens.npy   the token embeddings; the tokenizer; onnx.json (image statistics, prompt style)

Its parity check: tests/models/test_onnx.py (onnxruntime's visual tokens, logits and greedy answer
against torch's).
"""
from __future__ import annotations

import logging
import os
import warnings

import torch

from ..common import atomic
from ..common.config import Config, image_statistics
from .directory import float_config


class _Vision(torch.nn.Module):
    """images [B, 3, S, S] -> visual tokens [B, Q, D]."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, images):
        return self.model.encode_images(images)


class _LLMStep(torch.nn.Module):
    """(inputs_embeds [B, T, D], attention_mask [B, P + T], past keys / values [L, B, H, P, d]) ->
    (logits [B, T, V], keys / values [L, B, H, P + T, d]): the prefill (P = 0) and every decode
    step, with positions from the attention mask as `generate` computes them."""

    def __init__(self, llm):
        super().__init__()
        self.llm = llm
        self.layers = llm.config.num_hidden_layers

    def forward(self, embeds, mask, past_k, past_v):
        from transformers import DynamicCache

        cache = DynamicCache()
        for i in range(self.layers):
            cache.update(past_k[i], past_v[i], i)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, -embeds.shape[1]:]
        out = self.llm(inputs_embeds=embeds, attention_mask=mask, past_key_values=cache, position_ids=positions,
                       use_cache=True)
        layers = out.past_key_values.layers
        return (out.logits, torch.stack([layers[i].keys for i in range(self.layers)]),
                torch.stack([layers[i].values for i in range(self.layers)]))


def _export(module: torch.nn.Module, example: tuple, path: str, **kwargs) -> None:
    """torch.onnx.export of an inference wrapper, without the exporter's chatter: the wrapper in eval
    mode (it is a new Module, in training mode until told), no progress lines, and torch's notes that
    do not concern this graph (torchvision's ops it skips, its own deprecated pytree internals, an
    axis name it merges) kept out of the user's terminal."""
    module.eval()
    registration = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registration.level
    registration.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning, message=".*LeafSpec")
            warnings.filterwarnings("ignore", message="# The axis name")
            torch.onnx.export(module, example, path, dynamo=True, external_data=False, verbose=False, **kwargs)
    finally:
        registration.setLevel(level)


def export_onnx(cfg: Config, out: str) -> str:
    """The onnxruntime directory (see the module docstring); parity is tested in tests/models/test_onnx.py."""
    import json

    import numpy as np
    from torch.export import Dim

    import tinygpt

    from ..processors.image import IMAGE_STATS

    model = tinygpt.build_model(float_config(cfg), "cpu", training=False)
    model.float().eval()
    os.makedirs(out, exist_ok=True)
    size, config = cfg.model.vision.image_size, model.llm.config
    layers, heads = config.num_hidden_layers, config.num_attention_heads
    head_dim = config.hidden_size // heads
    batch = Dim("batch", max=64)
    with torch.no_grad():
        with atomic.atomic_path(os.path.join(out, "vision.onnx"), ".onnx") as tmp:
            _export(_Vision(model), (torch.zeros(2, 3, size, size),), tmp, input_names=["images"],
                    output_names=["visual"], dynamic_shapes=({0: batch},))
        # Traced with a non-empty cache of 2 positions; every length (0 for the prefill) is dynamic.
        example = (torch.zeros(1, 3, config.hidden_size), torch.ones(1, 5, dtype=torch.long),
                   torch.zeros(layers, 1, heads, 2, head_dim), torch.zeros(layers, 1, heads, 2, head_dim))
        step = Dim("step", max=4096)
        with atomic.atomic_path(os.path.join(out, "llm_step.onnx"), ".onnx") as tmp:
            _export(_LLMStep(model.llm), example, tmp, input_names=["embeds", "mask", "past_k", "past_v"],
                    output_names=["logits", "keys", "values"],
                    dynamic_shapes=({0: batch, 1: step}, {0: batch, 1: Dim.DYNAMIC},
                                    {1: batch, 3: Dim.DYNAMIC}, {1: batch, 3: Dim.DYNAMIC}))
        np.save(os.path.join(out, "embed_tokens.npy"), model.llm.get_input_embeddings().weight.float().numpy())
    tok = model.tokenizer
    model.tokenizer.save_pretrained(out)
    style = model.style
    mean, std = IMAGE_STATS[image_statistics(cfg.model.vision)]
    manifest = {"image_size": size, "mean": list(mean), "std": list(std),
                "style": {**json.loads(style.record()), "max_txt_len": style.max_txt_len,
                          "max_context_len": style.max_context_len},
                "bos_token": tok.bos_token, "eos_token": tok.eos_token, "pad_token": tok.pad_token,
                "layers": layers, "heads": heads, "head_dim": head_dim}
    atomic.write_json(os.path.join(out, "onnx.json"), manifest)
    return out
