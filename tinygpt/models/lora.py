"""The one home of LoRA: injecting adapters into the LLM (training) and folding them back into the
base weights (inference, 8-bit loading, export).

Adapters are injected in place with peft (no PeftModel wrapper), so parameter names stay
`llm.model.layers.N...` (`...base_layer.weight` beside `lora_A/lora_B`): a stage-1 checkpoint's norm
keys load into a LoRA stage-2 model unchanged, and the weight loader maps both spellings.
"""
from __future__ import annotations

from peft import LoraConfig, inject_adapter_in_model
from torch import nn

from ..common.config import LoRAConfig
from ..common.errors import UserError
from .llm import LORA_TARGETS_KEY, lora_targets


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
