"""`model.ckpt` files: detect which kind of checkpoint a file is and load it.

Checkpoints hold trainable weights only, so the per-group rule applies (see plan.py): a group the
file leaves out entirely is kept at initialisation (a stage-1 file has no LoRA), a group it
touches must be complete.
"""
from __future__ import annotations

from torch import nn

from .files import open_weights
from .native import is_native, plan_native
from .plan import apply
from .report import LoadReport, WeightLoadError
from .tinygptv import is_tinygptv, plan_tinygptv


def load_checkpoint(model: nn.Module, path: str) -> LoadReport:
    """A TinyGPT-V `TinyGPT-V_for_StageN.pth`, one of our `.safetensors` trainable-weight files, or
    our runner's training checkpoint (`{"model": ..., ...}`) -> LoadReport."""
    with open_weights(path) as source:
        keys = source.keys()
        if is_tinygptv(keys):
            plan = plan_tinygptv(source, model)
        elif is_native(keys, model):
            plan = plan_native(source, model)
        else:
            shown = ", ".join(keys[:6]) or "no tensors at all"
            raise WeightLoadError(f"{path}: not a checkpoint format tinygpt knows (TinyGPT-V stage checkpoint, "
                                  f"or tinygpt's own trainable weights); its keys start with: {shown}")
        return apply(model, source, plan)
