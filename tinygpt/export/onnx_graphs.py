"""The `onnx` target: the model for onnxruntime (`tinygpt/onnx_runtime.py`, no torch).

    python -m tinygpt.export --format onnx --cfg-path eval_configs/tiny.yaml --out exported/tiny-onnx

DIR/vision.onnx        images -> visual tokens
DIR/llm_step.onnx      the language model with its KV cache as tensors: one graph for the prefill and
                       each decode step
DIR/embed_tokens.npy   the token embeddings; the tokenizer; onnx.json (image statistics, prompt style,
                       the model type and its KV cache layout)

Any causal LM whose cache is one key and one value tensor per layer exports (the layout -- layers,
k/v heads, key and value widths -- is the model's own: kv_layout); one whose cache is not (recurrent,
convolution or linear-attention layers) is refused up front with its model type and why.
Its parity check: onnx_check.py (onnxruntime's visual tokens, logits and greedy tokens against torch's;
tests/models/test_onnx.py, and `python -m benchmarks.backbones --only onnx` for every LLM family).
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import warnings
from dataclasses import asdict, dataclass

import torch

from ..common import atomic
from ..common.config import Config, image_statistics
from ..models.llm import cache_keyword
from .directory import float_config
from .targets import ExportError


class _Vision(torch.nn.Module):
    """images [B, 3, S, S] -> visual tokens [B, Q, D]."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, images):
        return self.model.encode_images(images)


@dataclass(frozen=True)
class KVLayout:
    """The KV cache as the step graph passes it: keys [layers, B, heads, T, key_dim] and values
    [layers, B, heads, T, value_dim] (GQA: heads = the k/v heads; MLA: key_dim != value_dim)."""

    layers: int
    heads: int
    key_dim: int
    value_dim: int


# transformers' cache layer types (cache_utils.get_layer_types_and_kwargs) that hold one key and one
# value tensor per layer.  Sliding-window and chunked layers are kept in full here: the attention mask
# transformers builds from the config masks what lies outside the window, so the answers are the same.
KV_LAYER_TYPES = ("full_attention", "sliding_attention", "chunked_attention")


def _refusal(model_type: str, why: str) -> ExportError:
    return ExportError(f"model type '{model_type}': {why}; use --format safetensors or hf")


