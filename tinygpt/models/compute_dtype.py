"""The one home of computing in another dtype than the weights are stored in (inference builds).

Weights stay compact in their storage dtype (`model.{vision,llm}.dtype`; bf16 keeps the full model at
7.8 GB); `common/device.compute_policy` says, per device, from how many input rows (tokens x batch)
a matmul is faster in fp32 with its weights upcast on the fly (`model.compute_dtype`).  `apply`
carries that out per component of the model's `COMPONENTS` table:

* the image path (every component but the LLM and training aids: vision tower, ln_vision, Q-Former,
  query tokens, projector) computes in one dtype per component, chosen at the rows one image gives
  it (the tower's patch tokens, the Q-Former's queries).  In fp32, the layers of each ModuleList
  inside (the transformer blocks; a ViT-g block is 25M parameters, 100 MB in fp32) hold fp32 copies
  of their weights only while they run, written into buffers the blocks take turns with; the rest
  (embeddings, norms, query tokens, projector: 16M parameters at full size) is converted to fp32 once, so the model's own casts to a boundary
  module's weight dtype (`images.to(patch_embedding.weight.dtype)`, transformers' Q-Former input
  cast, `project_queries`) pick fp32 and nothing is rounded to half precision on the way;
* the LLM decides per call in each Linear: an input of at least `upcast_rows` rows (a prefill, an
  answer-loss forward) computes in fp32 with the weight upcast a slice of at most `SLICE_BYTES` at
  a time (bounded memory; the slice is still in the last-level cache when the matmul reads it);
  fewer rows (decoding one token per sequence) compute in the storage dtype.

`apply` returns a handle whose `remove()` restores the model exactly (bf16 -> fp32 -> bf16 is
lossless), so a benchmark compares both ways in one process; `plan` says what `apply` would choose
for a config without building the model (`python -m tinygpt.doctor`).  Inference only: the swapped
weights are not the parameters autograd would update.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

from ..common import device as devices
from ..common.config import ModelConfig
from ..common.registry import registry
from .components import tower_attributes
from .vision import n_patch_tokens

log = logging.getLogger(__name__)

SLICE_BYTES = 16 * 2 ** 20  # fp32 weight bytes upcast at once in an LLM Linear
LLM = "llm"  # the component whose matmuls see a prompt's rows, then one row per sequence


@dataclass(frozen=True)
class Choice:
    """What one component computes in: `compute` is a dtype name, or for the LLM the rule by rows."""

    component: str
    storage: torch.dtype
    rows: int | None  # the rows one image gives an image-path component; None for the LLM
    compute: str
    reason: str

    def describe(self) -> str:
        rows = f", {self.rows} rows/image" if self.rows is not None else ""
        return f"{self.component} ({devices.dtype_name(self.storage)} weights{rows}): {self.compute} -- {self.reason}"


class Applied:
    """The choices `apply` made and how to undo them."""

    def __init__(self, choices: list[Choice], undo: list[Callable[[], None]]):
        self.choices, self._undo = choices, undo

    def remove(self) -> None:
        """Put the model back as it was built (hooks removed, Linear classes and dtypes restored)."""
        while self._undo:
            self._undo.pop()()


def apply(model: nn.Module, device: torch.device | str, requested: str = "auto") -> Applied:
    """Make `model` (an inference build: nothing trains) compute as `device.compute_policy` says for
    each component's storage dtype; returns the choices (logged) and a handle to undo them."""
    choices, undo = [], []
    for component, part, rows in _parts(model):
        policy = devices.compute_policy(device, _storage(part), requested)
        choices.append(_choose(component.attribute, rows, policy))
        log.debug("compute dtype: %s", choices[-1].describe())
        if rows is None:
            if policy.upcast_rows is not None:
                undo += _upcast_wide_linears(part, policy)
        elif policy.dtype(rows) != policy.storage:
            undo += _upcast_by_layer(part, policy.dtype(rows))
    return Applied(choices, undo)


def plan(cfg: ModelConfig, device: torch.device | str) -> list[Choice]:
    """What `apply` chooses for an inference model built from `cfg` on `device`, without building it:
    the vision tower stored in `model.vision.dtype`, the rest in `model.llm.dtype` (build.py's
    inference build), both resolved for the device."""
    from . import tinygpt_v  # noqa: F401  (registers the arch whose component table is read)
    from .build import int8_parts, storage_dtype

    model_class = registry.get("model", cfg.arch)
    vision, rest = storage_dtype(cfg, "vision", device), storage_dtype(cfg, "llm", device)
    # an int8 image side stores the float rest of every tower with the ViT (quantize.image_side_to)
    image_side = set(tower_attributes(model_class)) \
        if "vision" in int8_parts(cfg, torch.device(device), training=False) else {"visual_encoder"}
    choices = []
    for component in model_class.COMPONENTS:
        if component.aid:
            continue
        policy = devices.compute_policy(device, vision if component.attribute in image_side else rest,
                                        cfg.compute_dtype)
        choices.append(_choose(component.attribute, _rows(cfg, component), policy))
    return choices


