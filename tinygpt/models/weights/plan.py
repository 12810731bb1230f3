"""The format-independent half of loading: a plan (our name <- file keys + conversion), checked in
full on the meta device, then copied into the model in place.

Each format module only *maps keys*; the checks live here so every format gets the same ones:
  * a shape mismatch is an error (found by running each conversion on meta tensors first), and so
    is a value of another kind than its parameter (integers stored for a float weight);
  * a file key the model has no place for is an error, unless the format lists it as ignored;
  * base-weight loaders (ViT, Q-Former, Phi) must provide every parameter they are responsible for;
  * checkpoints may leave whole groups out ("kept at initialisation": a stage-1 checkpoint has no
    LoRA), but a group the file touches must be complete in its trainable keys;
and nothing is copied until all checks pass, so an error leaves the model as it was.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
from torch import nn

from .. import components
from .files import TensorSource
from .report import LoadReport, WeightLoadError

@dataclass
class Target:
    """One model parameter and the file keys it is computed from (`convert(*tensors)`)."""

    sources: tuple[str, ...]
    convert: Optional[Callable[..., torch.Tensor]] = None  # None: the single source as is


@dataclass
class Plan:
    format: str
    targets: dict[str, Target] = field(default_factory=dict)  # our (logical) name -> target
    ignored: dict[str, str] = field(default_factory=dict)  # file key -> reason
    unexpected: list[str] = field(default_factory=list)  # file keys nothing maps
    incomplete: list[str] = field(default_factory=list)  # our names whose sources are only partly there
    initialise: dict[str, float] = field(default_factory=dict)  # our name -> fill value
    # Names the file must provide (base loaders); None: the per-group rule for checkpoints.
    required: Optional[set[str]] = None

    def add(self, name: str, *sources: str, convert=None) -> None:
        self.targets[name] = Target(tuple(sources), convert)


# ----------------------------------------------------------------------------- names
def resolve(name: str, params: dict[str, nn.Parameter]) -> Optional[str]:
    """Our logical name -> the parameter's actual name.

    peft's in-place LoRA moves a wrapped Linear's weights under `.base_layer.`; formats describe
    the plain Linear, and our own checkpoints may come from a model with or without LoRA.
    """
    if name in params:
        return name
    head, _, leaf = name.rpartition(".")
    wrapped = f"{head}.base_layer.{leaf}"
    if wrapped in params:
        return wrapped
    unwrapped = name.replace(".base_layer.", ".")
    if unwrapped in params:
        return unwrapped
    # peft's wrappers of MoE expert tensors nest (`experts.base_layer.base_layer.down_proj`).
    return next((n for n in params if ".base_layer.base_layer." in n and n.replace(".base_layer", "") == unwrapped), None)


# ----------------------------------------------------------------------------- checking
def _meta(source: TensorSource, key: str) -> torch.Tensor:
    dtype = source.dtype(key)
    return torch.empty(source.shape(key), dtype=dtype if isinstance(dtype, torch.dtype) else torch.uint8,
                       device="meta")


def _kind(dtype) -> str:
    """What a value is, whatever its precision: a float32 parameter takes fp16 / bf16 values (a cast),
    never integers, booleans or complex numbers."""
    if not isinstance(dtype, torch.dtype):
        return f"unsupported ({dtype})"
    return "complex" if dtype.is_complex else "float" if dtype.is_floating_point else \
        "bool" if dtype == torch.bool else "integer"


def _compute(target: Target, tensors: list[torch.Tensor]) -> torch.Tensor:
    return target.convert(*tensors) if target.convert is not None else tensors[0]


def loadable(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every tensor a file can fill, by name: the parameters, and the float weights that a module
    holds in another form (an int8 Linear's, models/quantize.py: a meta tensor naming shape and dtype,
    whose value goes to the module's `load_float`)."""
    out = dict(model.named_parameters())
    for prefix, module in model.named_modules():
        if hasattr(module, "float_weights"):
            out.update({f"{prefix}.{name}" if prefix else name: spec for name, spec in module.float_weights().items()})
    return out