def kv_layout(llm) -> KVLayout:
    """The layout of `llm`'s KV cache, or an ExportError naming its model type and why the step graph
    cannot hold its cache.  The layer types come from the config (transformers' own reading of
    `layer_types` / `sliding_window`, as `DynamicCache(config=...)` builds a cache); the shapes from
    what the model itself writes into a DynamicCache for one token: the k/v heads, head_dim and layer
    count its config fields give (num_key_value_heads, head_dim or hidden/heads, num_hidden_layers), also
    where a family spells them differently (MLA's separate key and value widths)."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer, get_layer_types_and_kwargs

    config = llm.config.get_text_config(decoder=True)
    name = config.model_type
    other = sorted({t for t in get_layer_types_and_kwargs(config)[0] if t not in KV_LAYER_TYPES})
    if other:
        raise _refusal(name, f"its {', '.join(other)} layers keep a state that is not one key and one value "
                             "tensor per layer (recurrent, linear-attention, shared or MLP-only layers), which the "
                             "ONNX step graph cannot hold")
    cache, key = DynamicCache(), cache_keyword(llm)
    with torch.no_grad():
        out = llm(inputs_embeds=torch.zeros(1, 1, llm.get_input_embeddings().weight.shape[1]),
                  attention_mask=torch.ones(1, 1, dtype=torch.long), use_cache=True, **{key: cache})
    layers = list(cache.layers)
    if getattr(out, key, None) is not cache or not layers or any(
            type(layer) is not DynamicLayer or layer.keys is None or layer.keys.numel() == 0 for layer in layers):
        raise _refusal(name, "it does not keep its attention cache as one key and one value tensor per layer in "
                             "transformers' DynamicCache, which the ONNX step graph needs")
    shapes = {(tuple(layer.keys.shape[1::2]), layer.values.shape[-1]) for layer in layers}
    if len(shapes) > 1 or layers[0].keys.shape[1] != layers[0].values.shape[1]:
        raise _refusal(name, f"its layers cache keys / values of different shapes ((heads, key dim), value dim: "
                             f"{sorted(shapes)}), which one [layers, batch, heads, length, dim] tensor cannot hold")
    (heads, key_dim), value_dim = next(iter(shapes))
    return KVLayout(len(layers), heads, key_dim, value_dim)


class _LLMStep(torch.nn.Module):
    """(inputs_embeds [B, T, D], attention_mask [B, P + T], past keys / values [L, B, H, P, d]) ->
    (logits [B, T, V], keys / values [L, B, H, P + T, d]): the prefill (P = 0) and every decode
    step, with positions from the attention mask as `generate` computes them (KVLayout: L, H, d)."""

    def __init__(self, llm):
        super().__init__()
        self.llm, self.cache_key = llm, cache_keyword(llm)

    def forward(self, embeds, mask, past_k, past_v):
        from transformers import DynamicCache

        cache = DynamicCache(ddp_cache_data=zip(past_k, past_v))
        positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, -embeds.shape[1]:]
        out = self.llm(inputs_embeds=embeds, attention_mask=mask, position_ids=positions, use_cache=True,
                       **{self.cache_key: cache})
        layers = getattr(out, self.cache_key).layers
        return (out.logits, torch.stack([layer.keys for layer in layers]),
                torch.stack([layer.values for layer in layers]))


@contextlib.contextmanager
def _traceable_experts(llm):
    """Mixture-of-experts layers as transformers' `batched_mm` experts (each token's chosen experts'
    weights gathered, one batched matmul) while tracing: its default, `grouped_mm`, is a custom op
    (`transformers.grouped_mm_fallback`) with no ONNX function, and `eager` skips experts no token
    chose (a data-dependent branch torch.export cannot trace).  The same sums; the model gets its
    implementation back.  A model without experts is left as it is."""
    before = llm.config._experts_implementation
    llm.set_experts_implementation("batched_mm")
    try:
        yield
    finally:
        llm.set_experts_implementation(before)


_QUIET = {"torch.onnx._internal.exporter._registration": logging.ERROR,  # logger: the level it keeps
          "torch.export._trace": logging.CRITICAL, "torch._guards": logging.CRITICAL}


def _export(module: torch.nn.Module, example: tuple, path: str, **kwargs) -> None:
    """torch.onnx.export of an inference wrapper, without the exporter's chatter: the wrapper in eval
    mode (it is a new Module, in training mode until told), no progress lines, and torch's notes that
    do not concern this graph (torchvision's ops it skips, its own deprecated pytree internals, an
    axis name it merges) kept out of the user's terminal.  A graph torch cannot trace is an
    ExportError with the cause torch's report gives (its "Exception summary"), without the stack
    traces torch.export logs on the way."""
    module.eval()
    quiet = {logging.getLogger(name): level for name, level in _QUIET.items()}
    levels = {logger: logger.level for logger in quiet}
    for logger, level in quiet.items():
        logger.setLevel(level)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning, message=".*LeafSpec")
            warnings.filterwarnings("ignore", message="# The axis name")
            torch.onnx.export(module, example, path, dynamo=True, external_data=False, verbose=False, **kwargs)
    except torch.onnx.errors.OnnxExporterError as exc:
        summary = str(exc).split("## Exception summary", 1)[-1].split("(Refer to the full stack trace")[0]
        # "<class 'torch._dynamo.exc.UserError'>: ..." -> "UserError: ..."
        cause = re.sub(r"<class '(?:[\w.]+\.)?(\w+)'>", r"\1", " ".join(summary.split()))[:400] or type(exc).__name__
        model = getattr(module, "llm", module)
        name = getattr(getattr(model, "config", None), "model_type", type(model).__name__)
        raise _refusal(name, f"torch.onnx.export cannot trace its {os.path.basename(path)} graph ({cause})") from exc
    finally:
        for logger, level in levels.items():
            logger.setLevel(level)


def export_onnx(cfg: Config, out: str, verify: bool = True, report=print) -> str:
    """The onnxruntime directory of `cfg`'s model (see the module docstring)."""
    import tinygpt

    model = tinygpt.build_model(float_config(cfg), "cpu", training=False)
    return write_onnx(model, cfg, out, verify, report)


