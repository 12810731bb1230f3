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
from .config import ConfigError
from .numbers import number_problem, shown

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
    """A checkpoint written by `IterRunner._save`; anything else is a ConfigError naming
    run.resume_ckpt_path and the file (missing, a directory, a text file, a pickle that is not
    weights-only, another kind of checkpoint)."""
    where = f"run.resume_ckpt_path: {path}"
    if not os.path.isfile(path):
        raise ConfigError(f"{where} does not exist" if not os.path.exists(path) else f"{where} is not a file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # text, truncated zip, a pickle needing code: torch raises many types
        reason = " ".join(str(exc).split())[:200]
        raise ConfigError(f"{where}: not a tinygpt training checkpoint readable with weights_only=True "
                          f"({type(exc).__name__}: {reason})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ConfigError(f"{where}: not a tinygpt training checkpoint (format {FORMAT!r}); "
                          "to start from weights only, list the file under model.ckpt instead")
    missing = sorted({"model", "optimizer", "scheduler", "step", "data", "rng", "config"} - set(state))
    if missing:
        raise ConfigError(f"{where}: the checkpoint lacks {', '.join(missing)}")
    step = state["step"]
    problem = number_problem(step, 0) if isinstance(step, int) else "it must be an integer"
    if problem:
        raise ConfigError(f"{where}: its 'step' is {shown(step)}; {problem}")
    if not isinstance(state["config"], str):
        raise ConfigError(f"{where}: its 'config' is {type(state['config']).__name__}, not the YAML text of a config")
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
