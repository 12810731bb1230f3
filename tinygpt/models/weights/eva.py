"""LAVIS `eva_vit_g.pth` -> `visual_encoder.*` (transformers' Blip2VisionModel names).

The file is EVA-CLIP-g's vision tower as a plain state dict: `cls_token`, `pos_embed`,
`patch_embed.proj`, and 40 `blocks.N` with `norm1`, `attn.qkv` (no bias) + `attn.q_bias` /
`attn.v_bias`, `attn.proj`, `norm2`, `mlp.fc1/fc2`.  BLIP-2 uses the first 39 blocks, so later blocks
(and any head / final norm) are ignored.  The same keys with a `visual_encoder.` prefix (a full
BLIP-2 / TinyGPT-V state dict) map the same way.
"""
from __future__ import annotations

import math
import re

import torch
import torch.nn.functional as F
from torch import nn

from .. import components
from .files import TensorSource
from .plan import Plan, load_with

_BLOCK = re.compile(r"blocks\.(\d+)\.(.+)")
_BLOCK_PARTS = {
    "norm1.weight": "layer_norm1.weight", "norm1.bias": "layer_norm1.bias",
    "attn.qkv.weight": "self_attn.qkv.weight",
    "attn.proj.weight": "self_attn.projection.weight", "attn.proj.bias": "self_attn.projection.bias",
    "norm2.weight": "layer_norm2.weight", "norm2.bias": "layer_norm2.bias",
    "mlp.fc1.weight": "mlp.fc1.weight", "mlp.fc1.bias": "mlp.fc1.bias",
    "mlp.fc2.weight": "mlp.fc2.weight", "mlp.fc2.bias": "mlp.fc2.bias",
}
_TOP = {
    "cls_token": "embeddings.class_embedding",
    "patch_embed.proj.weight": "embeddings.patch_embedding.weight",
    "patch_embed.proj.bias": "embeddings.patch_embedding.bias",
}
_UNUSED_TOP = ("norm.", "fc_norm.", "head.")


def qkv_bias(q_bias: torch.Tensor, v_bias: torch.Tensor) -> torch.Tensor:
    """EVA has learnable q and v biases and none for k: the fused bias is [q; 0; v]."""
    return torch.cat((q_bias, torch.zeros_like(q_bias), v_bias))


def interpolate_pos_embed(pos: torch.Tensor, num_tokens: int) -> torch.Tensor:
    """[1, 1 + g*g, W] -> [1, num_tokens, W]: the class token kept, the g x g patch grid resized
    bicubically (align_corners=False), as LAVIS does when the image size differs (224 -> 448 px:
    257 -> 1025 tokens)."""
    if pos.shape[1] == num_tokens:
        return pos
    old, new = math.isqrt(pos.shape[1] - 1), math.isqrt(num_tokens - 1)
    if old * old != pos.shape[1] - 1 or new * new != num_tokens - 1:
        raise RuntimeError(f"position embedding of {pos.shape[1]} tokens is not 1 + a square grid")
    width = pos.shape[-1]
    grid = pos[:, 1:].float().reshape(1, old, old, width).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(new, new), mode="bicubic", align_corners=False)
    grid = grid.permute(0, 2, 3, 1).reshape(1, new * new, width)
    return torch.cat((pos[:, :1].float(), grid), dim=1)


def add_eva_keys(plan: Plan, keys: list[str], model: nn.Module, prefix: str = "") -> None:
    """Map EVA keys (each starting with `prefix`) onto `visual_encoder.*`."""
    depth = len(model.visual_encoder.encoder.layers)
    num_tokens = model.visual_encoder.embeddings.position_embedding.shape[1]
    biases: dict[int, dict[str, str]] = {}
    for key in keys:
        name = key[len(prefix):]
        block = _BLOCK.fullmatch(name)
        if name in _TOP:
            plan.add(f"visual_encoder.{_TOP[name]}", key)
        elif name == "pos_embed":
            plan.add("visual_encoder.embeddings.position_embedding", key,
                     convert=lambda p: interpolate_pos_embed(p, num_tokens))
        elif block and int(block[1]) >= depth:
            plan.ignored[key] = f"ViT block beyond the {depth} BLIP-2 uses"
        elif block and block[2] in ("attn.q_bias", "attn.v_bias"):
            biases.setdefault(int(block[1]), {})[block[2][5]] = key
        elif block and block[2] in _BLOCK_PARTS:
            plan.add(f"visual_encoder.encoder.layers.{block[1]}.{_BLOCK_PARTS[block[2]]}", key)
        elif name.startswith(_UNUSED_TOP):
            plan.ignored[key] = "EVA-CLIP head / final norm (BLIP-2 uses ln_vision)"
        else:
            plan.unexpected.append(key)
    for i, found in sorted(biases.items()):
        name = f"visual_encoder.encoder.layers.{i}.self_attn.qkv.bias"
        if set(found) == {"q", "v"}:
            plan.add(name, found["q"], found["v"], convert=qkv_bias)
        else:
            plan.incomplete.append(f"{name} (the file has only {', '.join(found.values())})")


def plan_eva_vit(source: TensorSource, model: nn.Module) -> Plan:
    plan = Plan("lavis-eva-vit")
    keys = source.keys()
    prefix = "visual_encoder." if keys and all(k.startswith("visual_encoder.") for k in keys) else ""
    if not prefix and any(k.startswith("visual_encoder.") for k in keys):
        # A whole BLIP-2-style state dict: take the tower, leave the rest.
        for k in keys:
            if not k.startswith("visual_encoder."):
                plan.ignored[k] = "not part of the vision tower"
        keys, prefix = [k for k in keys if k.startswith("visual_encoder.")], "visual_encoder."
    add_eva_keys(plan, keys, model, prefix)
    plan.required = components.names_of(model, "visual_encoder")
    return plan


def load_eva_vit(model: nn.Module, path: str):
    """LAVIS `eva_vit_g.pth` into `model.visual_encoder` -> LoadReport."""
    return load_with(model, path, plan_eva_vit)
