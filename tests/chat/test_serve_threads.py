"""The server's intra-op thread setting (tinygpt/serve/threads.py, `demo.py --threads`): a small
model is served on 1 thread per op, a large one keeps torch's default, an explicit count wins."""
from __future__ import annotations

import pytest
import torch

from tinygpt.serve.main import parse_args
from tinygpt.serve.threads import SMALL_MODEL_PARAMS, model_engine, model_threads, use_model_threads


def large_model() -> torch.nn.Module:
    side = int(SMALL_MODEL_PARAMS ** 0.5) + 1  # just over the bound, on the meta device: no memory
    return torch.nn.Linear(side, side, bias=False, device="meta")


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_small_model_one_thread_large_model_torch_default(tiny_model, restore_threads):
    torch.set_num_threads(2)
    assert model_threads(tiny_model) == 1
    assert model_threads(large_model()) == 2
    assert model_threads(tiny_model, 3) == 3  # an explicit count wins either way
    with pytest.raises(ValueError, match=">= 1"):
        model_threads(tiny_model, 0)


def test_use_model_threads_sets_torch(tiny_model, restore_threads):
    torch.set_num_threads(2)
    assert use_model_threads(tiny_model) == 1
    assert torch.get_num_threads() == 1
    assert use_model_threads(tiny_model, 2) == 2
    assert torch.get_num_threads() == 2


def test_demo_flag(capsys):
    assert parse_args(["--threads", "2"]).threads == 2
    assert parse_args([]).threads is None  # auto
    with pytest.raises(SystemExit) as exc:
        parse_args(["--threads", "0"])
    assert exc.value.code == 2
    assert "--threads must be >= 1" in capsys.readouterr().err


def test_engine_auto_puts_a_small_model_in_its_own_process_and_keeps_a_large_one_in_a_thread(tiny_model):
    assert parse_args([]).engine == "auto"
    assert model_engine(tiny_model) == "process"  # its second copy in the HTTP process is ~10 MB
    assert model_engine(large_model()) == "thread"  # one copy of a large model's weights
    assert model_engine(large_model(), "process") == "process" and model_engine(tiny_model, "thread") == "thread"
