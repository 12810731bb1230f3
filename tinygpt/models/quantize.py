"""Int8 weights for inference: `model.{llm,vision}.quantize: int8` (CPU) and `model.llm.load_in_8bit`.

`quantize: int8`: the LLM's input embeddings are an `Int8Embedding` (one scale per token), and every
Linear of the LLM, `lm_head` included (a head tied to the embeddings keeps both float), and with
`model.vision.quantize` of the vision tower's blocks and of the Q-Former, is an `Int8Linear`: int8
weights with one scale per output channel (the bias inside the packed parameters), run by torch's
`quantized::linear_dynamic` (fbgemm): each call's input quantized to 8 bits on the fly (one scale
per call; the full 8 bits on VNNI CPUs, torch's 7-bit `reduce_range` elsewhere), int8 x int8
products summed in int32.  On VNNI CPUs the image side's layers, which see hundreds of rows a call,
are `Int8LinearManyRows`: the same numbers from oneDNN's int8 matmul, with the MLPs' GELU fused.
Chosen by `python -m benchmarks.quant_kernels` on a 2-core EPYC (docs/quantization.md): it reads
half the bytes of bf16 weights when decoding one token, and at a 448 px image's 1025 ViT tokens it
runs 8-bit integer products; weight-only int8 (`aten._weight_int8pack_mm`), torchao's eager configs, bitsandbytes and
int4 measured slower or less exact there.  CPU only, inference only.  The build never holds the
float model whole: `linears_on_meta` creates the Linears without memory and `materialize` makes
them real one at a time (the targets straight into int8); weight files load into the int8 layers
through `Int8Linear.load_float` and LoRA merges into them (lora.merge_lora).  The packed weights
live in the process (a checkpoint or export keeps the float weights; `quantize: int8` in the config
quantizes them again at load).

`load_in_8bit` (`quantize_llm_8bit`, TinyGPT-V's `low_resource` mode): Phi-2's Linear layers become
bitsandbytes `Linear8bitLt` (LLM.int8(): int8 weights with a per-row scale, outlier activation
columns above `threshold` computed in 16 bit).  LoRA is merged into the
base weights first, because an int8 base cannot hold a separate adapter's update exactly and the
merged layer is cheaper to run.  The result is inference-only: the LLM is frozen afterwards.
`lm_head` stays in full precision (quantizing the vocabulary projection costs most accuracy for
little memory), as do the norms, the embeddings and the vision side.
"""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import re
import sys
import logging
import warnings
from typing import Callable

import torch
from torch import nn

from ..common.errors import UserError
from .components import tower_attributes
from .lora import merge_lora
from .weights.hf_causal_lm import ties_head

log = logging.getLogger(__name__)

# Device types bitsandbytes' 8-bit matmul has kernels for (CPU only in recent releases; the test
# suite checks CPU with the installed one).  Ascend NPUs have none: keep the LLM in bf16/fp16 there.
SUPPORTED_DEVICE_TYPES = ("cpu", "cuda", "xpu")
OUTLIER_THRESHOLD = 6.0  # LLM.int8()'s default, as transformers' load_in_8bit uses


INT8 = "int8"
QUANTIZE_CHOICES = ("none", INT8)  # model.llm.quantize, model.vision.quantize


class QuantizationError(UserError):
    """8-bit loading was asked for where it cannot work; the message says what to change."""


# 8-bit activations at full range where the CPU multiplies u8 x s8 with int32 sums (VNNI: vpdpbusd);
# without VNNI fbgemm's pairwise int16 sums can saturate, so torch's 7-bit default (reduce_range) stays.
_CAPS = torch.cpu.get_capabilities() if hasattr(torch.cpu, "get_capabilities") else {}
FULL_RANGE_ACTIVATIONS = bool(_CAPS.get("avx512_vnni") or _CAPS.get("avx_vnni"))
KERNEL = "torch dynamic quantized Linear (quantized::linear_dynamic)"
# oneDNN's int8 matmul for the image side's many rows (Int8LinearManyRows): where torch has it and VNNI.
ONEDNN_INT8 = (FULL_RANGE_ACTIVATIONS and torch.backends.mkldnn.is_available()
               and hasattr(torch.ops.onednn, "qlinear_pointwise"))
