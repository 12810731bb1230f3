"""The one home of LoRA: injecting adapters into the LLM (training) and folding them back into the
base weights (inference, 8-bit loading, export).

Adapters are injected in place with peft (no PeftModel wrapper), so parameter names stay
`llm.model.layers.N...` (`...base_layer.weight` beside `lora_A/lora_B`): a stage-1 checkpoint's norm
keys load into a LoRA stage-2 model unchanged, and the weight loader maps both spellings.
"""
from __future__ import annotations

import torch
from peft import LoraConfig, inject_adapter_in_model
from peft.tuners.lora import Linear as LoraLinear
from torch import nn

from ..common.config import LoRAConfig
from ..common.errors import UserError
from .llm import LORA_TARGETS_KEY, lora_targets


class FoldedLoraLinear(LoraLinear):
    """peft's LoRA Linear (same parameters, names, merge and unmerge), whose training forward
    computes `W x + s B (A x)` as `(W + s B A) x` when the base weight trains too.

    Why: when W trains, its gradient over all the tokens is computed anyway, and the adapters'
    gradients follow from it (dB = s dW' A^T, dA = s B^T dW', r x in x out each), so the two
    token-sized adapter matmuls of the forward and the four of the backward go away: one matmul per
    layer instead of three (the tiny recipe, where the base LLM trains beside LoRA: see
    docs/performance.md).  The same function; the sums are rounded in another order (~1e-7 relative
    in fp32; tests/models/test_lora_fold.py).  Everywhere else (a frozen base, where W's gradient
    would cost more than the adapters save; evaluation; dropout on the adapter input; several or
    variant adapters; a quantized base) it is peft's forward."""

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        name = self._folding_adapter(args, kwargs)
        if name is None:
            return super().forward(x, *args, **kwargs)
        base = self.get_base_layer()
        weight = torch.addmm(base.weight, self.lora_B[name].weight, self.lora_A[name].weight,
                             alpha=self.scaling[name])
        return nn.functional.linear(x, weight, base.bias)

    def _folding_adapter(self, args: tuple, kwargs: dict) -> str | None:
        """The one active adapter whose forward can be folded, or None (peft's forward)."""
        base = self.get_base_layer()
        if (args or kwargs or not self.training or not torch.is_grad_enabled() or self.disable_adapters
                or self.merged or type(base) is not nn.Linear or not base.weight.requires_grad
                or len(self.active_adapters) != 1):
            return None
        name = self.active_adapters[0]
        if (name not in self.lora_A or name in self.lora_variant
                or not isinstance(self.lora_dropout[name], nn.Identity)
                or self.lora_A[name].weight.dtype != base.weight.dtype):
            return None
        return name


def inject_lora(llm: nn.Module, cfg: LoRAConfig, family: str, source: str = "<config>") -> None:
    """Wrap the target Linears with LoRA adapters (r, alpha, dropout); r = 0: none.  Targets are
    `cfg.targets` when set, else the LLM family's attention projections (+ MLP with `cfg.mlp`;
    models/llm.py's table).  A target name the LLM does not have is a UserError naming the key."""
    if cfg.r <= 0:
        return
    targets = lora_targets(family, cfg.mlp, cfg.targets)
    present = {name.rpartition(".")[2] for name, m in llm.named_modules() if isinstance(m, nn.Linear)}
    missing = [t for t in targets if t not in present]
    if missing:
        raise UserError(f"{source}: key '{LORA_TARGETS_KEY}': the {family} LLM has no Linear named "
                        f"{', '.join(missing)} (its Linears: {', '.join(sorted(present))})")
    lora = LoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=targets, bias="none")
    lora._register_custom_module({nn.Linear: FoldedLoraLinear})  # peft's hook for a custom LoRA layer class
    inject_adapter_in_model(lora, llm)


def merge_lora(llm: nn.Module) -> int:
    """Fold every injected LoRA adapter into its base Linear and put the plain Linear back.
    Returns the number of layers merged."""
    from peft.tuners.lora import LoraLayer

    wrapped = [(name, m) for name, m in llm.named_modules() if isinstance(m, LoraLayer)]
    for name, module in wrapped:
        module.merge(safe_merge=True)  # safe_merge: refuse (raise) if the merge produced NaNs
        parent_name, _, child = name.rpartition(".")
        setattr(llm.get_submodule(parent_name) if parent_name else llm, child, module.get_base_layer())
    return len(wrapped)
