"""Reading weight files without running code from them, and without a second copy in memory.

* `.safetensors` (single, or sharded behind `model.safetensors.index.json`): opened lazily, one
  tensor read at a time.
* `.pth` / `.pt` / `.bin`: `torch.load(weights_only=True, mmap=True)`, so tensors stay in the page
  cache until copied into the model.  Anything that needs more than tensors and plain containers
  is refused, with one narrow exception (below).

The exception: TinyGPT-V / MiniGPT-4 training checkpoints carry the run's config next to the weights,
and a file saved from an OmegaConf object (instead of the usual `OmegaConf.to_container`) needs
omegaconf classes to unpickle.  Allow-listing those classes for real would run omegaconf's
`__setstate__` on file-controlled state and depends on the omegaconf version that wrote the file.
We never need that config, so instead each such global is bound to an *inert placeholder* of ours:
unpickling stays inside torch's weights-only unpickler, no omegaconf (or any foreign) code runs,
and the config comes back as an opaque object nobody reads.  This applies only when every
non-allowed global in the file is an omegaconf class or a plain type such a config refers to; any
other global (a function, a class from another package) and the file is refused.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import pickle

import torch

from .report import WeightLoadError

log = logging.getLogger(__name__)

HF_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
HF_SINGLE = ("model.safetensors", "pytorch_model.bin")

# Globals an OmegaConf config object refers to when pickled (omegaconf's own classes aside).
_CONFIG_PLAIN_GLOBALS = {
    "builtins.int", "builtins.float", "builtins.str", "builtins.bool", "builtins.bytes",
    "builtins.dict", "builtins.list", "builtins.tuple", "builtins.set", "builtins.object",
    "builtins.type", "builtins.NoneType", "collections.defaultdict", "collections.OrderedDict",
}


# safetensors header dtype names -> torch dtypes.
_SAFETENSORS_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
}


class _Opaque:
    """Stands in for an object of a class we refuse to instantiate; swallows its state."""

    def __new__(cls, *args, **kwargs):
        return object.__new__(cls)

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass

    def __repr__(self) -> str:
        return "<unread config object>"


def _opaque_dict(*args, **kwargs) -> dict:
    # Pickled dicts (defaultdict included) fill themselves with SETITEMS, which needs a real dict.
    return {}


def _opaque_list(*args, **kwargs) -> list:
    return []


def _is_config_global(name: str) -> bool:
    return name.startswith(("omegaconf.", "typing.")) or name in _CONFIG_PLAIN_GLOBALS


def _unsafe_globals(path: str) -> list[str] | None:
    try:
        return list(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except Exception:  # legacy (non-zip) files cannot be scanned
        return None


def _refuse(path: str, what: str) -> WeightLoadError:
    return WeightLoadError(
        f"{path}: refusing to unpickle this file: it contains arbitrary Python objects ({what}), and "
        "unpickling them can run code.  tinygpt reads only tensors and plain containers "
        "(torch.load weights_only=True).  If you trust the file, convert it once to safetensors, e.g.\n"
        "  python -c \"import torch; from safetensors.torch import save_file; "
        f"sd = torch.load('{path}', weights_only=False); sd = sd.get('model', sd); "
        "save_file({k: v.contiguous() for k, v in sd.items()}, 'converted.safetensors')\"\n"
        "and point the config at converted.safetensors."
    )


def _torch_load(path: str, mmap: bool):
    return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)


def read_torch(path: str):
    """torch.load with weights_only=True (memory-mapped when the file format allows it)."""
    try:
        try:
            return _torch_load(path, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc):
                raise
            return _torch_load(path, mmap=False)  # legacy (pre-zip) serialization cannot be mapped
    except pickle.UnpicklingError as exc:
        unsafe = _unsafe_globals(path)
        if not unsafe:
            detail = str(exc).split("WeightsUnpickler error:")[-1].strip().splitlines()[0]
            raise _refuse(path, detail) from None
        if not (any(n.startswith("omegaconf.") for n in unsafe) and all(map(_is_config_global, unsafe))):
            raise _refuse(path, ", ".join(sorted(unsafe))) from None
        stubs = [({"builtins.dict": _opaque_dict, "collections.defaultdict": _opaque_dict,
                   "collections.OrderedDict": _opaque_dict, "builtins.list": _opaque_list}.get(n, _Opaque), n)
                 for n in unsafe]
        with torch.serialization.safe_globals(stubs):
            obj = _torch_load(path, mmap=True)
        log.info("%s: holds an OmegaConf object (the run config); read as an inert placeholder, "
                 "it is not needed to load weights", path)
        return obj
    except WeightLoadError:
        raise
    except Exception as exc:
        raise WeightLoadError(f"{path}: not a readable PyTorch file ({type(exc).__name__}: {exc})") from None


class TensorSource(contextlib.AbstractContextManager):
    """A weight file (or HF directory) as key -> tensor, read lazily.

    `extras` holds the non-weight entries of a wrapped checkpoint (`{"model": ..., "epoch": 3}`).
    """

    def __init__(self, path: str):
        self.path = path
        self.extras: dict = {}
        self.metadata: dict = {}  # safetensors header metadata (our own files say format=tinygpt-...)
        self._tensors: dict[str, torch.Tensor] = {}
        self._handles: dict[str, object] = {}  # key -> open safetensors file

    # ------------------------------------------------------------------ building
    def add_state_dict(self, state: dict, where: str) -> None:
        for key, value in state.items():
            if not isinstance(value, torch.Tensor):
                raise WeightLoadError(f"{where}: entry {key!r} is a {type(value).__name__}, not a tensor")
            self._tensors[key] = value

    def add_safetensors(self, file: str) -> None:
        from safetensors import safe_open

        try:
            handle = safe_open(file, framework="pt", device="cpu")
        except Exception as exc:  # SafetensorError (header), OSError: the message names no file
            raise WeightLoadError(f"{file}: not a readable .safetensors file ({exc})") from None
        self.metadata.update(handle.metadata() or {})
        for key in handle.keys():
            self._handles[key] = handle

    # ------------------------------------------------------------------ reading
    def keys(self) -> list[str]:
        return list(self._tensors) + list(self._handles)

    def __contains__(self, key: str) -> bool:
        return key in self._tensors or key in self._handles

    def shape(self, key: str) -> tuple[int, ...]:
        if key in self._tensors:
            return tuple(self._tensors[key].shape)
        return tuple(self._handles[key].get_slice(key).get_shape())

    def dtype(self, key: str) -> torch.dtype | str:
        """The stored dtype (from the safetensors header without reading the data); a dtype torch
        has no name for comes back as the header's string."""
        if key in self._tensors:
            return self._tensors[key].dtype
        stored = self._handles[key].get_slice(key).get_dtype()
        return _SAFETENSORS_DTYPES.get(stored, stored)

    def get(self, key: str) -> torch.Tensor:
        if key in self._tensors:
            return self._tensors[key]
        try:
            return self._handles[key].get_tensor(key)
        except Exception as exc:  # a file cut short after its header
            raise WeightLoadError(f"{self.path}: tensor {key!r} could not be read ({exc})") from None

    def close(self) -> None:
        self._tensors.clear()
        self._handles.clear()

    def __exit__(self, *exc) -> None:
        self.close()


