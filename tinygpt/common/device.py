"""The one module that knows which hardware we run on: Ascend NPU, NVIDIA GPU or CPU.

Everything else in tinygpt asks this module for a `torch.device`, an autocast dtype, a distributed
backend name, or the accelerator's generic torch module, and never names `cuda`/`npu` itself (a test
greps for it).  What is built on top lives in the module that owns it: RNG seeding and state in
`common/rng.py`, DataLoader workers and pinned memory in `datasets/loader.py`, memory accounting
in `benchmarks/memory.py`.

Layers, bottom up:
  * probes (`_load_torch_npu`, `_npu_available`, `_npu_device_count`, `_npu_name`, `_cuda_available`,
    `_cuda_device_count`, `_cuda_capability`, `_cuda_name`) and one side effect (`_activate`).  They
    are the only functions that touch vendor APIs, so tests fake hardware by monkeypatching them.
  * policy tables (backend per device type, which chips do bf16) -- plain data, easy to review.
  * the public API, written against torch's generic accelerator interfaces
    (`torch.get_device_module`, `torch.autocast`, `torch.amp.GradScaler`).
  * the compute-dtype policy (`compute_policy`): on a CPU, whether a matmul whose weights are stored
    in half precision is faster computed in fp32 with the weights upcast on the fly, from a matmul
    probe run once per process (`_matmul_probe`, the seam tests fake); models/compute_dtype.py
    applies it to a model.

Nothing is probed at import time: importing torch_npu initialises the Ascend runtime and can fail
loudly when CANN is not set up, so it happens only when someone asks about devices.
"""
from __future__ import annotations

import contextlib
import importlib
import logging
import os
import platform
import re
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, ContextManager

import torch

from .errors import UserError

log = logging.getLogger(__name__)

DEVICE_TYPES = ("cpu", "cuda", "npu")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
COMPUTE_DTYPES = ("auto", "storage", "fp32")  # model.compute_dtype
_CANN_HINT = "source /usr/local/Ascend/ascend-toolkit/set_env.sh"

# Collective backend per device type.  hccl ships with torch_npu; nccl with CUDA builds of torch.
_BACKENDS = {"npu": "hccl", "cuda": "nccl", "cpu": "gloo"}

# Ascend chips without bf16 arithmetic: the first-generation 910 family (names without a model
# digit after "910", e.g. Ascend910A, Ascend910ProB) and every 310 (inference) chip.  910B1-4,
# 910_93xx (A3) and newer do bf16.  Kept as a deny-list so a future chip name defaults to bf16.
_NPU_NO_BF16 = re.compile(r"^Ascend(310.*|910(PremiumA|ProA|ProB|A|B)?)$")


# Environment variables that change what is visible or loaded; describe() reports the ones set.
_ENV_VARS = ("CUDA_VISIBLE_DEVICES", "ASCEND_RT_VISIBLE_DEVICES", "ASCEND_TOOLKIT_HOME",
             "TORCH_DEVICE_BACKEND_AUTOLOAD", "LOCAL_RANK", "WORLD_SIZE")


class DeviceError(UserError):
    """A requested device / precision is not available here; the message says what to do."""


# ============================================================================ probes
# torch_npu import outcome, cached: importing it twice after a failure is not safe, and a
# successful import is expensive (it initialises the Ascend runtime).
_NPU_MODULE: Any = None
_NPU_IMPORT_ERROR: BaseException | None = None
_NPU_TRIED = False
_NPU_STARTED = False  # start-up settings applied (once per process)


def _load_torch_npu():
    """Import torch_npu once; return the module or re-raise the (cached) import error."""
    global _NPU_MODULE, _NPU_IMPORT_ERROR, _NPU_TRIED
    if not _NPU_TRIED:
        _NPU_TRIED = True
        try:
            _NPU_MODULE = importlib.import_module("torch_npu")
        except Exception as exc:  # OSError (no libascendcl), ImportError, RuntimeError from init
            _NPU_IMPORT_ERROR = exc
    if _NPU_IMPORT_ERROR is not None:
        raise _NPU_IMPORT_ERROR
    return _NPU_MODULE


