"""common/rng.py: seeding repeats every stream, and RNG state survives a weights_only checkpoint."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from tinygpt.common import device as D
from tinygpt.common import rng


def _draw():
    return (random.random(), float(np.random.rand()), torch.rand(3).tolist())


def test_seed_everything_repeats():
    rng.seed_everything(123)
    first = _draw()
    rng.seed_everything(123)
    assert _draw() == first


def test_rng_state_round_trip_through_a_weights_only_checkpoint(tmp_path):
    rng.seed_everything(7)
    _draw()
    torch.save({"rng": rng.rng_state()}, tmp_path / "ckpt.pt")
    expected = _draw()
    _draw()  # move every stream further
    rng.set_rng_state(torch.load(tmp_path / "ckpt.pt", weights_only=True)["rng"])
    assert _draw() == expected


def test_rng_state_from_another_device_type_warns(monkeypatch):
    state = rng.rng_state()
    state["accelerator"] = {"type": "cuda", "state": torch.zeros(16, dtype=torch.uint8)}
    monkeypatch.setattr(D, "current_accelerator", lambda: None)
    with pytest.warns(UserWarning, match="saved on cuda"):
        rng.set_rng_state(state)
