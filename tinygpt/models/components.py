"""The one home of "which part of the model is this parameter, and does it train".

A model class declares its parts once, as a `COMPONENTS` table of `Component`s (tinygpt_v.py);
everything that asks "which group / trains? / frozen tower? / training aid?" reads that table:
  * what trains (`apply_trainable`) and which towers stay in eval mode (`frozen_towers`),
  * the weight loader's groups (a checkpoint may leave a trainable group out, never half of it),
    and the base-file loaders' required names (`names_of`),
  * `python -m tinygpt.inspect`'s rows, the feature cache's tower key, our own checkpoints' key
    prefixes, and what `checkpoint_final` leaves out (training aids).

A component is a top-level attribute of the model (a module or a parameter); its parameter names
start with `<attribute>.` (or are the attribute itself: `query_tokens`).  Inside the LLM two
sub-groups cut across modules: LoRA adapter weights (`lora_` in the name, always trainable) and the
norm weights TinyGPT-V trains in fp32 (`model.llm.train_norms`).
"""
from __future__ import annotations

from dataclasses import dataclass

from functools import reduce

from torch import nn

LORA_GROUP = "llm lora"
NORM_GROUP = "llm norms"


@dataclass(frozen=True)
class Component:
    attribute: str        # the model attribute (module or parameter) and its parameters' name prefix
    group: str            # the weight-loading / report group it belongs to
    trains: str           # the ModelConfig key (dotted) whose value says whether it trains
    tower: bool = False   # a frozen-able encoder tower: eval mode while frozen, part of the cache key
    aid: bool = False     # a training aid: trained and resumed, never in checkpoint_final

    def owns(self, name: str) -> bool:
        return name == self.attribute or name.startswith(self.attribute + ".")

    def trainable(self, cfg) -> bool:
        return bool(reduce(getattr, self.trains.split("."), cfg))


def is_lora(name: str) -> bool:
    return "lora_" in name


def component_of(model: nn.Module, name: str) -> Component:
    for component in type(model).COMPONENTS:
        if component.owns(name):
            return component
    raise KeyError(f"parameter {name!r} belongs to no component of {type(model).__name__}")


def group_of(model: nn.Module, name: str) -> str:
    """The group of a parameter name: a component's group, or LoRA / LLM norms inside the LLM."""
    if is_lora(name):
        return LORA_GROUP
    if name in norm_names(model):
        return NORM_GROUP
    return component_of(model, name).group


def groups(model: nn.Module) -> tuple[str, ...]:
    """Every group a name of this model can fall in, in table order."""
    out = list(dict.fromkeys(c.group for c in type(model).COMPONENTS))
    llm = out.index(component_of(model, "llm").group)
    out[llm:llm] = [NORM_GROUP, LORA_GROUP]
    return tuple(out)


def norm_names(model: nn.Module) -> frozenset[str]:
    """Full parameter names of the LLM's norm weights (what `model.llm.train_norms` trains); computed
    once per model (neither LoRA injection nor merging renames a norm)."""
    if "_norm_names" not in model.__dict__:
        model.__dict__["_norm_names"] = frozenset(f"llm.{n}" for n in model.llm_norm_weight_names())
    return model.__dict__["_norm_names"]


def present(model: nn.Module) -> list[Component]:
    """The table's components this instance has (optional parts such as a training aid may be None)."""
    return [c for c in type(model).COMPONENTS if getattr(model, c.attribute, None) is not None]


def tower_attributes(model_class: type) -> tuple[str, ...]:
    """The attributes of the class's encoder towers: the image's way to the projector (what
    `model.vision.quantize` covers, and where an int8 image side keeps its float tensors)."""
    return tuple(c.attribute for c in model_class.COMPONENTS if c.tower)


def names_of(model: nn.Module, *attributes: str) -> set[str]:
    """Parameter names of the named components (a base weight file's required set)."""
    wanted = [c for c in type(model).COMPONENTS if c.attribute in attributes]
    return {n for n, _ in model.named_parameters() if any(c.owns(n) for c in wanted)}


def prefixes(model_class: type, *, aids: bool = True) -> tuple[str, ...]:
    """Name prefixes of the class's components (`aids=False`: without the training aids)."""
    return tuple(c.attribute for c in model_class.COMPONENTS if aids or not c.aid)


def aid_prefixes(model_class: type) -> tuple[str, ...]:
    return tuple(f"{c.attribute}." for c in model_class.COMPONENTS if c.aid)


def apply_trainable(model: nn.Module) -> None:
    """requires_grad from the config, component by component; LoRA always, LLM norms as configured."""
    for component in present(model):
        getattr(model, component.attribute).requires_grad_(component.trainable(model.cfg))
    train_norms = model.cfg.llm.train_norms
    norms = norm_names(model)
    for name, p in model.named_parameters():
        if is_lora(name) or (train_norms and name in norms):
            p.requires_grad_(True)


def frozen_towers(model: nn.Module) -> list[nn.Module]:
    """The tower modules that do not train (kept in eval mode; what the feature cache stands in for)."""
    return [getattr(model, c.attribute) for c in present(model)
            if c.tower and not c.trainable(model.cfg) and isinstance(getattr(model, c.attribute), nn.Module)]


def tower_tensors(model: nn.Module):
    """(name, tensor) of every tower component, parameters and buffers, sorted by name."""
    towers = [c for c in present(model) if c.tower]
    state = model.state_dict()
    return sorted((n, t) for n, t in state.items() if any(c.owns(n) for c in towers))