def _reset_probes() -> None:
    """Forget cached probe results (tests only)."""
    global _NPU_MODULE, _NPU_IMPORT_ERROR, _NPU_TRIED, _NPU_STARTED
    _NPU_MODULE, _NPU_IMPORT_ERROR, _NPU_TRIED, _NPU_STARTED = None, None, False, False
    _MATMUL_PROBES.clear()


def _npu_available() -> bool:
    try:
        return bool(_load_torch_npu().npu.is_available())
    except Exception:
        return False


def _npu_device_count() -> int:
    return int(_load_torch_npu().npu.device_count()) if _npu_available() else 0


def _npu_name(index: int = 0) -> str:
    """SoC name as the runtime reports it, e.g. 'Ascend910B3', 'Ascend310P3'."""
    return str(_load_torch_npu().npu.get_device_name(index))


def _cuda_available() -> bool:
    return torch.cuda.is_available()


def _cuda_device_count() -> int:
    return torch.cuda.device_count() if _cuda_available() else 0


def _cuda_capability(index: int = 0) -> tuple[int, int]:
    return tuple(torch.cuda.get_device_capability(index))


def _cuda_name(index: int = 0) -> str:
    return torch.cuda.get_device_name(index)


# The matmul probe: one weight of [_PROBE_WIDTH, _PROBE_WIDTH] (2 MB in half precision, in cache
# like a model's layer is while it computes), multiplied by inputs of each row count in _PROBE_ROWS:
# a decoding step, a small decoding batch, a short prompt, an image's worth of tokens.
_PROBE_ROWS = (1, 4, 16, 64)
_PROBE_WIDTH = 1024
_MATMUL_PROBES: dict[torch.dtype, dict[int, dict[str, float]]] = {}


def _best_ms(fn: Callable[[], Any], repeats: int = 3) -> float:
    fn()  # warm-up: kernel selection, first-touch allocation
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best * 1e3


def _matmul_probe(dtype: torch.dtype) -> dict[int, dict[str, float]]:
    """CPU timings in ms (best of 3) of one `[m, W] x [W, W]^T` linear whose weight is stored in
    `dtype`, per m in _PROBE_ROWS: computed in `dtype` ("native_ms") and in fp32 with the weight
    upcast first ("upcast_ms", the conversion included).  Run once per dtype and process (well under
    a second even where half-precision matmuls are slow)."""
    if dtype not in _MATMUL_PROBES:
        gen = torch.Generator().manual_seed(0)
        weight = torch.randn(_PROBE_WIDTH, _PROBE_WIDTH, generator=gen).to(dtype)
        figures = {}
        for rows in _PROBE_ROWS:
            x = torch.randn(rows, _PROBE_WIDTH, generator=gen).to(dtype)
            figures[rows] = {
                "native_ms": _best_ms(lambda: torch.nn.functional.linear(x, weight)),
                "upcast_ms": _best_ms(lambda: torch.nn.functional.linear(x.float(), weight.float())),
            }
        _MATMUL_PROBES[dtype] = figures
    return _MATMUL_PROBES[dtype]


def _activate(device: torch.device) -> None:
    """Make `device` the current device of this process (so bare allocations land there)."""
    if device.type != "cpu":
        torch.get_device_module(device.type).set_device(device)


def _npu_startup() -> None:
    """Ascend settings that matter for dynamic shapes, applied once per process.

    jit_compile=False uses the pre-built binary operator kernels instead of compiling one per new
    input shape (our prompts vary in length every batch, so JIT compiles would never stop), and
    internal (5HD/NZ) formats off keeps tensors in the ND layout that every op accepts.
    """
    global _NPU_STARTED
    if _NPU_STARTED:
        return
    npu = _load_torch_npu().npu
    npu.set_compile_mode(jit_compile=False)
    npu.config.allow_internal_format = False
    _NPU_STARTED = True


