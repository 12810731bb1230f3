"""Training checkpoints: written atomically by rank 0, read back with weights_only=True.

A checkpoint holds what rebuilds the run exactly: trainable weights, optimizer, grad scaler, LR
schedule, step/epoch, data position, RNG states and the resolved config (YAML text).
"""
from __future__ import annotations

import glob
import os
import re

import torch

from .atomic import atomic_path

FORMAT = "tinygpt-train-1"


def atomic_save(obj, path: str) -> None:
    """torch.save to a temp file in the same directory, then rename: a crash never leaves half a file."""
    with atomic_path(path, ".pt") as tmp:
        torch.save(obj, tmp)


def save_weights(state: dict[str, torch.Tensor], path: str, fmt: str = "tinygpt",
                 metadata: dict[str, str] | None = None) -> None:
    """Weights as safetensors (no pickle: safe to share and to load anywhere), atomically;
    `metadata` (str -> str) goes into the header beside the format."""
    from safetensors.torch import save_file

    with atomic_path(path, ".safetensors") as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, tmp,
                  metadata={**(metadata or {}), "format": fmt})


def load_training_checkpoint(path: str) -> dict:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"run.resume_ckpt_path: {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"{path}: not a tinygpt training checkpoint readable with weights_only=True ({exc})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{path}: not a tinygpt training checkpoint (format {FORMAT!r}); "
                         "to start from weights only, list the file under model.ckpt instead")
    return state


def step_path(output_dir: str, step: int) -> str:
    return os.path.join(output_dir, f"checkpoint_step{step:07d}.pt")


def prune(output_dir: str, keep_last: int) -> None:
    """Delete all but the newest `keep_last` step checkpoints (0 keeps all)."""
    if keep_last <= 0:
        return
    found = sorted(glob.glob(os.path.join(output_dir, "checkpoint_step*.pt")),
                   key=lambda p: int(re.findall(r"(\d+)", os.path.basename(p))[0]))
    for old in found[:-keep_last]:
        os.remove(old)
