"""8-bit LLM weights for low-memory inference (TinyGPT-V's `low_resource` mode).

Phi-2's Linear layers become bitsandbytes `Linear8bitLt` (LLM.int8(): int8 weights with a per-row
scale, outlier activation columns above `threshold` computed in 16 bit).  LoRA is merged into the
base weights first, because an int8 base cannot hold a separate adapter's update exactly and the
merged layer is cheaper to run.  The result is inference-only: the LLM is frozen afterwards.
`lm_head` stays in full precision (quantizing the vocabulary projection costs most accuracy for
little memory), as do the norms, the embeddings and the vision side.
"""
from __future__ import annotations

import logging

import torch
from torch import nn

from ..common.errors import UserError
from .lora import merge_lora

log = logging.getLogger(__name__)

# Device types bitsandbytes' 8-bit matmul has kernels for (CPU only in recent releases; the test
# suite checks CPU with the installed one).  Ascend NPUs have none: keep the LLM in bf16/fp16 there.
SUPPORTED_DEVICE_TYPES = ("cpu", "cuda", "xpu")
OUTLIER_THRESHOLD = 6.0  # LLM.int8()'s default, as transformers' load_in_8bit uses


class QuantizationError(UserError):
    """8-bit loading was asked for where it cannot work; the message says what to change."""


def _bitsandbytes():
    try:
        import bitsandbytes
    except ImportError as exc:
        raise QuantizationError(
            f"model.llm.load_in_8bit needs bitsandbytes ({exc}); install it with `pip install bitsandbytes`, "
            "or set model.llm.load_in_8bit=false") from None
    return bitsandbytes


@torch.no_grad()
def quantize_llm_8bit(model: nn.Module, device: torch.device | str) -> int:
    """Merge LoRA, then swap the LLM's Linear layers (not lm_head) for int8 ones on `device`.
    Returns the number of layers quantized.  Raises QuantizationError if bitsandbytes is missing,
    the device has no 8-bit kernels, or the config trains the LLM's base weights."""
    # The type from the string too: "npu" is not even a torch.device until torch_npu is imported.
    device_type = device.type if isinstance(device, torch.device) else str(device).split(":")[0]
    if device_type not in SUPPORTED_DEVICE_TYPES:
        raise QuantizationError(
            f"model.llm.load_in_8bit: bitsandbytes has no 8-bit kernels for device type '{device_type}' "
            f"(supported: {', '.join(SUPPORTED_DEVICE_TYPES)}); set model.llm.load_in_8bit=false "
            "(the LLM then runs in bf16/fp16)")
    if model.cfg.llm.train:
        raise QuantizationError(
            "model.llm.load_in_8bit is for inference: int8 base weights cannot be trained, but "
            "model.llm.train=true; turn one of them off")
    bnb = _bitsandbytes()
    device = torch.device(device)

    merged = merge_lora(model.llm)
    targets = [(name, m) for name, m in model.llm.named_modules()
               if isinstance(m, nn.Linear) and name != "lm_head"]
    for name, linear in targets:
        q = bnb.nn.Linear8bitLt(linear.in_features, linear.out_features, bias=linear.bias is not None,
                                has_fp16_weights=False, threshold=OUTLIER_THRESHOLD, device="meta")
        # Int8Params quantizes when moved from CPU to the target device; one layer at a time, so
        # only one layer's full-precision weight is ever copied to CPU.
        q.weight = bnb.nn.Int8Params(linear.weight.data.to("cpu"), requires_grad=False, has_fp16_weights=False)
        if linear.bias is not None:
            q.bias = nn.Parameter(linear.bias.data.to("cpu"), requires_grad=False)
        parent_name, _, child = name.rpartition(".")
        setattr(model.llm.get_submodule(parent_name), child, q.to(device))
    # Frozen for good: the merged adapters and the int8 weights have no trainable form left.
    model.llm.requires_grad_(False)
    log.info("LLM in 8 bit on %s: %d LoRA layers merged, %d Linear layers quantized (lm_head kept)",
             device, merged, len(targets))
    return len(targets)