# ============================================================================ helpers
def _as_device(device: torch.device | str) -> torch.device:
    device = torch.device(device)
    if device.type not in DEVICE_TYPES:
        raise DeviceError(f"unsupported device type {device.type!r}; tinygpt runs on {', '.join(DEVICE_TYPES)}")
    return device


def _npu_load_error() -> BaseException | None:
    try:
        _load_torch_npu()
    except Exception as exc:
        return exc
    return None


def _npu_not_installed(exc: BaseException) -> bool:
    # a ModuleNotFoundError for a *dependency* of torch_npu means it is installed but broken
    return isinstance(exc, ModuleNotFoundError) and exc.name == "torch_npu"


def _npu_unavailable_reason() -> str:
    exc = _npu_load_error()
    if exc is None:
        version = getattr(_load_torch_npu(), "__version__", "?")
        return f"torch_npu {version} loaded but sees no NPU; check `npu-smi info` and ASCEND_RT_VISIBLE_DEVICES"
    if _npu_not_installed(exc):
        base = torch.__version__.split("+")[0]
        return f"torch_npu is not installed (pip install torch-npu=={base}, matching torch {base})"
    return _cann_message(exc)


def _cann_message(exc: BaseException) -> str:
    return (f"torch_npu is installed but failed to load ({type(exc).__name__}: {exc}). The CANN "
            f"runtime is probably not on the library path: run `{_CANN_HINT}` (or the set_env.sh "
            "of your CANN install) in this shell and retry")


def _cuda_unavailable_reason() -> str:
    if torch.version.cuda is None:
        return f"this torch ({torch.__version__}) is a build without CUDA; install a CUDA build of torch"
    return (f"torch {torch.__version__} (CUDA {torch.version.cuda}) sees no GPU; check `nvidia-smi`, "
            "the driver and CUDA_VISIBLE_DEVICES")


def _count(device_type: str) -> int:
    return {"cpu": lambda: 1, "npu": _npu_device_count, "cuda": _cuda_device_count}[device_type]()


def _pick(requested: str, local_rank: int | None) -> torch.device:
    """Resolve a device name without side effects (see `resolve_device`)."""
    requested = (requested or "auto").strip().lower()
    if requested == "auto":
        if _npu_available() and _npu_device_count() > 0:
            kind = "npu"
        else:
            if not _npu_available():
                _warn_if_npu_broken()
            kind = "cuda" if _cuda_available() and _cuda_device_count() > 0 else "cpu"
        explicit_index = None
    else:
        kind, _, idx = requested.partition(":")
        if kind not in DEVICE_TYPES or (idx and not idx.isdigit()):
            raise DeviceError(f"unknown device {requested!r}; expected auto, cpu, cuda[:N] or npu[:N]")
        explicit_index = int(idx) if idx else None
    if kind == "cpu":
        return torch.device("cpu")
    count = _count(kind)
    if count == 0:
        reason = _npu_unavailable_reason() if kind == "npu" else _cuda_unavailable_reason()
        raise DeviceError(f"device {requested!r} requested but not available: {reason}")
    if explicit_index is not None:
        index = explicit_index
    elif local_rank is not None:
        index = local_rank
    else:
        index = int(os.environ.get("LOCAL_RANK", 0))
    if index >= count:
        raise DeviceError(f"{kind}:{index} requested (local rank / index {index}) but only {count} {kind} "
                          "device(s) are visible; check --nproc-per-node and *_VISIBLE_DEVICES")
    return torch.device(kind, index)


def _warn_if_npu_broken() -> None:
    """Auto mode falls back to cuda/cpu, but an installed-yet-broken torch_npu deserves a word."""
    exc = _npu_load_error()
    if exc is not None and not _npu_not_installed(exc):
        log.warning("auto device: %s", _cann_message(exc))


