"""A Hugging Face causal LM's weights -> `llm.*`, for every family models/llm.py builds.

A directory with `model.safetensors`, a sharded `model.safetensors.index.json` or `pytorch_model.bin`
(or one such file; files.py reads them).  Keys are the `XForCausalLM`'s own names
(`model.layers.N...`, `lm_head.weight`), the ones `build_causal_lm` gives `model.llm`, so each maps to
`llm.<key>`.  Every LLM parameter but LoRA must be in the file, except:
  * tied embeddings (`tie_word_embeddings`): the head *is* `model.embed_tokens.weight`, so transformers
    writes no `lm_head.weight`; a file that has one anyway gets it ignored, with that reason;
  * rotary `inv_freq` buffers (older files): recomputed from the config, ignored.
TinyGPT-V's Phi (fused `query_key_value`) reads Phi-2 files through phi.py instead.
"""
from __future__ import annotations

from torch import nn

from .files import TensorSource
from .plan import Plan, load_with

PREFIX = "llm."


def ties_head(llm: nn.Module) -> bool:
    """True when the LM head shares the input embedding's weight."""
    head = llm.get_output_embeddings()
    return head is not None and head.weight is llm.get_input_embeddings().weight


def plan_hf_causal_lm(source: TensorSource, model: nn.Module) -> Plan:
    plan = Plan("hf-causal-lm")
    tied = ties_head(model.llm)
    for key in source.keys():
        if tied and key == "lm_head.weight":
            plan.ignored[key] = "tied to model.embed_tokens.weight (tie_word_embeddings)"
        elif key.endswith("rotary_emb.inv_freq"):
            plan.ignored[key] = "rotary embedding buffer (recomputed from the config)"
        else:
            plan.add(PREFIX + key, key)  # a name the model lacks is reported as unexpected
    plan.required = {n for n, _ in model.named_parameters() if n.startswith(PREFIX) and "lora_" not in n}
    return plan


def load_hf_causal_lm(model: nn.Module, path: str):
    """An HF causal LM (directory, sharded or not, or one weight file) into `model.llm` -> LoadReport."""
    return load_with(model, path, plan_hf_causal_lm)
