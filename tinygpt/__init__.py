"""tinygpt: train, serve and evaluate TinyGPT-V-family multimodal models on NPU, GPU and CPU.

    cfg = tinygpt.load_config("train_configs/tiny/stage4.yaml", options=["run.device=cpu"])
    model = tinygpt.build_model(cfg)             # loads every weight file the config names
    model.encode_images(images)                  # [B, 32, D_llm]
    model(samples)["answer_nll"]                 # per-sample answer NLL of TinyGPT-V's sample dict
                                                 # (tinygpt.tasks: the loss a training step minimises)
    model.generate(images, prompts)              # list[str]

    model = tinygpt.from_pretrained("output/tiny/stage4")   # or an export dir, or a YAML
    model.answer("photo.png", "[vqa] what colour is the square?")   # preprocessing inside
"""
from __future__ import annotations

import logging

__version__ = "0.1.0"

# bitsandbytes (imported by peft and by the doctor) warns at import time on CPU that the optional
# `kernels` package for 4-bit CPU matmuls is missing; we never use 4 bit, and that line would
# otherwise open the output of every command.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)

_REGISTERING_MODULES = (
    "tinygpt.models.tinygpt_v",
    "tinygpt.processors",
    "tinygpt.datasets",
    "tinygpt.tasks",
    "tinygpt.runners",
    "tinygpt.common.schedulers",
    "tinygpt.evaluation",
)


def register_all() -> None:
    """Import every module that registers YAML-nameable classes (idempotent)."""
    import importlib

    for name in _REGISTERING_MODULES:
        importlib.import_module(name)


def load_config(path, options=None):
    from .common.config import load_config as _load

    register_all()
    return _load(path, options)


def build_model(cfg, device=None, **kwargs):
    from .models.build import build_model as _build

    register_all()
    return _build(cfg, device, **kwargs)


def from_pretrained(source, device=None, **kwargs):
    """A model that answers: `.answer(image, question)`, `.chat()`, `.model` (tinygpt/api.py).
    `source`: an exported directory, a training output folder (output/tiny/stage4) or a YAML."""
    from .api import from_pretrained as _load

    register_all()
    return _load(source, device, **kwargs)
