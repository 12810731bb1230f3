"""Phi-2 weights -> `llm.*`, from any of the three layouts a user may bring.

* `hf-phi-split` (transformers today): `model.layers.N.self_attn.{q,k,v}_proj` -> fused [q; k; v].
* `hf-phi-fused-legacy` (the early transformers port TinyGPT-V ships, `susnato/phi-2`):
  `model.layers.N.self_attn.query_key_value` [3H, H] whose rows go head by head, each head holding
  its q, k, v blocks of head_dim rows (it splits with `view(B, T, heads, 3, head_dim)`); permuted
  exactly into our [q; k; v] (`legacy_qkv_to_ours`).
* `microsoft-phi` (Microsoft's original remote code): `transformer.h.N.mixer.Wqkv`, already [q; k; v]
  (it splits with `(three h d)`), `mixer.out_proj`, `ln`, `transformer.embd.wte`, `lm_head.ln/.linear`.

TinyGPT-V's q/k LayerNorms and post_layernorm are not in Phi-2 files: unless a file has them they
start at identity (weight 1, bias 0) and are reported as initialised.  Everything else must be there.
"""
from __future__ import annotations

import re

import torch
from torch import nn

from .. import components
from .files import TensorSource
from .plan import Plan, load_with
from .report import WeightLoadError

_LAYER = re.compile(r"model\.layers\.(\d+)\.(.+)")
_SPLIT = re.compile(r"self_attn\.([qkv])_proj\.(weight|bias)")
_MS_LAYER = re.compile(r"transformer\.h\.(\d+)\.(.+)")
_LAYER_PARTS = {
    f"{module}.{leaf}"
    for module in ("self_attn.dense", "mlp.fc1", "mlp.fc2", "input_layernorm",
                   "self_attn.q_layernorm", "self_attn.k_layernorm")
    for leaf in ("weight", "bias")
} | {"post_layernorm.weight"}
_TOP = {"model.embed_tokens.weight", "model.final_layernorm.weight", "model.final_layernorm.bias",
        "lm_head.weight", "lm_head.bias"}
_MS_TOP = {"transformer.embd.wte.weight": "model.embed_tokens.weight",
           "lm_head.ln.weight": "model.final_layernorm.weight", "lm_head.ln.bias": "model.final_layernorm.bias",
           "lm_head.linear.weight": "lm_head.weight", "lm_head.linear.bias": "lm_head.bias"}
_MS_PARTS = {"ln": "input_layernorm", "mixer.Wqkv": "self_attn.query_key_value",
             "mixer.out_proj": "self_attn.dense", "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2"}
# TinyGPT-V's additions, absent from Phi-2 files: (part, identity value) per kind.
_TINYGPTV_NORMS = {
    "q_layernorm": (("self_attn.q_layernorm.weight", 1.0), ("self_attn.q_layernorm.bias", 0.0)),
    "k_layernorm": (("self_attn.k_layernorm.weight", 1.0), ("self_attn.k_layernorm.bias", 0.0)),
    "post_layernorm": (("post_layernorm.weight", 1.0),),
}


