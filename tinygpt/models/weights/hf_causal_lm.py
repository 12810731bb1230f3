"""A Hugging Face causal LM's weights -> `llm.*`, for every family models/llm.py builds.

A directory with `model.safetensors`, a sharded `model.safetensors.index.json` or `pytorch_model.bin`
(or one such file; files.py reads them).  Keys are the `XForCausalLM`'s own names
(`model.layers.N...`, `lm_head.weight`), the ones `build_causal_lm` gives `model.llm`, so each maps to
`llm.<key>`.  Every LLM parameter but LoRA must be in the file, except:
  * tied embeddings (`tie_word_embeddings`): the head *is* `model.embed_tokens.weight`, so transformers
    writes no `lm_head.weight`; a file that has one anyway gets it ignored, with that reason;
  * rotary `inv_freq` buffers (older files): recomputed from the config, ignored.
Keys a family's files spell differently from its module names (GPT-NeoX's `embed_out` for `lm_head`,
legacy prefixes) are renamed by transformers' own checkpoint renamings for that model
(weights/hf_names.py).  Persistent buffers the file holds (Gemma-4's `layer_scalar`, MoE routers'
`e_score_correction_bias`) are copied into the model's buffers after the parameters.  A directory
whose layout needs transformers' tensor *conversions* (MoE files keep one tensor per expert, the
model fuses them) is read by transformers itself (`from_pretrained`, which applies them), and its
result goes through the same checks and copy: exactly what transformers would load, at the cost of
a second copy of the LLM while loading.
TinyGPT-V's Phi (fused `query_key_value`) reads Phi-2 files through phi.py instead.
"""
from __future__ import annotations

import os

import torch
from torch import nn
from transformers import AutoModelForCausalLM

from ..llm import embedding_dtype
from .files import TensorSource, open_weights
from .hf_names import renamer
from .plan import Plan, apply, check
from .report import WeightLoadError

PREFIX = "llm."
BUFFER = "a persistent buffer of the model: copied after the parameters"


def ties_head(llm: nn.Module) -> bool:
    """True when the LM head shares the input embedding's weight."""
    head = llm.get_output_embeddings()  # int8 layers (models/quantize.py) have no float weight: untied
    weight = getattr(head, "weight", None)
    return weight is not None and weight is getattr(llm.get_input_embeddings(), "weight", None)


def plan_hf_causal_lm(source: TensorSource, model: nn.Module) -> Plan:
    plan = Plan("hf-causal-lm")
    tied, rename, buffers = ties_head(model.llm), renamer(model.llm), _persistent_buffers(model.llm)
    for key in source.keys():
        name = rename(key)
        if tied and name == "lm_head.weight":
            plan.ignored[key] = "tied to model.embed_tokens.weight (tie_word_embeddings)"
        elif name.endswith("rotary_emb.inv_freq"):
            plan.ignored[key] = "rotary embedding buffer (recomputed from the config)"
        elif name in buffers:
            plan.ignored[key] = BUFFER
        else:
            plan.add(PREFIX + name, key)  # a name the model lacks is reported as unexpected
    plan.required = {n for n, _ in model.named_parameters() if n.startswith(PREFIX) and "lora_" not in n}
    return plan


def _persistent_buffers(llm: nn.Module) -> dict[str, torch.Tensor]:
    """The buffers a state dict of `llm` holds (inv_freq-style ones are not persistent), by the name
    they have without LoRA (a router `gate` Linear carrying LoRA keeps its buffer under `base_layer`)."""
    state = set(llm.state_dict(keep_vars=True))
    return {n.replace(".base_layer.", "."): b for n, b in llm.named_buffers() if n in state}


def _load(model: nn.Module, source: TensorSource, plan: Plan):
    """Check and copy the parameters, then the buffers (shapes checked before anything is copied)."""
    buffers, rename = _persistent_buffers(model.llm), renamer(model.llm)
    copies = {rename(k): k for k, why in plan.ignored.items() if why == BUFFER}
    wrong = [f"{k} {list(source.shape(k))} -> llm.{n} {list(buffers[n].shape)}"
             for n, k in copies.items() if tuple(source.shape(k)) != tuple(buffers[n].shape)]
    if wrong:
        raise WeightLoadError(f"cannot load {source.path} into this model: buffer shape mismatch: {', '.join(wrong)}")
    report = apply(model, source, plan)
    with torch.no_grad():
        for name, key in copies.items():
            buffers[name].copy_(source.get(key))
    return report


def load_hf_causal_lm(model: nn.Module, path: str):
    """An HF causal LM (directory, sharded or not, or one weight file) into `model.llm` -> LoadReport."""
    with open_weights(path) as source:
        plan = plan_hf_causal_lm(source, model)
        report, _ = check(model, source, plan)
        if report.ok or not os.path.isdir(path):
            return _load(model, source, plan)  # (refused with the report when not ok)
    # The keys need transformers' tensor conversions: let it read the directory, refusing whatever it
    # could not place (it would leave such weights at random init with a warning).
    dtype = embedding_dtype(model.llm)
    read, info = AutoModelForCausalLM.from_pretrained(path, config=model.llm.config, dtype=dtype,
                                                      output_loading_info=True)
    if info["missing_keys"] or info["unexpected_keys"] or info["mismatched_keys"]:
        raise WeightLoadError.from_report(report)
    source = TensorSource(f"{path} (read by transformers' from_pretrained: its tensor conversions applied)")
    source.add_state_dict(read.state_dict(), path)
    return _load(model, source, plan_hf_causal_lm(source, model))
