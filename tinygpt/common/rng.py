"""The one home of random-number state: seeding every generator a run draws from, and saving /
restoring their states for an exact resume.

The generators are python's `random`, numpy's legacy global one, torch's CPU one and the current
accelerator's (which accelerator that is comes from `common/device.py`; this module never names one).
"""
from __future__ import annotations

import random
import warnings

import numpy as np
import torch

from . import device as devices


def seed_everything(seed: int) -> None:
    """Seed python, numpy, torch (CPU) and every device of the current accelerator."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also queues seeds for registered accelerators...
    acc = devices.current_accelerator()
    if acc is not None:  # ...but say it explicitly for backends that do not hook manual_seed
        torch.get_device_module(acc).manual_seed_all(seed)


def rng_state() -> dict:
    """This process's RNG states for an exact resume (python, numpy, torch CPU, the current
    accelerator device), as tensors/lists/numbers only, so a checkpoint holding it loads with
    `torch.load(weights_only=True)`.  Each rank has its own: save one per rank for exact resume."""
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    acc = devices.current_accelerator()
    return {
        "python": [version, list(internal), gauss],
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
        # only the current device's generator: each rank computes on one device, and reading the
        # others' (get_rng_state_all) would create a context on every visible device
        "accelerator": None if acc is None else {"type": acc, "state": _current_generator_state(acc)},
    }


def set_rng_state(state: dict) -> None:
    """Restore `rng_state()` output (call after `resolve_device`: the accelerator state goes to the
    current device).  Restored only on the same device type; resuming elsewhere warns, since the
    exact random stream cannot be reproduced there."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    npy = state["numpy"]
    np.random.set_state((npy["name"], npy["keys"].numpy().astype(np.uint32), npy["pos"],
                         npy["has_gauss"], npy["cached_gaussian"]))
    torch.set_rng_state(state["torch"].cpu())
    saved = state.get("accelerator")
    if saved is None:
        return
    acc = devices.current_accelerator()
    if acc != saved["type"]:
        warnings.warn(f"RNG state was saved on {saved['type']} but this process runs on {acc or 'cpu'}; "
                      "accelerator random streams are not restored", stacklevel=2)
        return
    mod = torch.get_device_module(acc)
    mod.set_rng_state(saved["state"].cpu(), mod.current_device())


def _current_generator_state(acc: str) -> torch.Tensor:
    mod = torch.get_device_module(acc)
    return mod.get_rng_state(mod.current_device())
