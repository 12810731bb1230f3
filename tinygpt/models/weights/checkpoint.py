"""`model.ckpt` files: detect which kind of checkpoint a file is and load it.

Checkpoints hold trainable weights only, so the per-group rule applies (see plan.py): a group the
file leaves out entirely is kept at initialisation (a stage-1 file has no LoRA), a group it
touches must be complete.
"""
from __future__ import annotations

from torch import nn

from ..lora import TARGETS_KEY, adapted_modules
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
            _check_lora_modules(keys, model, path)
            plan = plan_native(source, model)
        else:
            shown = ", ".join(keys[:6]) or "no tensors at all"
            raise WeightLoadError(f"{path}: not a checkpoint format tinygpt knows (TinyGPT-V stage checkpoint, "
                                  f"or tinygpt's own trainable weights); its keys start with: {shown}")
        return apply(model, source, plan)


def _check_lora_modules(keys: list[str], model: nn.Module, path: str) -> None:
    """A file whose LoRA sits on other Linears than this model's (e.g. written with other
    `model.llm.lora.targets`, or before the defaults came from peft) gets an error naming the key
    that makes them agree, instead of a list of unexpected and missing adapter keys."""
    theirs, ours = adapted_modules(keys), adapted_modules(dict(model.named_parameters()))
    if theirs and ours and theirs != ours:
        raise WeightLoadError(f"{path}: its LoRA adapters are on {', '.join(theirs)} but this model puts them on "
                              f"{', '.join(ours)}; set {TARGETS_KEY}: [{', '.join(theirs)}] to load it")
