"""Norm layers that keep their weights in float32 whatever the activations are.

TinyGPT-V trains only the norm *weights* of Phi-2 and keeps them in fp32 so that the tiny updates
they receive are not lost to half-precision rounding.  These layers compute in the weight's dtype and
hand back the input's dtype, so a bf16/fp16 model with fp32 norms runs with or without autocast.

`FloatCompute` is that behaviour as a mixin: TinyGPT-V's Phi uses it through `FloatLayerNorm` /
`FloatRMSNorm`, and `float_compute` gives it to a norm module of any other class in place (the
LLM families' own RMSNorm / LayerNorm classes, models/llm.py).
"""
from __future__ import annotations

import torch
from torch import nn

_FLOAT_CLASSES: dict[type, type] = {}  # a norm class -> its FloatCompute subclass (one per class)


class FloatCompute:
    """Mixin for a norm module: the input is cast to the weight's dtype (fp32 without a weight),
    the module's own forward runs there, and the output goes back to the input's dtype."""

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        weight = getattr(self, "weight", None)
        dtype = weight.dtype if isinstance(weight, torch.Tensor) else torch.float32
        return super().forward(x.to(dtype), *args, **kwargs).to(x.dtype)


class FloatLayerNorm(FloatCompute, nn.LayerNorm):
    """nn.LayerNorm computed in its weight's dtype."""


class FloatRMSNorm(FloatCompute, nn.RMSNorm):
    """RMSNorm (eps 1e-6 in TinyGPT-V's `post_layernorm`), computed in the weight dtype."""


def float_compute(module: nn.Module) -> nn.Module:
    """Make `module` (a norm layer of any class) hold fp32 parameters and compute in them, in place:
    its class becomes a FloatCompute subclass of its own class (state dict, parameter names and
    isinstance checks unchanged).  Returns the module."""
    cls = type(module)
    if not isinstance(module, FloatCompute):
        if cls not in _FLOAT_CLASSES:
            _FLOAT_CLASSES[cls] = type(f"Float{cls.__name__}", (FloatCompute, cls), {})
        module.__class__ = _FLOAT_CLASSES[cls]
    return module.float()