def _add_torch_file(source: TensorSource, file: str, unwrap: bool) -> None:
    obj = read_torch(file)
    if not isinstance(obj, dict):
        raise WeightLoadError(f"{file}: expected a dict of tensors, found a {type(obj).__name__}")
    # Training checkpoints (LAVIS, MiniGPT-4, TinyGPT-V, ours) wrap the weights: {"model": {...}, ...}.
    if unwrap and isinstance(obj.get("model"), dict):
        source.extras = {k: v for k, v in obj.items() if k != "model"}
        obj = obj["model"]
    source.add_state_dict(obj, file)


def open_weights(path: str) -> TensorSource:
    """A file (.safetensors / .pt / .pth / .bin) or a Hugging Face model directory."""
    path = os.fspath(path)
    source = TensorSource(path)
    if os.path.isdir(path):
        for index in HF_INDEXES:
            index_path = os.path.join(path, index)
            if os.path.isfile(index_path):
                with open(index_path) as f:
                    shards = sorted(set(json.load(f)["weight_map"].values()))
                for shard in shards:
                    _add_file(source, os.path.join(path, shard), unwrap=False)
                return source
        for single in HF_SINGLE:
            if os.path.isfile(os.path.join(path, single)):
                _add_file(source, os.path.join(path, single), unwrap=False)
                return source
        raise WeightLoadError(f"{path}: a directory without weights: expected one of "
                              f"{', '.join(HF_INDEXES + HF_SINGLE)}")
    if not os.path.isfile(path):
        raise WeightLoadError(f"{path}: no such file or directory")
    _add_file(source, path, unwrap=True)
    return source


def _add_file(source: TensorSource, file: str, unwrap: bool) -> None:
    if not os.path.isfile(file):
        raise WeightLoadError(f"{file}: listed in the index but not present")
    if file.endswith(".safetensors"):
        source.add_safetensors(file)
    else:
        _add_torch_file(source, file, unwrap)
