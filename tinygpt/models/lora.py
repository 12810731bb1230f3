"""The one home of LoRA: injecting adapters into the LLM (training) and folding them back into the
base weights (inference, 8-bit loading, export).

Adapters are injected in place with peft (no PeftModel wrapper), so parameter names stay
`llm.model.layers.N...` (`...base_layer.weight` beside `lora_A/lora_B`): a stage-1 checkpoint's norm
keys load into a LoRA stage-2 model unchanged, and the weight loader maps both spellings.

Which Linears get adapters (`choose_targets`), in order: `model.llm.lora.targets` when set;
TinyGPT-V's Phi: its fused `query_key_value` and `dense` (one LoRA A shared by q, k and v), + `fc1,
fc2` with `lora.mlp`; with `lora.mlp`, every Linear of the LLM but its LM head (peft's `all-linear`:
the attention and MLP blocks; embeddings are not Linears); else peft's own per-model-type default
(`TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING`: Llama, Qwen2/3, Mistral, Gemma, GPT-NeoX, ...),
and for a model type peft has none for (or whose default names no module of this model) `all-linear`.
No table of our own: a new transformers family gets adapters without a code change.  The modules
chosen are logged, kept on the model (`model.lora_targets`), recorded in every checkpoint
(`RECORD_KEY`) and shown by `python -m tinygpt.inspect`.
"""
from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass

import patches.peft_without_bitsandbytes  # noqa: F401  (before peft: keeps bitsandbytes unloaded, see there)
import torch
from peft import LoraConfig, inject_adapter_in_model
from peft.tuners.lora import Linear as LoraLinear
from peft.tuners.lora import LoraLayer
from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as PEFT_DEFAULTS
from torch import nn
from transformers.pytorch_utils import Conv1D

from ..common.config import LoRAConfig
from ..common.errors import UserError
from .llm import TINYGPTV_FAMILY

log = logging.getLogger(__name__)

TARGETS_KEY = "model.llm.lora.targets"
RECORD_KEY = "lora_targets"  # checkpoint_final's metadata entry / the training checkpoint's key
ALL_LINEAR = "all-linear"  # peft's shorthand: every Linear / Conv1D but the output layer
# TinyGPT-V's lora_target_modules: the fused q/k/v projection and the attention output; + its MLP.
TINYGPTV_TARGETS = ("query_key_value", "dense")
TINYGPTV_MLP = ("fc1", "fc2")
_LINEARS = (nn.Linear, Conv1D)  # what peft's LoRA wraps (GPT-2-style models use Conv1D)


@dataclass(frozen=True)
class LoraTargets:
    """The Linears that carry adapters (last name components, sorted) and why they were chosen."""

    modules: tuple[str, ...]
    origin: str

    def record(self) -> dict[str, str]:
        """The checkpoint metadata entry (safetensors metadata is str -> str)."""
        return {RECORD_KEY: json.dumps(list(self.modules))}


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


def linear_names(llm: nn.Module) -> set[str]:
    """Last name components of the LLM's Linear (and Conv1D) modules: what a target name can match."""
    return {name.rpartition(".")[2] for name, m in llm.named_modules() if isinstance(m, _LINEARS)}


def adapted_modules(named: dict[str, object] | nn.Module) -> tuple[str, ...]:
    """Last name components of the modules carrying LoRA, from a module or from parameter names
    (`...q_proj.lora_A.default.weight` -> `q_proj`), sorted."""
    if isinstance(named, nn.Module):
        paths = [n for n, m in named.named_modules() if isinstance(m, LoraLayer)]
    else:
        paths = [n.split(".lora_")[0] for n in named if ".lora_" in n]
    # A wrapper nested in another (peft's MoE expert tensors) names the same module.
    return tuple(sorted({p.replace(".base_layer", "").rpartition(".")[2] for p in paths}))


def _peft_default(llm: nn.Module, model_type: str) -> list[str] | str | None:
    """peft's default `target_modules` for this model type, if it has one and it names modules this
    model has (a list: every name a Linear; a regex: matching at least one module's full name)."""
    default = PEFT_DEFAULTS.get(model_type)
    if isinstance(default, str):
        hit = any(re.fullmatch(default, name) for name, m in llm.named_modules() if isinstance(m, _LINEARS))
        return default if hit else None
    if default and set(default) <= linear_names(llm):
        return list(default)
    return None


