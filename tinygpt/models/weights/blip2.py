"""LAVIS BLIP-2 (`blip2_pretrained_flant5xxl.pth` = `{"model": {...}}`) -> `qformer.*`,
`query_tokens`, `ln_vision.*`.

LAVIS's Q-Former is a BERT (`Qformer.bert.*`); transformers' Blip2QFormerModel renames
`embeddings.LayerNorm` -> `layernorm` and `attention.self` -> `attention.attention` (same for
`crossattention`), and keeps only the query-side FFN (`intermediate_query`, `output_query`).
TinyGPT-V drops the text side (word/position embeddings, the text FFN `intermediate`/`output`,
the `cls` head), and BLIP-2's other heads (t5/opt projection, vision/text projections, ITM, temp) are
not ours: all of those are ignored.
"""
from __future__ import annotations

import re

from torch import nn

from .. import components
from .files import TensorSource
from .plan import Plan, load_with

_LAYER = re.compile(r"Qformer\.bert\.encoder\.layer\.(\d+)\.(.+)")
_ATTN = re.compile(r"(attention|crossattention)\.self\.(query|key|value)\.(weight|bias)")
_KEPT = re.compile(r"(attention|crossattention)\.output\.(dense|LayerNorm)\.(weight|bias)"
                   r"|intermediate_query\.dense\.(weight|bias)|output_query\.(dense|LayerNorm)\.(weight|bias)")
_TEXT_FFN = re.compile(r"(intermediate\.dense|output\.dense|output\.LayerNorm)\.(weight|bias)")
_TEXT_EMBED = ("Qformer.bert.embeddings.word_embeddings.", "Qformer.bert.embeddings.position_embeddings.",
               "Qformer.bert.embeddings.position_ids")


def qformer_name(key: str) -> str | None:
    """A LAVIS `Qformer.*` key -> our parameter name, or None when TinyGPT-V does not use it."""
    if key in ("Qformer.bert.embeddings.LayerNorm.weight", "Qformer.bert.embeddings.LayerNorm.bias"):
        return "qformer.layernorm." + key.rsplit(".", 1)[1]
    layer = _LAYER.fullmatch(key)
    if layer:
        i, rest = layer.groups()
        attn = _ATTN.fullmatch(rest)
        if attn:
            return f"qformer.encoder.layer.{i}.{attn[1]}.attention.{attn[2]}.{attn[3]}"
        if _KEPT.fullmatch(rest):
            return f"qformer.encoder.layer.{i}.{rest}"
    return None


def add_blip2_keys(plan: Plan, keys: list[str]) -> list[str]:
    """Map Q-Former / query token / ln_vision keys; returns the keys that are none of those."""
    rest = []
    for key in keys:
        if key.startswith("Qformer."):
            name = qformer_name(key)
            layer = _LAYER.fullmatch(key)
            if name:
                plan.add(name, key)
            elif layer and _TEXT_FFN.fullmatch(layer[2]):
                plan.ignored[key] = "Q-Former text-side FFN (TinyGPT-V drops it)"
            elif key.startswith(_TEXT_EMBED):
                plan.ignored[key] = "Q-Former text-side embeddings (TinyGPT-V drops them)"
            elif key.startswith("Qformer.cls."):
                plan.ignored[key] = "Q-Former text LM head (TinyGPT-V drops it)"
            else:
                plan.unexpected.append(key)
        elif key == "query_tokens":
            plan.add("query_tokens", key)
        elif key in ("ln_vision.weight", "ln_vision.bias"):
            plan.add(key, key)
        else:
            rest.append(key)
    return rest


def plan_blip2_qformer(source: TensorSource, model: nn.Module) -> Plan:
    plan = Plan("lavis-blip2")
    for key in add_blip2_keys(plan, source.keys()):
        if key.startswith("visual_encoder."):
            plan.ignored[key] = "vision tower (loaded from model.vision.weights)"
        else:
            plan.ignored[key] = "BLIP-2 part TinyGPT-V does not use (LLM projection / heads)"
    plan.required = components.names_of(model, "qformer", "query_tokens", "ln_vision")
    return plan


def load_blip2_qformer(model: nn.Module, path: str):
    """LAVIS BLIP-2 checkpoint into `qformer`, `query_tokens`, `ln_vision` -> LoadReport."""
    return load_with(model, path, plan_blip2_qformer)