MANY_ROWS_KERNEL = "oneDNN int8 matmul (onednn::qlinear_pointwise)"
ROWS_HINT = 1024  # the rows oneDNN's weight layout is chosen for: a 448 px image's ViT tokens (1025)
ROWS_PER_BLOCK = 256  # output rows quantized at a time (2560 wide: 2.6 MB of fp32 temporaries)


def describe_kernel() -> str:
    """What `quantize: int8` runs here, for the doctor and the build's log."""
    bits = "8-bit (VNNI)" if FULL_RANGE_ACTIVATIONS else "7-bit (no VNNI: torch's reduce_range)"
    image_side = f"; the image side: {kernel_of('vision')} into fc1" if ONEDNN_INT8 else ""
    return (f"{KERNEL}, engine {torch.backends.quantized.engine}: int8 weights per output channel, "
            f"{bits} activations per call{image_side}")


def quantize_rows(rows_of: Callable[[slice], torch.Tensor], values: torch.Tensor, scales: torch.Tensor) -> None:
    """Symmetric int8 with one scale per row, `ROWS_PER_BLOCK` rows at a time: `rows_of(rows)` gives a
    block of the fp32 matrix, written into `values` (int8 [n, m]) and `scales` ([n]).  Zero stays
    exactly zero; a block's temporaries are all the float the caller has to hold."""
    n = values.shape[0]
    for start in range(0, n, ROWS_PER_BLOCK):
        rows = slice(start, min(n, start + ROWS_PER_BLOCK))
        w = rows_of(rows)
        low, high = torch.aminmax(w, dim=1)
        scale = torch.maximum(-low, high).clamp(min=1e-12) / 127
        values[rows] = torch.round(w / scale[:, None]).clamp_(-127, 127)
        scales[rows] = scale