def choose_targets(llm: nn.Module, cfg: LoRAConfig, family: str, source: str = "<config>") -> tuple[list[str] | str, str]:
    """peft's `target_modules` for this LLM (names, a regex, or "all-linear") and where they came
    from (the module docstring's order).  A `targets` name the LLM lacks is a UserError naming the key."""
    if cfg.targets:
        missing = [t for t in cfg.targets if t not in linear_names(llm)]
        if missing:
            raise UserError(f"{source}: key '{TARGETS_KEY}': the {family} LLM has no Linear named "
                            f"{', '.join(missing)} (its Linears: {', '.join(sorted(linear_names(llm)))})")
        return list(cfg.targets), TARGETS_KEY
    if family == TINYGPTV_FAMILY:
        return list(TINYGPTV_TARGETS + (TINYGPTV_MLP if cfg.mlp else ())), "TinyGPT-V's fused q/k/v + dense"
    if cfg.mlp:
        return ALL_LINEAR, "model.llm.lora.mlp: every Linear but the LM head (peft's all-linear)"
    default = _peft_default(llm, family)
    if default is not None:
        return default, f"peft's default for {family}"
    why = "has no default" if family not in PEFT_DEFAULTS else "has a default naming no module of this model"
    return ALL_LINEAR, f"every Linear but the LM head (peft's all-linear: peft {why} for {family})"


def inject_lora(llm: nn.Module, cfg: LoRAConfig, family: str, source: str = "<config>") -> LoraTargets | None:
    """Wrap the chosen Linears (`choose_targets`) with LoRA adapters (r, alpha, dropout) and log
    them; r = 0: none (returns None)."""
    if cfg.r <= 0:
        return None
    spec, origin = choose_targets(llm, cfg, family, source)
    lora = LoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=spec, bias="none")
    lora._register_custom_module({nn.Linear: FoldedLoraLinear})  # peft's hook for a custom LoRA layer class
    try:
        inject_adapter_in_model(lora, llm)
    except ValueError as exc:  # peft refuses a module (e.g. Mamba's out_proj): the user picks others
        raise UserError(f"{source}: LoRA on {origin}: peft refuses it ({' '.join(str(exc).split())}); set "
                        f"{TARGETS_KEY} to the modules to adapt") from None
    targets = LoraTargets(adapted_modules(llm), origin)
    log.debug("LoRA r %d on the %s LLM's %s (%s)", cfg.r, family, ", ".join(targets.modules), origin)  # build's summary says it
    return targets


def _delta_rows(module: LoraLayer, adapter: str):
    """rows -> the adapter's weight update for those output rows, [rows, in] fp32: peft's
    `get_delta_weight` of a Linear (B A * scaling) a block of rows at a time, so that merging into an
    int8 base never holds a whole fp32 update; peft's own whole update for other kinds (DoRA)."""
    if module.use_dora.get(adapter):
        delta = module.get_delta_weight(adapter)
        return lambda rows: delta[rows]
    a, b = module.lora_A[adapter].weight.float(), module.lora_B[adapter].weight
    return lambda rows: (b[rows].float() @ a) * module.scaling[adapter]


def merge_lora(llm: nn.Module) -> int:
    """Fold every injected LoRA adapter into its base Linear and put the plain Linear back.
    Returns the number of layers merged."""
    wrapped = [(name, m) for name, m in llm.named_modules() if isinstance(m, LoraLayer)]
    # Innermost first: peft nests its wrappers of MoE expert tensors (`experts.base_layer.base_layer`),
    # and an outer one unwrapped first would leave the inner one pointing back at its own base.
    for name, module in reversed(wrapped):
        base = module.get_base_layer()
        if hasattr(base, "add_float"):  # an int8 base (quantize.py): the update added to it, quantized again
            for adapter in module.active_adapters:
                base.add_float(_delta_rows(module, adapter))
        else:
            module.merge(safe_merge=True)  # safe_merge: refuse (raise) if the merge produced NaNs
        parent_name, _, child = name.rpartition(".")
        setattr(llm.get_submodule(parent_name) if parent_name else llm, child, module.get_base_layer())
    return len(wrapped)
