"""How many threads the server's model thread splits each tensor op across (torch's intra-op threads).

A model below `SMALL_MODEL_PARAMS` parameters (the quickstart's tiny model: 2.5 M) runs ops of a few
microseconds, which a second thread cannot speed up (measured on 2 cores: a decode step 1.8 ms with
1 thread, 1.9 ms with 2; a prefill of 8 prompts 19.3 ms / 18.7 ms), while that thread's spin-waiting
takes the core the HTTP side, the image decoding and the clients need (the server's CPU per lone
answer 29 ms with 2 threads, 21 ms with 1; one client 30 -> 40 answers/s, 8 clients 69-83 -> 83-98;
docs/chat.md).  Larger models spend their time in matmuls, which do split once batches are large
(the `small` preset, 236 M parameters, 8 clients: 1.81 answers/s with 2 threads, 1.43 with 1; alone
0.84 / 0.92): they keep torch's default.
"""
from __future__ import annotations

from typing import Optional

import torch

SMALL_MODEL_PARAMS = 20_000_000


def is_small(model: torch.nn.Module) -> bool:
    """Whether `model` has fewer than SMALL_MODEL_PARAMS parameters: the one size rule behind both
    serving defaults below."""
    return sum(p.numel() for p in model.parameters()) < SMALL_MODEL_PARAMS


def model_threads(model: torch.nn.Module, requested: Optional[int] = None) -> int:
    """The intra-op thread count to serve `model` with: `requested`, or (None) 1 for a model under
    SMALL_MODEL_PARAMS parameters and torch's current setting otherwise."""
    if requested is not None:
        if requested < 1:
            raise ValueError(f"the thread count must be >= 1, got {requested}")
        return requested
    return 1 if is_small(model) else torch.get_num_threads()


def model_engine(model: torch.nn.Module, requested: str = "auto") -> str:
    """Where to run `model` when serving: `requested`, or ("auto") "process" for a model under
    SMALL_MODEL_PARAMS parameters and "thread" otherwise.  The process engine keeps a second copy
    of the weights in the HTTP process (it preprocesses with the model's own processor): ~10 MB
    for the quickstart model, which it serves 1.2x faster with 8 clients (docs/chat.md), but the
    full-size model's gigabytes, whose time goes into matmuls that do not hold the interpreter lock."""
    if requested != "auto":
        return requested
    return "process" if is_small(model) else "thread"


def use_model_threads(model: torch.nn.Module, requested: Optional[int] = None) -> int:
    """Set torch's intra-op threads (process-wide) for serving `model`; -> the count set."""
    n = model_threads(model, requested)
    torch.set_num_threads(n)
    return n