class Int8Linear(nn.Module):
    """A Linear with int8 weights: torch's packed int8 weight (one scale per output channel) and
    `quantized::linear_dynamic` (each call's input quantized to 8 bits with one scale, int8 x int8
    products summed in int32 by fbgemm), behind the input's own dtype so that it drops into a bf16
    model.  x [..., in_features] -> [..., out_features].

    The float weight exists only while a value is quantized: `float_weights()` names it (a meta
    tensor: shape and dtype, no memory) so that the weight loaders (models/weights/plan.py) check a
    file against it and hand the value to `load_float`.  The bias (fp32) goes into the packed
    parameters too: the kernel adds it in its output loop (a separate add of a [1025, 6144] output was
    a fifth of a 448 px encode).  Subclasses store the int8 values for another kernel (`_store`,
    `_stored`, `_bias_loaded`)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight_spec = torch.empty(out_features, in_features, dtype=dtype, device="meta")
        self.bias_spec = torch.empty(out_features, dtype=dtype, device="meta") if bias else None
        self.register_buffer("bias_fp32", torch.zeros(out_features) if bias else None, persistent=False)
        self._init_storage()

    def _init_storage(self) -> None:
        with warnings.catch_warnings():  # torch.ao's deprecation notices name the API, not a fault here
            warnings.simplefilter("ignore")
            self.packed = torch.ao.nn.quantized.modules.linear.LinearPackedParams(dtype=torch.qint8)

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> "Int8Linear":
        q = cls(linear.in_features, linear.out_features, linear.bias is not None, linear.weight.dtype)
        q.load_float("weight", linear.weight)
        if linear.bias is not None:
            q.load_float("bias", linear.bias)
        return q

    def float_weights(self) -> dict[str, torch.Tensor]:
        """{attribute: meta tensor} of the float values this module takes through `load_float`."""
        return {"weight": self.weight_spec, **({"bias": self.bias_spec} if self.bias_spec is not None else {})}

    @torch.no_grad()
    def load_float(self, name: str, value: torch.Tensor) -> None:
        """weight: quantize `value` [out, in] (any float dtype) into the int8 weight; bias: the fp32
        bias [out] the kernel adds."""
        if name == "bias":
            self.bias_fp32.copy_(value)
            self._bias_loaded()
            return
        assert name == "weight", name
        self._pack(lambda rows: value[rows].detach().to("cpu", torch.float32))

    @torch.no_grad()
    def add_float(self, update_rows: Callable[[slice], torch.Tensor]) -> None:
        """weight += update (LoRA's merge, lora.py), where `update_rows(rows)` gives the update's block of
        output rows [rows, in]: the sum of the dequantized weight and the update, quantized again, a
        block at a time (a whole fp32 update of Phi-2's qkv is 79 MB: it was most of a full-size int8
        build's transient peak)."""
        values, scales = self._stored()
        self._pack(lambda rows: values[rows].float() * scales[rows, None] + update_rows(rows).float())

    def _pack(self, rows_of: Callable[[slice], torch.Tensor]) -> None:
        """Quantize the fp32 weight that `rows_of(rows)` gives a block of output rows at a time (the
        scales are per row, so blocks quantize exactly as the whole; the temporaries are one block's,
        and a full-size build's peak is the int8 weights, not one layer's fp32 copy)."""
        n = self.out_features
        values = torch.empty(n, self.in_features, dtype=torch.int8)
        scales = torch.empty(n, dtype=torch.float64)
        quantize_rows(rows_of, values, scales)
        self._store(values, scales)
        del values
        return_freed_pages()

    def _store(self, values: torch.Tensor, scales: torch.Tensor) -> None:
        """Keep int8 `values` [out, in] with their per-row `scales` [out] in the kernel's form."""
        q = torch._make_per_channel_quantized_tensor(values, scales, torch.zeros(len(scales), dtype=torch.long), 0)
        self.packed.set_weight_bias(q, self.bias_fp32)

    def _stored(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(int8 values [out, in], fp32 scales [out]): unpacked copies."""
        current = self.packed._weight_bias()[0]
        return current.int_repr(), current.q_per_channel_scales().float()

    def _bias_loaded(self) -> None:
        self.packed.set_weight_bias(self.packed._weight_bias()[0], self.bias_fp32)

    def int8_weight(self) -> torch.Tensor:
        """The int8 values [out, in] (an unpacked copy)."""
        return self._stored()[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.ops.quantized.linear_dynamic(x.float(), self.packed._packed_params,
                                               reduce_range=not FULL_RANGE_ACTIVATIONS)
        return y.to(x.dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 per output channel"


class Int8LinearManyRows(Int8Linear):
    """An Int8Linear for inputs of many rows (the image side: a 448 px image is 1025 ViT tokens), run
    by oneDNN's int8 matmul (`onednn::qlinear_pointwise`, what torch's x86 Inductor quantization
    calls): the input quantized to 8 bits per call by `quantize_per_tensor_dynamic`, the weights in
    oneDNN's blocked layout for `ROWS_HINT` rows.  The same quantization of weights and input as
    Int8Linear, so the same numbers up to the order of the sums.  Why: at 1025 rows its products ran
    at 820-870 GOP/s against fbgemm's 710-730 on a 2-core EPYC (VNNI), a ViT-g block's four Linears in
    68 ms against 81 (docs/quantization.md); at one row fbgemm is 1.5x faster, so the LLM keeps
    Int8Linear.  Used only where `ONEDNN_INT8` (with VNNI: without it oneDNN's u8 x s8 products can
    saturate, as fbgemm's do)."""

    def _init_storage(self) -> None:
        # Plain attributes, not buffers: a module-wide .to(dtype) must neither cast what the kernel
        # takes in fp32 at each call (scales, bias) nor touch the opaque oneDNN weight.
        self.bias_fp32 = self._buffers.pop("bias_fp32")
        self.packed_weight = torch.empty(0, dtype=torch.int8)
        self.scales = torch.zeros(self.out_features)
        self.zero_points = torch.zeros(self.out_features, dtype=torch.long)
        self.activation = NO_ACTIVATION  # oneDNN post-op (name, algorithm): fuse_activations sets GELU

    def _store(self, values: torch.Tensor, scales: torch.Tensor) -> None:
        self.scales = scales.float()
        self.packed_weight = torch.ops.onednn.qlinear_prepack(values, [ROWS_HINT, self.in_features])
        with warnings.catch_warnings():
            # torch warns once per process that quantized tensors (which forward's input quantization
            # makes, as fbgemm's packed weights do) are deprecated: taken here, not in a user's chat.
            warnings.simplefilter("ignore")
            torch.quantize_per_tensor_dynamic(torch.zeros(1), torch.quint8, False)

    def _stored(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.packed_weight.to_dense().t().contiguous(), self.scales.clone()  # oneDNN holds [in, out]

    def __getstate__(self) -> dict:
        # deepcopy and pickle: oneDNN's opaque layout has no storage to copy; the plain int8 values do
        state = dict(self.__dict__)
        state["packed_weight"] = self._stored()[0]
        return state

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        self.packed_weight = torch.ops.onednn.qlinear_prepack(self.packed_weight, [ROWS_HINT, self.in_features])

    def _bias_loaded(self) -> None:
        pass  # the kernel takes bias_fp32 at each call

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = torch.quantize_per_tensor_dynamic(x.float(), torch.quint8, False)
        # the quantized tensor's bytes seen as uint8, which the kernel takes (int_repr() would copy:
        # 0.12 s of a 448 px encode)
        values = torch.empty(0, dtype=torch.uint8).set_(q.untyped_storage(), q.storage_offset(), q.shape, q.stride())
        y = torch.ops.onednn.qlinear_pointwise(values, q.q_scale(), q.q_zero_point(), self.packed_weight,
                                               self.scales, self.zero_points, self.bias_fp32, 1.0, 0,
                                               torch.float32, self.activation[0], [], self.activation[1])
        return y.to(x.dtype)

    def extra_repr(self) -> str:
        name, algorithm = self.activation
        fused = f", then {name} ({'erf' if algorithm == 'none' else algorithm})" if name != "none" else ""
        return super().extra_repr() + ", oneDNN for many rows" + fused


NO_ACTIVATION = ("none", "")


def _gelu_algorithm(activation: nn.Module) -> str | None:
    """oneDNN's GELU post-op algorithm computing `activation` ("none": erf, "tanh": the tanh
    approximation), or None when it is another function."""
    from transformers.activations import GELUActivation, GELUTanh, PytorchGELUTanh

    if type(activation) is GELUActivation:
        return "none"
    if type(activation) in (GELUTanh, PytorchGELUTanh):
        return "tanh"
    if type(activation) is nn.GELU:
        return activation.approximate
    return None


def fuse_activations(model: nn.Module) -> list[tuple[nn.Module, str, nn.Module]]:
    """GELU into the int8 fc1 before it, in the vision tower's MLPs whose `fc1` is an
    Int8LinearManyRows and whose activation oneDNN computes in that matmul's output loop (the
    transformers MLPs that run fc1 -> activation_fn -> fc2: BLIP-2's EVA ViT-g, CLIP, SigLIP): the
    [1025, 6144] activation of a 448 px image is then never written and read again (2.5% of a ViT-g
    encode here).  Returns (MLP, attribute, the activation replaced by an identity) of each."""
    from transformers.models.blip_2.modeling_blip_2 import Blip2MLP
    from transformers.models.clip.modeling_clip import CLIPMLP
    from transformers.models.siglip.modeling_siglip import SiglipMLP

    fused = []
    mlps = [m for tower in _towers(model, "vision") for m in tower.modules()]  # listed before any is changed
    for mlp in mlps:
        if type(mlp) in (Blip2MLP, CLIPMLP, SiglipMLP) and isinstance(mlp.fc1, Int8LinearManyRows):
            algorithm = _gelu_algorithm(mlp.activation_fn)
            if algorithm is not None:
                fused.append((mlp, "activation_fn", mlp.activation_fn))
                mlp.fc1.activation = ("gelu", algorithm)
                mlp.activation_fn = nn.Identity()
    return fused


class Int8Embedding(nn.Module):
    """An input embedding table in int8, one scale per row (token): a lookup dequantizes just the rows
    it reads, to the table's float dtype (`dtype`).  ids [...] -> [..., embedding_dim].  The weight
    loaders fill it through `float_weights` / `load_float`, as an Int8Linear.  At full size it is
    Phi-2's 51200 x 2560 table: 0.13 GB instead of 0.26 GB of bf16, and a decode step reads one row."""

    def __init__(self, num_embeddings: int, embedding_dim: int, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.weight_spec = torch.empty(num_embeddings, embedding_dim, dtype=dtype, device="meta")
        self.register_buffer("values", torch.zeros(num_embeddings, embedding_dim, dtype=torch.int8), persistent=False)
        self.register_buffer("scales", torch.zeros(num_embeddings, dtype=torch.float32), persistent=False)

    @property
    def dtype(self) -> torch.dtype:
        """What a lookup returns: the float table's dtype."""
        return self.weight_spec.dtype

    @classmethod
    def from_embedding(cls, embedding: nn.Embedding) -> "Int8Embedding":
        q = cls(embedding.num_embeddings, embedding.embedding_dim, embedding.weight.dtype)
        q.load_float("weight", embedding.weight)
        return q

    def float_weights(self) -> dict[str, torch.Tensor]:
        return {"weight": self.weight_spec}

    @torch.no_grad()
    def load_float(self, name: str, value: torch.Tensor) -> None:
        assert name == "weight", name
        quantize_rows(lambda rows: value[rows].detach().to("cpu", torch.float32), self.values, self.scales)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return (self.values[ids].float() * self.scales[ids, None]).to(self.dtype)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, int8 per row"


def _glibc_trim():
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (macOS, musl): its allocator keeps its own policy
        return None


_MALLOC_TRIM = _glibc_trim() if sys.platform.startswith("linux") else None


def return_freed_pages() -> None:
    """Give the pages of freed temporaries back to the OS (glibc's malloc_trim).  Why: quantizing a
    layer frees float temporaries of about the size of the packed int8 weights kept beside them, and
    glibc keeps such holes in its heap resident; over the 284 layers of a full-size build that was
    0.4 GB of peak RSS, and what loading and merging left at the end of the build another 0.1 GB
    (docs/quantization.md)."""
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


def _many_rows(part: str) -> bool:
    """Whether `part` ("llm", "vision") gets Int8LinearManyRows here: the image side's layers see
    hundreds of rows a call, where oneDNN's kernel (if it runs here) is the faster one."""
    return part == "vision" and ONEDNN_INT8


def kernel_of(part: str) -> str:
    """The kernel `quantize: int8` runs `part` ("llm", "vision") with here, for the build's log."""
    return MANY_ROWS_KERNEL + ", GELU fused" if _many_rows(part) else KERNEL


def int8_linear(linear: nn.Linear, part: str = "llm") -> Int8Linear:
    """`linear`'s weights (any float dtype) as an Int8Linear on the CPU, with the kernel for `part`
    ("llm", "vision"; `_many_rows`)."""
    return (Int8LinearManyRows if _many_rows(part) else Int8Linear).from_linear(linear)


def check_int8(cfg, device: torch.device | str, training: bool) -> None:
    """Raise QuantizationError when `model.{llm,vision}.quantize: int8` cannot be honoured: a training
    build, bitsandbytes' load_in_8bit as well, or a device other than the CPU.  (`model.*.train` may
    be true: an inference build of a config that trained the part freezes it, then quantizes it.)"""
    asked = [f"model.{part}.quantize" for part in ("llm", "vision") if getattr(cfg, part).quantize == INT8]
    if not asked:
        return
    device_type = device.type if isinstance(device, torch.device) else str(device).split(":")[0]
    if device_type != "cpu":
        raise QuantizationError(f"{asked[0]}: int8 runs torch's CPU kernels (fbgemm/oneDNN) and the device is "
                                f"'{device_type}'; set it to none there (accelerators compute bf16/fp16 natively)")
    if training:
        raise QuantizationError(f"{asked[0]}: int8 is for inference (chat, API, evaluation, export); "
                                "training builds keep float weights: set it to none in the training YAML")
    if cfg.llm.quantize == INT8 and cfg.llm.load_in_8bit:
        raise QuantizationError("model.llm.quantize: int8 and model.llm.load_in_8bit (bitsandbytes) both set; "
                                "choose one")


def int8_targets(model: nn.Module, parts: tuple[str, ...] = ("llm", "vision")) -> list[tuple[nn.Module, str, nn.Linear]]:
    """(parent module, attribute, Linear) of every layer `quantize: int8` swaps in `parts`: the LLM's
    Linears, lm_head included unless it shares the input embedding's weight; the vision side's: the
    tower's (its blocks; the patch embedding is a convolution) and the Q-Former's."""
    out = []
    for part in parts:
        for tower in _towers(model, part):
            # A tied head's weight is the embedding table, which stays float: the head stays with it.
            tied = tower.get_output_embeddings() if part == "llm" and ties_head(tower) else None
            for name, m in tower.named_modules():
                # not LoRA's adapter matrices (merged into their base), nor nn.MultiheadAttention's
                # out_proj (torch's marker class: its parent reads `.weight` itself)
                if (isinstance(m, nn.Linear) and m is not tied and not re.search(r"\.lora_[AB]\.", name)
                        and not isinstance(m, nn.modules.linear.NonDynamicallyQuantizableLinear)):
                    parent, _, child = name.rpartition(".")
                    out.append((tower.get_submodule(parent), child, m))
    return out


def int8_embedding_target(model: nn.Module) -> tuple[nn.Module, str, nn.Embedding] | None:
    """(parent module, attribute, table) of the LLM's input embeddings, which `model.llm.quantize:
    int8` stores as an Int8Embedding; None when the LM head is tied to them (it reads the whole
    table as a float weight) or when the table is not a plain nn.Embedding."""
    llm = model.llm
    table = llm.get_input_embeddings()
    if type(table) is not nn.Embedding or ties_head(llm):
        return None
    name = next(name for name, m in llm.named_modules() if m is table)
    parent, _, child = name.rpartition(".")
    return llm.get_submodule(parent), child, table


def _quantize_embedding(model: nn.Module) -> None:
    target = int8_embedding_target(model)
    if target is not None:
        parent, child, table = target
        setattr(parent, child, Int8Embedding.from_embedding(table))
        log.info("llm: input embeddings in int8, one scale per token")


@contextlib.contextmanager
def linears_on_meta():
    """Every nn.Linear created inside gets its parameters on the meta device (no memory): a
    `quantize: int8` build creates the architecture this way and `materialize` then makes each layer
    real one at a time, so the float model never exists whole.  (Only Linears: embeddings, norms and
    buffers such as rotary tables are created as usual, and a tied LM head still takes the embedding.)"""
    original = nn.Linear.__init__

    def on_meta(self, in_features, out_features, bias=True, device=None, dtype=None):
        original(self, in_features, out_features, bias, device="meta", dtype=dtype)

    nn.Linear.__init__ = on_meta
    try:
        yield
    finally:
        nn.Linear.__init__ = original


def _initialiser(model: nn.Module) -> dict[int, Callable[[nn.Linear], None]]:
    """id(Linear) -> how its construction initialises it: the innermost Hugging Face model's
    `_init_weights` (what `post_init` ran), LoRA's own reset for adapter matrices, else the
    Linear's `reset_parameters`."""
    from transformers import PreTrainedModel
    from peft.tuners.lora import LoraLayer

    out = {}

    def walk(module: nn.Module, init) -> None:
        if isinstance(module, PreTrainedModel):
            init = module._init_weights
        for child in module.children():
            if isinstance(module, LoraLayer) and isinstance(child, nn.ModuleDict):
                for adapter, linear in child.items():  # lora_A / lora_B: peft's init (B = 0: no change at start)
                    out[id(linear)] = lambda _, layer=module, name=adapter: layer.reset_lora_parameters(name, True)
                continue
            if isinstance(child, nn.Linear):
                out[id(child)] = init or nn.Linear.reset_parameters
            walk(child, init)

    walk(model, None)
    return out


@torch.no_grad()
def materialize(model: nn.Module) -> dict[str, int]:
    """Make every meta Linear (`linears_on_meta`) real, one at a time, initialised as construction
    would have: the targets of the parts whose `quantize` is int8 (`int8_targets`) become Int8Linear
    (a float weight exists for one layer at a time), the others float in their dtype.  Returns the
    layers quantized per part."""
    parts = tuple(part for part in ("llm", "vision") if getattr(model.cfg, part).quantize == INT8)
    init = _initialiser(model)
    targets = {id(linear): (parent, child) for parent, child, linear in int8_targets(model, parts)}
    done = dict.fromkeys(parts, 0)
    part_of = {id(m): part for part in parts for tower in _towers(model, part) for m in tower.modules()}
    if "llm" in parts:  # the float table was made with the model: quantized before any int8 layer exists
        _quantize_embedding(model)
    # By name, not a list of modules: a quantized layer's float weight must be freed before the next.
    # Largest first: a layer's float weight and its packing's temporaries (lm_head: 0.26 GB of bf16 and
    # 0.26 GB of int8 buffers beside the packed 0.13 GB) then exist while the process holds the fewest
    # int8 layers, not on top of all of them (a full-size build's peak: 5.25 GB with lm_head last).
    names = sorted((name for name, m in model.named_modules() if isinstance(m, nn.Linear) and m.weight.is_meta),
                   key=lambda name: -model.get_submodule(name).weight.numel())
    for name in names:
        linear = model.get_submodule(name)
        linear.to_empty(device="cpu")
        init[id(linear)](linear)
        if id(linear) in targets:
            parent, child = targets[id(linear)]
            part = part_of[id(linear)]
            setattr(parent, child, int8_linear(linear, part))
            done[part] += 1
    if "vision" in parts:
        fuse_activations(model)
    for part, n in done.items():
        log.info("%s: %d Linear layers in int8 as they were created (%s)", part, n, kernel_of(part))
    return done


def image_side_to(model: nn.Module, dtype: torch.dtype) -> None:
    """The float tensors of what `model.vision.quantize` covers (the tower components: the ViT,
    ln_vision, the Q-Former, its query tokens) in `dtype`: an int8 image side keeps them in fp32, the
    dtype its kernel takes and returns (build.py's _INT8_AUTO_DTYPE).  The int8 weights are not touched."""
    for attribute in tower_attributes(type(model)):
        part = getattr(model, attribute, None)
        if isinstance(part, nn.Parameter):
            part.data = part.data.to(dtype)
        elif part is not None:
            part.to(dtype)


def _towers(model: nn.Module, part: str) -> tuple[nn.Module, ...]:
    """The modules `model.<part>.quantize` covers.  `vision` is the image's whole way to the visual
    tokens but the projector: the ViT and the Q-Former (BERT-base Linears, 0.2 GB in bf16, run once
    per image on 32 queries), so one key makes the image side int8 (docs/quantization.md)."""
    if part == "llm":
        return (model.llm,)
    return tuple(m for m in (model.visual_encoder, model.qformer) if m is not None)


@torch.no_grad()
def quantize_int8(model: nn.Module) -> dict[str, int]:
    """Swap the Linear layers (`int8_targets`) of the parts whose `quantize` is int8 for Int8Linear,
    one at a time, so only one layer's fp32 copy exists at once.  Call on an inference build (LoRA
    merged).  Returns the layers swapped per part."""
    done = {}
    for part in ("llm", "vision"):
        if getattr(model.cfg, part).quantize != INT8:
            continue
        targets = int8_targets(model, (part,))
        for parent, child, linear in targets:
            setattr(parent, child, int8_linear(linear, part))
        if part == "llm":
            _quantize_embedding(model)
        else:
            fuse_activations(model)
        done[part] = len(targets)
        log.info("%s: %d Linear layers in int8 (%s)", part, len(targets), kernel_of(part))
    return done


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