def _parts(model: nn.Module):
    """(component, its module or parameter, rows per image or None for the LLM), aids left out."""
    for component in type(model).COMPONENTS:
        part = getattr(model, component.attribute, None)
        if part is not None and not component.aid:
            yield component, part, _rows(model.cfg, component)


def _rows(cfg: ModelConfig, component) -> int | None:
    if component.attribute == LLM:
        return None
    if component.group == "vision":
        # An `hf` tower's prefix (CLS, registers) is a handful of rows: the grid decides the policy.
        return n_patch_tokens(cfg.vision.kind, cfg.vision.image_size, cfg.vision.patch_size, cfg.vision.keep_cls,
                              prefix=1 if cfg.vision.kind == "hf" else None)
    return cfg.qformer.num_query_tokens


def _choose(name: str, rows: int | None, policy: devices.ComputePolicy) -> Choice:
    storage = policy.storage
    if rows is not None:
        compute = devices.dtype_name(policy.dtype(rows))
    elif policy.upcast_rows is None:
        compute = devices.dtype_name(storage)
    elif policy.upcast_rows <= 1:
        compute = "fp32"
    else:
        compute = (f"fp32 from {policy.upcast_rows} rows (prefill), "
                   f"{devices.dtype_name(storage)} below (decoding up to {policy.upcast_rows - 1} sequences)")
    return Choice(name, storage, rows, compute, policy.reason)


def _storage(part: nn.Module | torch.Tensor) -> torch.dtype:
    """The dtype holding most of a component's floating-point weights (its norms may be fp32)."""
    tensors = [part] if isinstance(part, torch.Tensor) else list(part.parameters())
    counts: dict[torch.dtype, int] = {}
    for p in tensors:
        if p.is_floating_point():
            counts[p.dtype] = counts.get(p.dtype, 0) + p.numel()
    return max(counts, key=counts.get) if counts else torch.float32


# ----------------------------------------------------------------------------- image path
def _upcast_by_layer(part: nn.Module | torch.Tensor, dtype: torch.dtype) -> list[Callable[[], None]]:
    """Compute `part` in `dtype`: layers of its ModuleLists upcast while they run, the rest converted."""
    undo = []
    layers = _layers(part) if isinstance(part, nn.Module) else []
    streamed = {id(p) for layer in layers for p in layer.parameters()}
    rest = [part] if isinstance(part, torch.Tensor) else [p for p in part.parameters() if id(p) not in streamed]
    for p in rest:
        if p.is_floating_point() and p.dtype != dtype:
            undo.append(lambda p=p, stored=p.dtype: setattr(p, "data", p.data.to(stored)))
            p.data = p.data.to(dtype)
    scratch = _Scratch()  # the layers run one after another: they take turns with one set of buffers
    for layer in layers:
        hooks = _LayerUpcast(dtype, scratch)
        handles = (layer.register_forward_pre_hook(hooks.enter, with_kwargs=True),
                   layer.register_forward_hook(hooks.leave, always_call=True))
        undo.append(lambda handles=handles: [h.remove() for h in handles])
    return undo


def _layers(module: nn.Module) -> list[nn.Module]:
    """The entries of the outermost ModuleLists inside `module` (a transformer's blocks)."""
    layers, todo = [], [module]
    while todo:
        for child in todo.pop().children():
            if isinstance(child, nn.ModuleList):
                layers += list(child)
            else:
                todo.append(child)
    return layers


