"""How transformers itself renames a checkpoint's keys for a model (its `conversion_mapping`): files
written by a family's older code (ViT's `attention.attention.query`, GPT-NeoX's `embed_out`) load
into the module names transformers 5.x builds.  Only the one-to-one renamings: tensor conversions
(MoE experts fused into one tensor) are transformers' `from_pretrained`'s (weights/hf_causal_lm.py)."""
from __future__ import annotations

from torch import nn
from transformers.conversion_mapping import get_model_conversion_mapping
from transformers.core_model_loading import WeightRenaming, apply_renamings


def renamer(model: nn.Module):
    """file key -> the key as `model`'s own state dict spells it."""
    renamings = [t for t in get_model_conversion_mapping(model) if isinstance(t, WeightRenaming)]
    return lambda key: apply_renamings(key, renamings)