def check(model: nn.Module, source: TensorSource, plan: Plan) -> tuple[LoadReport, dict[str, Target]]:
    """Everything but the copy: returns the report and {actual param name: target}."""
    params = loadable(model)
    report = LoadReport(source=source.path, format=plan.format, ignored=dict(plan.ignored),
                        unexpected=list(plan.unexpected), missing=list(plan.incomplete))
    resolved: dict[str, Target] = {}
    for name, target in plan.targets.items():
        actual = resolve(name, params)
        if actual is None:
            report.unexpected += [f"{k} (-> {name})" for k in target.sources]
            continue
        if actual in resolved:  # e.g. both `x.weight` and `x.base_layer.weight`: which one is right?
            report.unexpected += [f"{k} (a second value for {actual})" for k in target.sources]
            continue
        resolved[actual] = target
        stored = [source.dtype(k) for k in target.sources]
        param = params[actual]
        if any(_kind(d) != _kind(param.dtype) for d in stored):
            given = ", ".join(f"{k} {str(d).replace('torch.', '')}" for k, d in zip(target.sources, stored))
            report.dtype_errors.append(f"{actual}: file {given}, model {str(param.dtype).replace('torch.', '')}")
            continue
        try:
            shape = tuple(_compute(target, [_meta(source, k) for k in target.sources]).shape)
        except RuntimeError as exc:  # a conversion that cannot even run on these shapes
            shape = f"unconvertible ({str(exc).splitlines()[0]})"
        want = tuple(param.shape)
        if shape != want:
            given = ", ".join(f"{k} {list(source.shape(k))}" for k in target.sources)
            report.shape_errors.append(f"{actual}: file {given} -> {shape if isinstance(shape, str) else list(shape)}, "
                                       f"model {list(want)}")

    # Every key of the file is used, ignored or reported: a mapper that forgot one is a bug we
    # surface as "unexpected" rather than drop silently.
    placed = {k for t in plan.targets.values() for k in t.sources} | set(plan.ignored) | set(plan.unexpected)
    report.unexpected += sorted(k for k in source.keys() if k not in placed)

    initialise = {}
    for name, value in plan.initialise.items():
        actual = resolve(name, params)
        if actual is not None and actual not in resolved:
            initialise[actual] = value
    report.initialised = sorted(initialise)
    report.loaded = sorted(resolved)
    report.consumed = sorted({k for t in resolved.values() for k in t.sources})

    if plan.required is not None:
        required = {resolve(n, params) or n for n in plan.required}
        report.missing += sorted(required - set(resolved) - set(initialise))
    else:
        # Groups come from the model's component table (models/components.py).
        group_of = {n: components.group_of(model, n) for n in params}
        touched = {group_of[n] for n in resolved}
        for group in components.groups(model):
            trainable = [n for n, p in params.items() if p.requires_grad and group_of[n] == group]
            if group in touched:
                report.missing += [n for n in trainable if n not in resolved]
            elif trainable:
                report.kept.append(group)
    return report, {**resolved, **{n: value for n, value in initialise.items()}}


@torch.no_grad()
def apply(model: nn.Module, source: TensorSource, plan: Plan) -> LoadReport:
    """Check the whole plan, then copy tensor by tensor into the existing parameters (their own
    dtype and device).  Raises WeightLoadError before touching the model if anything is off."""
    report, work = check(model, source, plan)
    if not report.ok:
        raise WeightLoadError.from_report(report)
    params = loadable(model)
    for name, target in work.items():
        value = _compute(target, [source.get(k) for k in target.sources]) if isinstance(target, Target) else None
        if params[name].is_meta:  # held in another form: the module converts the value (int8 weights)
            owner, _, attr = name.rpartition(".")
            model.get_submodule(owner).load_float(attr, value if value is not None
                                                  else torch.full(params[name].shape, target))
        elif value is not None:
            params[name].copy_(value)
        else:
            params[name].fill_(target)
    return report


def load_with(model: nn.Module, path: str, make_plan: Callable) -> LoadReport:
    """Open `path`, map its keys with `make_plan(source, model)`, check and copy."""
    from .files import open_weights

    with open_weights(path) as source:
        return apply(model, source, make_plan(source, model))