def _supports_bf16(device: torch.device) -> bool:
    if device.type == "cpu":
        return True  # CPU autocast does bf16 (slowly on chips without AVX512-BF16/AMX)
    index = device.index or 0
    if device.type == "cuda":
        return _cuda_capability(index) >= (8, 0)  # Ampere and newer
    return not _NPU_NO_BF16.match(_npu_name(index))


def _half(device: torch.device, requested: str, what: str) -> torch.dtype | None:
    """Shared dtype table: None means fp32."""
    if requested not in PRECISIONS:
        raise DeviceError(f"{what} {requested!r}: expected one of {', '.join(PRECISIONS)}")
    if requested == "fp32":
        return None
    if requested == "fp16":
        return torch.float16
    bf16 = _supports_bf16(device)
    if requested == "bf16":
        if not bf16:
            raise DeviceError(f"{what} bf16 is not supported on {_device_label(device)}; use fp16 or fp32")
        return torch.bfloat16
    if device.type == "cpu":
        return None  # auto on CPU: fp32 (half is slower than fp32 on most CPUs)
    return torch.bfloat16 if bf16 else torch.float16


def _device_label(device: torch.device) -> str:
    index = device.index or 0
    if device.type == "cuda":
        major, minor = _cuda_capability(index)
        return f"{_cuda_name(index)} (compute capability {major}.{minor})"
    if device.type == "npu":
        return _npu_name(index)
    return "cpu"


# ============================================================================ public API
def resolve_device(requested: str = "auto", local_rank: int | None = None) -> torch.device:
    """The device this process computes on; makes it current and applies NPU start-up settings.

    requested: "auto" (npu if torch_npu loads and sees a device, else cuda, else cpu), "cpu",
    "cuda", "npu", or "cuda:N"/"npu:N".  The index is the explicit one, else `local_rank`, else the
    LOCAL_RANK environment variable torchrun sets, else 0.
    Raises DeviceError when the requested device is absent: never a silent fallback to CPU.
    """
    device = _pick(requested, local_rank)
    if device.type == "npu":
        _npu_startup()
    _activate(device)
    return device


def dist_backend(device: torch.device | str) -> str:
    """torch.distributed backend for this device type: hccl (npu), nccl (cuda), gloo (cpu)."""
    return _BACKENDS[_as_device(device).type]


def autocast_dtype(device: torch.device | str, precision: str = "auto") -> torch.dtype | None:
    """Autocast dtype for training/inference compute; None means plain fp32 (no autocast).

    auto: bf16 on Ascend 910B-class NPUs and CUDA capability >= 8.0, fp16 on 310P/910A-class NPUs
    and older GPUs, None on CPU.  An explicit bf16 where the chip lacks it raises DeviceError.
    """
    return _half(_as_device(device), precision, "precision")


