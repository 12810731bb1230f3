"""Batch a list of sample dicts: tensors are stacked, everything else is kept as a list."""
from __future__ import annotations

import torch

from tinygpt.datasets import skips


def collate(samples: list[dict | None], one_instruction: bool = False) -> dict:
    """[{"image": [3,S,S], "answer": str, ...}] * B -> {"image": [B,3,S,S], "answer": [str] * B, ...}.

    Every sample of a batch comes from one dataset, so all have the same keys; a mismatch is a bug in
    a builder and raises.  None (a record whose image could not be read) is left out, so the batch
    may be smaller; a batch of nothing but None is `{}` (the mixing loader draws the next one).
    Skips recorded while this batch was made ride along under skips.SKIPS_KEY (only when there are
    any) so the main process can count them (see tinygpt/datasets/skips.py).
    `one_instruction`: every sample gets the first sample's "instruction_input" (TinyGPT-V's stage 3
    draws its alignment prompt once per batch; the first sample's own draw is that uniform draw).
    """
    if not samples:
        raise ValueError("collate: empty batch")
    samples = [s for s in samples if s is not None]
    batch = {}
    pending = skips.drain()
    if pending:
        batch[skips.SKIPS_KEY] = pending
    if not samples:
        return batch
    keys = list(samples[0])
    for i, s in enumerate(samples[1:], 1):
        if set(s) != set(keys):
            raise ValueError(f"collate: sample {i} has keys {sorted(s)}, sample 0 has {sorted(keys)}")
    for key in keys:
        values = [s[key] for s in samples]
        if one_instruction and key == "instruction_input":
            values = values[:1] * len(values)
        batch[key] = torch.stack(values) if isinstance(values[0], torch.Tensor) else values
    return batch