class _Scratch:
    """Buffers the layers of one component take turns writing their upcast weights into.

    Why: a fresh tensor per weight per forward costs page faults: ViT-g's MLP weights are 35 MB in
    fp32, above glibc's mmap threshold, so every copy maps new pages (~46 ms a block at full size,
    against 9 ms into a reused buffer: ~1.4 s of a 448 px image's encode on a 2-core CPU).  Kept
    between forwards: one layer's worth (~100 MB for a ViT-g block in fp32), more only while
    threads run different layers at once."""

    def __init__(self):
        self.lock = threading.Lock()
        self.free: dict[tuple, list[torch.Tensor]] = {}

    def __getstate__(self) -> dict:  # a copied model starts with no buffers of its own
        return {}

    def __setstate__(self, state: dict) -> None:
        self.__init__()

    def copy(self, p: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """`p` converted to `dtype`, written into a free buffer of its shape (or a new one)."""
        with self.lock:
            free = self.free.get((p.shape, dtype, p.device))
            buffer = free.pop() if free else None
        if buffer is None:
            buffer = torch.empty(p.shape, dtype=dtype, device=p.device)
        return buffer.copy_(p.detach())

    def give_back(self, buffer: torch.Tensor) -> None:
        with self.lock:
            self.free.setdefault((buffer.shape, buffer.dtype, buffer.device), []).append(buffer)


class _LayerUpcast:
    """Forward hooks that give one layer copies of its weights in `dtype` while it runs, and cast its
    floating-point inputs to `dtype`.  The copies live while any thread is inside the layer (a
    count under a lock), and go even when the forward raises (`always_call`).  Without autograd
    recording (inference) they are written into `scratch`'s reused buffers; with it, into fresh
    tensors (autograd may keep a weight for the backward, which a later layer's copy must not
    overwrite)."""

    def __init__(self, dtype: torch.dtype, scratch: _Scratch):
        self.dtype, self.scratch = dtype, scratch
        self.lock = threading.Lock()
        self.inside = 0
        self.stored: list[tuple[nn.Module, str, nn.Parameter]] = []
        self.borrowed = False

    def __getstate__(self) -> dict:  # a copied or pickled model gets its own, idle hooks
        return {"dtype": self.dtype, "scratch": self.scratch}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["dtype"], state["scratch"])

    def enter(self, layer: nn.Module, args: tuple, kwargs: dict):
        with self.lock:
            if self.inside == 0:
                self.borrowed = not torch.is_grad_enabled()
                for owner in layer.modules():
                    for name, p in owner._parameters.items():
                        if p is not None and p.is_floating_point() and p.dtype != self.dtype:
                            self.stored.append((owner, name, p))
                            # A plain tensor in the parameter's slot: the module reads it as its weight,
                            # and the Parameter (and its storage dtype) is untouched.
                            owner._parameters[name] = (self.scratch.copy(p, self.dtype) if self.borrowed
                                                       else p.detach().to(self.dtype))
            self.inside += 1
        return tuple(self._cast(a) for a in args), {k: self._cast(v) for k, v in kwargs.items()}

    def leave(self, layer: nn.Module, args: tuple, output) -> None:
        with self.lock:
            self.inside -= 1
            if self.inside == 0:
                for owner, name, p in self.stored:
                    if self.borrowed:
                        self.scratch.give_back(owner._parameters[name])
                    owner._parameters[name] = p
                self.stored = []

    def _cast(self, value):
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            return value.to(self.dtype)
        return value


# ----------------------------------------------------------------------------- LLM
class WideUpcastLinear(nn.Linear):
    """An nn.Linear (same parameters and state dict) that computes inputs of at least `upcast_rows`
    rows in `upcast_dtype` (`upcast_linear`), handing back the input's dtype; narrower inputs in the
    weight's dtype."""

    upcast_rows: int
    upcast_dtype: torch.dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.numel() >= self.upcast_rows * self.in_features:
            return upcast_linear(x, self.weight, self.bias, self.upcast_dtype).to(x.dtype)
        return super().forward(x)


def upcast_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                  dtype: torch.dtype) -> torch.Tensor:
    """F.linear in `dtype`: x [..., in] -> [..., out], the weight [out, in] converted a slice of
    output features (at most SLICE_BYTES in `dtype`) at a time."""
    x = x.to(dtype)
    step = max(1, SLICE_BYTES // (weight.shape[1] * torch.finfo(dtype).bits // 8))
    parts = [F.linear(x, weight[i:i + step].to(dtype), None if bias is None else bias[i:i + step].to(dtype))
             for i in range(0, weight.shape[0], step)]
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)


def _upcast_wide_linears(llm: nn.Module, policy: devices.ComputePolicy) -> list[Callable[[], None]]:
    """Every plain nn.Linear of `llm` stored in the policy's dtype becomes a WideUpcastLinear (in place:
    quantized or adapter layers, which subclass nn.Linear, are left alone)."""
    undo = []
    for module in llm.modules():
        if type(module) is nn.Linear and module.weight.dtype == policy.storage:
            module.__class__ = WideUpcastLinear
            module.upcast_rows, module.upcast_dtype = policy.upcast_rows, torch.float32
            undo.append(lambda m=module: _plain_linear(m))
    return undo


def _plain_linear(module: WideUpcastLinear) -> None:
    module.__class__ = nn.Linear
    del module.upcast_rows, module.upcast_dtype
