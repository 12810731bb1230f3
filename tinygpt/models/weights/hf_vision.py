"""CLIP / SigLIP / any `hf` vision towers from Hugging Face files -> `visual_encoder.*`.

Two layouts: a full CLIPModel / SiglipModel (or CLIPVisionModelWithProjection, and vision-only files
written by transformers 4.x), whose tower keys start with `vision_model.`; and a vision-only model
written by transformers 5.x, whose keys are the tower's own (`embeddings.*`, `encoder.layers.N.*`).
Either way the rest of the name is our tower's parameter name.  Ignored, with the reason: the text
model, projections and logit scale/bias of a full model; the tower's `post_layernorm` and SigLIP's
pooling `head` (models/vision.py builds neither: features are taken before them); the
`position_ids` buffer of older files.  Every tower parameter must be in the file.
"""
from __future__ import annotations

from torch import nn

from ..vision import is_auto_tower
from .files import TensorSource
from .hf_names import renamer
from .plan import Plan, load_with

FULL_PREFIX = "vision_model."
_UNUSED = {
    "post_layernorm.": "the tower's final norm (features are taken before it)",
    "head.": "SigLIP's attention-pooling head (features are patch tokens, not a pooled vector)",
    "embeddings.position_ids": "position index buffer (recomputed)",
}


def plan_hf_vision(source: TensorSource, model: nn.Module) -> Plan:
    keys = source.keys()
    full = any(k.startswith(FULL_PREFIX) for k in keys)
    plan = Plan("hf-vision-full-model" if full else "hf-vision")
    # An `hf` tower (models/vision.py) is transformers' model whole: its final norm and head are built.
    auto = is_auto_tower(model.visual_encoder)
    unused_parts = {k: why for k, why in _UNUSED.items() if not auto or k == "embeddings.position_ids"}
    rename = renamer(model.visual_encoder)  # older files' names (ViT's attention.attention.query)
    for key in keys:
        if full and not key.startswith(FULL_PREFIX):
            plan.ignored[key] = "not the vision tower (text model, projection, logit scale)"
            continue
        name = rename(key[len(FULL_PREFIX):] if full else key)
        unused = next((why for start, why in unused_parts.items() if name.startswith(start)), None)
        if unused:
            plan.ignored[key] = unused
        else:
            plan.add(f"visual_encoder.{name}", key)  # a name the tower lacks is reported as unexpected
    plan.required = {n for n, _ in model.named_parameters() if n.startswith("visual_encoder.")}
    return plan


def load_hf_vision(model: nn.Module, path: str):
    """An HF CLIP / SigLIP directory or weight file into `model.visual_encoder` -> LoadReport."""
    return load_with(model, path, plan_hf_vision)