def legacy_qkv_to_ours(t: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Rows [head0: q k v | head1: q k v | ...] -> [q of all heads; k; v].

    Works on anything whose first dim is those 3H rows: the weight [3H, H], the bias [3H] and a
    LoRA B [3H, r] (permuting B's rows permutes B @ A's rows the same way, so it is exact).
    """
    head_dim = t.shape[0] // (3 * n_heads)
    return t.reshape(n_heads, 3, head_dim, *t.shape[1:]).transpose(0, 1).reshape(t.shape)


def n_heads_of(model: nn.Module) -> int:
    attn = model.llm.model.layers[0].self_attn
    if attn.num_kv_heads != attn.num_heads:
        raise WeightLoadError("the legacy fused Phi layout has as many k/v heads as q heads; "
                              f"this model has {attn.num_heads} q and {attn.num_kv_heads} k/v heads")
    return attn.num_heads


def add_phi_key(plan: Plan, key: str, name: str, n_heads: int) -> bool:
    """Map one key whose HF-style name (relative to PhiForCausalLM) is `name`; the fused QKV is the
    legacy per-head layout.  Returns False when `name` is not a Phi parameter."""
    layer = _LAYER.fullmatch(name)
    if name in _TOP or (layer and layer[2] in _LAYER_PARTS):
        plan.add(f"llm.{name}", key)
    elif layer and layer[2] in ("self_attn.query_key_value.weight", "self_attn.query_key_value.bias"):
        plan.add(f"llm.{name}", key, convert=lambda t: legacy_qkv_to_ours(t, n_heads))
    elif "rotary_emb." in name:
        plan.ignored[key] = "rotary embedding buffer (recomputed from the config)"
    else:
        return False
    return True


def detect_layout(keys: list[str]) -> str:
    if any(_LAYER.fullmatch(k) and _SPLIT.fullmatch(_LAYER.fullmatch(k)[2]) for k in keys):
        return "hf-phi-split"
    if any(k.endswith("self_attn.query_key_value.weight") for k in keys):
        return "hf-phi-fused-legacy"
    if any(k.endswith("mixer.Wqkv.weight") for k in keys):
        return "microsoft-phi"
    raise WeightLoadError(f"not a Phi-2 checkpoint: no attention weights (q_proj / query_key_value / Wqkv) "
                          f"among its {len(keys)} keys (e.g. {', '.join(keys[:5])})")


def _add_split(plan: Plan, keys: list[str], n_heads: int) -> None:
    qkv: dict[tuple[str, str], dict[str, str]] = {}
    for key in keys:
        layer = _LAYER.fullmatch(key)
        split = layer and _SPLIT.fullmatch(layer[2])
        if split:
            qkv.setdefault((layer[1], split[2]), {})[split[1]] = key
        elif not add_phi_key(plan, key, key, n_heads):
            plan.unexpected.append(key)
    for (i, leaf), found in sorted(qkv.items()):
        name = f"llm.model.layers.{i}.self_attn.query_key_value.{leaf}"
        if set(found) == {"q", "k", "v"}:
            plan.add(name, found["q"], found["k"], found["v"], convert=lambda q, k, v: torch.cat((q, k, v)))
        else:
            plan.incomplete.append(f"{name} (the file has only {', '.join(found.values())})")


def _add_microsoft(plan: Plan, keys: list[str]) -> None:
    for key in keys:
        layer = _MS_LAYER.fullmatch(key)
        module, _, leaf = layer[2].rpartition(".") if layer else ("", "", "")
        if key in _MS_TOP:
            plan.add(f"llm.{_MS_TOP[key]}", key)
        elif layer and module in _MS_PARTS:
            plan.add(f"llm.model.layers.{layer[1]}.{_MS_PARTS[module]}.{leaf}", key)
        elif "rotary_emb." in key:
            plan.ignored[key] = "rotary embedding buffer (recomputed from the config)"
        else:
            plan.unexpected.append(key)


def initialise_missing_norms(plan: Plan, model: nn.Module) -> None:
    """TinyGPT-V's extra norms start at identity unless the file has them (kind by kind)."""
    n_layers = len(model.llm.model.layers)
    for kind, parts in _TINYGPTV_NORMS.items():
        if any(f".{kind}." in name for name in plan.targets):
            continue
        for i in range(n_layers):
            for part, value in parts:
                plan.initialise[f"llm.model.layers.{i}.{part}"] = value


def plan_phi(source: TensorSource, model: nn.Module) -> Plan:
    keys = source.keys()
    layout = detect_layout(keys)
    plan = Plan(layout)
    n_heads = n_heads_of(model)
    if layout == "hf-phi-split":
        _add_split(plan, keys, n_heads)
    elif layout == "microsoft-phi":
        _add_microsoft(plan, keys)
    else:
        for key in keys:
            if not add_phi_key(plan, key, key, n_heads):
                plan.unexpected.append(key)
    initialise_missing_norms(plan, model)
    plan.required = {n for n in components.names_of(model, "llm") if not components.is_lora(n)}
    return plan


def load_phi(model: nn.Module, path: str):
    """Phi-2 (HF directory, sharded or not, or a single file; split, legacy fused or Microsoft
    layout) into `model.llm` -> LoadReport."""
    return load_with(model, path, plan_phi)