def autocast(device: torch.device | str, dtype: torch.dtype | None) -> ContextManager:
    """`torch.autocast` for this device type, or a no-op context when dtype is None (fp32)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=_as_device(device).type, dtype=dtype)


def grad_scaler(device: torch.device | str, dtype: torch.dtype | None) -> torch.amp.GradScaler | None:
    """A loss scaler when training in fp16 (its 5-bit exponent underflows small grads); else None."""
    if dtype != torch.float16:
        return None
    return torch.amp.GradScaler(_as_device(device).type)


def frozen_dtype(device: torch.device | str, requested: str = "auto") -> torch.dtype:
    """Storage dtype for frozen towers (ViT, Q-Former, LLM base weights).

    auto: half precision on accelerators (bf16 if the chip has it, else fp16) since frozen weights
    need no optimizer precision; fp32 on CPU, where half matmuls are slower than fp32.
    """
    return _half(_as_device(device), requested, "frozen dtype") or torch.float32


@dataclass(frozen=True)
class ComputePolicy:
    """How matmuls whose weights are stored in `storage` compute on one device: in fp32, with the
    weights upcast on the fly, from `upcast_rows` input rows (tokens x batch) on; in `storage` below
    that, or always when `upcast_rows` is None.  `reason` says why in one line; `probe` holds the
    figures it was decided from (CPU, model.compute_dtype auto), {rows: {native_ms, upcast_ms}}."""

    storage: torch.dtype
    upcast_rows: int | None
    reason: str
    probe: dict[int, dict[str, float]] | None = None

    def dtype(self, rows: int) -> torch.dtype:
        """The dtype a matmul with `rows` input rows computes in."""
        return torch.float32 if self.upcast_rows is not None and rows >= self.upcast_rows else self.storage


def compute_policy(device: torch.device | str, storage: torch.dtype, requested: str = "auto") -> ComputePolicy:
    """The compute-dtype policy for weights stored in `storage` on `device` (`model.compute_dtype`).

    auto: on accelerators the storage dtype (half precision is what their matmul units do best);
    on a CPU, fp32 from the smallest probed row count from which a matmul computed in fp32 with its
    weight upcast beats one computed in `storage` at every larger count (`_matmul_probe`): a CPU
    without bf16 matmul units (AVX2) computes bf16 matmuls 10-40x slower than fp32 ones, yet decoding
    one token per sequence stays in bf16 there, since a memory-bound matrix-vector product reads half
    the bytes; a CPU with AVX512-BF16 / AMX keeps bf16 throughout.  storage: always the storage
    dtype.  fp32: always fp32 (weights upcast for every matmul).  fp32 storage: nothing to upcast.
    """
    device = _as_device(device)
    if requested not in COMPUTE_DTYPES:
        raise DeviceError(f"compute dtype {requested!r}: expected one of {', '.join(COMPUTE_DTYPES)}")
    name = dtype_name(storage)
    if storage == torch.float32:
        return ComputePolicy(storage, None, "weights stored in fp32")
    if requested == "storage":
        return ComputePolicy(storage, None, f"model.compute_dtype is storage: every matmul in {name}")
    if requested == "fp32":
        return ComputePolicy(storage, 1, "model.compute_dtype is fp32: every matmul in fp32, weights upcast")
    if device.type != "cpu":
        return ComputePolicy(storage, None, f"{_device_label(device)} computes {name} matmuls natively")
    probe = _matmul_probe(storage)
    rows = _upcast_from(probe)
    if rows is None:
        at = max(probe)
        reason = (f"{name} matmuls are as fast as fp32 ones here ({probe[at]['native_ms']:.2f} ms in {name} vs "
                  f"{probe[at]['upcast_ms']:.2f} ms upcast to fp32 at {at} rows): every matmul in {name}")
    else:
        at, few = max(probe), min(probe)
        flops = 2 * at * _PROBE_WIDTH ** 2 / 1e6  # per ms = GFLOP/s
        reason = (f"{name} matmuls are slow here ({flops / probe[at]['native_ms']:.1f} GFLOP/s at {at} rows vs "
                  f"{flops / probe[at]['upcast_ms']:.1f} in fp32, upcast included): fp32 from {rows} rows"
                  + (f"; {few} row stays {name} ({probe[few]['native_ms']:.2f} vs {probe[few]['upcast_ms']:.2f} ms)"
                     if rows > few else ""))
    return ComputePolicy(storage, rows, reason, probe)


# Upcasting must beat the storage dtype by this factor to be chosen: near a tie the choice would
# follow the timing noise of a busy machine from one process to the next.
_UPCAST_MARGIN = 0.8


def _upcast_from(probe: dict[int, dict[str, float]]) -> int | None:
    """The smallest probed row count from which upcasting clearly wins at every larger count; None
    if it never does."""
    rows = None
    for m in sorted(probe, reverse=True):
        if probe[m]["upcast_ms"] > _UPCAST_MARGIN * probe[m]["native_ms"]:
            break
        rows = m
    return rows


def device_count(device_type: str) -> int:
    """Visible devices of one type ("cpu" counts as 1); 0 when the type is absent."""
    if device_type not in DEVICE_TYPES:
        raise DeviceError(f"unknown device type {device_type!r}; expected one of {', '.join(DEVICE_TYPES)}")
    return _count(device_type)


def accelerator_module(device: torch.device | str):
    """torch's module for this device's type (`torch.get_device_module`), None on CPU.

    For code outside this file that needs an accelerator's generic API (synchronize, memory
    stats) without naming the accelerator."""
    device = _as_device(device)
    return None if device.type == "cpu" else torch.get_device_module(device.type)


def current_accelerator() -> str | None:
    """The type of the accelerator torch reports as current ("cuda", "npu"), None without one."""
    api = getattr(torch, "accelerator", None)  # torch >= 2.6
    if api is not None:
        return api.current_accelerator().type if api.is_available() else None
    if "torch_npu" in sys.modules and _npu_available():  # never import torch_npu just to ask
        return "npu"
    return "cuda" if _cuda_available() else None


# ---------------------------------------------------------------------------- report
def _cann_version() -> str | None:
    """CANN toolkit version from the install that set_env.sh points at (ASCEND_TOOLKIT_HOME)."""
    home = os.environ.get("ASCEND_TOOLKIT_HOME") or os.environ.get("ASCEND_HOME_PATH")
    if not home:
        guess = "/usr/local/Ascend/ascend-toolkit/latest"
        home = guess if os.path.isdir(guess) else None
    if not home:
        return None
    machine = platform.machine().lower().replace("amd64", "x86_64").replace("arm64", "aarch64")
    for rel in (f"{machine}-linux/ascend_toolkit_install.info", "compiler/version.info",
                "runtime/version.info", "version.cfg"):
        try:
            with open(os.path.join(home, rel)) as f:
                text = f.read()
        except OSError:
            continue
        m = re.search(r"^\s*version\s*=\s*\[?([0-9][\w.]*)", text, re.I | re.M) or \
            re.search(r"(\d+\.\d+\.\w+)", text)
        if m:
            return m.group(1)
    return None


def describe(requested: str = "auto", precision: str = "auto") -> dict:
    """What this machine offers and what tinygpt would pick; JSON-serialisable.

    Keys: python, platform, torch, torch_npu_version (None if not loaded), npu_status ("ok" or why
    not), cuda_runtime (torch.version.cuda), cann_version, cpu_count, env (device-related
    environment variables that are set), devices (list of
    {type, index, name, bf16[, capability]}), device, backend, autocast_dtype, frozen_dtype, and
    error (a DeviceError message when `requested`/`precision` cannot be honoured here).
    Does not make any device current and applies no NPU settings.
    """
    npu_ok = _npu_available()
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torch_npu_version": _npu_version(),
        "npu_status": "ok" if npu_ok and _npu_device_count() else _npu_unavailable_reason(),
        "cuda_runtime": torch.version.cuda,
        "cann_version": _cann_version(),
        "cpu_count": os.cpu_count(),
        "env": {k: os.environ[k] for k in _ENV_VARS if k in os.environ},
        "devices": [],
    }
    for kind, name_of in (("npu", _npu_name), ("cuda", _cuda_name)):
        for index in range(_count(kind)):
            dev = torch.device(kind, index)
            entry = {"type": kind, "index": index, "name": name_of(index), "bf16": _supports_bf16(dev)}
            if kind == "cuda":
                entry["capability"] = "%d.%d" % _cuda_capability(index)
            info["devices"].append(entry)
    try:
        device = _pick(requested, None)
        amp = autocast_dtype(device, precision)
        info.update(device=str(device), backend=dist_backend(device), error=None,
                    autocast_dtype=dtype_name(amp), frozen_dtype=dtype_name(frozen_dtype(device)))
    except DeviceError as exc:
        info.update(device=None, backend=None, autocast_dtype=None, frozen_dtype=None, error=str(exc))
    return info


def _npu_version() -> str | None:
    try:
        return str(getattr(_load_torch_npu(), "__version__", "unknown"))
    except Exception:
        return None


def dtype_name(dtype: torch.dtype | None) -> str:
    """fp32 / bf16 / fp16 (None: fp32, the autocast tables' "no autocast")."""
    return {None: "fp32", torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]