def write_onnx(model, cfg: Config, out: str, verify: bool = True, report=print) -> str:
    """The onnxruntime directory of a built inference model (`cfg`: its config, for the image size and
    statistics).  A language model whose cache the step graph cannot hold is refused (kv_layout)
    before anything is written; with `verify`, onnxruntime must then agree with the model on the
    probes of verify.py (onnx_check.py: logits < 1e-4 at every step, the same greedy tokens), else an
    ExportError.  The files are moved into `out` only once all are written and verified."""
    import json

    import numpy as np
    from torch.export import Dim

    from ..processors.image import IMAGE_STATS

    model.float().eval()
    layout = kv_layout(model.llm)
    size, hidden = cfg.model.vision.image_size, model.llm.get_input_embeddings().weight.shape[1]
    batch = Dim("batch", max=64)
    with atomic.staged_directory(out) as staging, torch.no_grad():
        _export(_Vision(model), (torch.zeros(2, 3, size, size),), os.path.join(staging, "vision.onnx"),
                input_names=["images"], output_names=["visual"], dynamic_shapes=({0: batch},))
        # Traced with a non-empty cache of 2 positions; every length (0 for the prefill) is dynamic.
        example = (torch.zeros(1, 3, hidden), torch.ones(1, 5, dtype=torch.long),
                   torch.zeros(layout.layers, 1, layout.heads, 2, layout.key_dim),
                   torch.zeros(layout.layers, 1, layout.heads, 2, layout.value_dim))
        step = Dim("step", max=4096)
        with _traceable_experts(model.llm):
            _export(_LLMStep(model.llm), example, os.path.join(staging, "llm_step.onnx"),
                    input_names=["embeds", "mask", "past_k", "past_v"], output_names=["logits", "keys", "values"],
                    dynamic_shapes=({0: batch, 1: step}, {0: batch, 1: Dim.DYNAMIC},
                                    {1: batch, 3: Dim.DYNAMIC}, {1: batch, 3: Dim.DYNAMIC}))
        # The embedding module's output for every id, not its weight: some families scale inside it
        # (Gemma-3's ScaledWordEmbedding).
        embed = model.llm.get_input_embeddings()
        np.save(os.path.join(staging, "embed_tokens.npy"), embed(torch.arange(embed.weight.shape[0])).float().numpy())
        tok = model.tokenizer
        tok.save_pretrained(staging)
        style = model.style
        mean, std = IMAGE_STATS[image_statistics(cfg.model.vision)]
        manifest = {"image_size": size, "mean": list(mean), "std": list(std),
                    "style": {**json.loads(style.record()), "max_txt_len": style.max_txt_len,
                              "max_context_len": style.max_context_len},
                    "bos_token": tok.bos_token, "eos_token": tok.eos_token, "pad_token": tok.pad_token,
                    "model_type": model.llm.config.model_type, "kv_cache": asdict(layout)}
        atomic.write_json(os.path.join(staging, "onnx.json"), manifest)
        if verify:
            _verify(model, staging, report)
    return out


def _verify(model, directory: str, report) -> None:
    import onnxruntime

    from .onnx_check import onnx_parity
    from .verify import MAX_NEW_TOKENS, probes

    name, worst = model.llm.config.model_type, 0.0
    for image, question in probes():
        parity = onnx_parity(model, directory, image, question, MAX_NEW_TOKENS)
        if not parity.ok:
            raise _refusal(name, f"onnxruntime's graph disagrees with the torch model on {question!r} "
                                 f"({parity.summary()})")
        worst = max(worst, parity.logits_diff)
    report(f"verified with onnxruntime {onnxruntime.__version__}: max |logits diff| {worst:.2e} "
           f"({len(probes())} probes, every decode step), answer {parity.onnx_answer!r}")
