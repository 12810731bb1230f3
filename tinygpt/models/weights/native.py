"""Our own files: trainable weights keyed by our parameter names.

`save_trainable` writes them as safetensors (no pickle: safe to share, loads anywhere); the
runner's training checkpoints hold the same names under "model" and load the same way.
"""
from __future__ import annotations

from torch import nn

from ...common.checkpoint import save_weights
from ...conversation.protocol import STYLE_KEY
from .. import components
from .files import TensorSource
from .plan import Plan

FORMAT = "tinygpt-trainable"
def is_native(keys: list[str], model: nn.Module) -> bool:
    """Every key names a component of the model (its table: models/components.py)."""
    prefixes = components.prefixes(type(model))
    return bool(keys) and all(k.split(".", 1)[0] in prefixes for k in keys)


def plan_native(source: TensorSource, model: nn.Module) -> Plan:
    if source.path.endswith(".safetensors"):
        fmt = source.metadata.get("format", "safetensors")
    else:
        fmt = "tinygpt-runner" if source.extras else "tinygpt-state-dict"
    plan = Plan(fmt)
    for key in source.keys():
        plan.add(key, key)  # names the model lacks surface as "unexpected" in the check
    return plan


def save_trainable(model: nn.Module, path: str) -> list[str]:
    """Write every parameter with requires_grad (names as in `model.named_parameters()`) to a
    .safetensors file, atomically: a temp file in the same directory, then os.replace.  The
    model's prompt style (weights/style.py reads it back) and LoRA targets go into the header.
    Returns the names written."""
    tensors = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    style, lora = getattr(model, "style", None), getattr(model, "lora_targets", None)
    metadata = {**({STYLE_KEY: style.record()} if style else {}), **(lora.record() if lora else {})}
    save_weights(tensors, path, FORMAT, metadata=metadata)
    return sorted(tensors)
