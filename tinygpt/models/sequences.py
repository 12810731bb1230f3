"""Token layouts -> what the LLM reads, and the answer NLL it gives back: the one home of the
training-side sequence tensors (visual tokens spliced in, attention for padded or packed rows,
next-token NLL computed only where a label is).

    PackedRows (conversation/packing.py) + visual [B, Q, D]
        -> inputs_embeds [R, T, D], attention, position ids      (R rows, B samples, R <= B)
        -> logits only at the K positions that predict a label   [R, K, vocab]
        -> per-sample summed NLL and token count                 ([B], [B])

* One sample per row (the default): the 2D padding mask [R, T] and no position ids, i.e. the LLM's
  own causal mask and positions 0..T-1 -- the plain right-padded batch.
* Packed rows: a 4D block-diagonal causal mask [R, 1, T, T] (what `attn_implementation` takes: bool
  for sdpa, additive for eager; kernels that take no dense mask are refused) and position ids that
  restart at every sample.  LLMs with sliding-window layers see the whole sample (identical while a
  sample is shorter than the window).
* Logits are computed only at positions whose next token is labelled (transformers'
  `logits_to_keep`, the union over rows): a VQA sample supervises 2-3 of its ~60 tokens, so the LM
  head, its fp32 cast and the softmax shrink by an order of magnitude.  Same numbers as full logits.
"""
from __future__ import annotations

import torch
from torch import nn

from ..common.errors import UserError
from ..conversation.packing import PackedRows
from ..conversation.protocol import IGNORE

PACKING_KEY = "run.pack_length"


def splice_visual(embedding: nn.Module, ids: torch.Tensor, image_at: list[tuple[int, int]],
                  visual: torch.Tensor) -> torch.Tensor:
    """ids [R, T] (host) -> embeddings [R, T, D] on visual's device, with visual[i] [Q, D] written
    over the Q slots that start at image_at[i] = (row, column); (-1, -1): sample i has no image."""
    embeds = embedding(ids.to(visual.device))
    placed = sorted((rc, i) for i, rc in enumerate(image_at) if rc[0] >= 0)
    if not placed:
        return embeds
    n_query = visual.shape[1]
    slots = torch.zeros(ids.shape, dtype=torch.bool)
    for (row, col), _ in placed:
        slots[row, col:col + n_query] = True
    # masked_scatter fills the slots in row-major order: the visual rows go in (row, column) order.
    source = visual[[i for _, i in placed]].to(embeds.dtype)
    return embeds.masked_scatter(slots.to(embeds.device)[..., None], source)


def attention_inputs(llm: nn.Module, packed: PackedRows, device: torch.device, dtype: torch.dtype) -> dict:
    """The LLM's `attention_mask` (and `position_ids` when rows are packed) for `packed`."""
    attention = torch.tensor(packed.attention, dtype=torch.bool)
    if packed.one_per_row:
        return {"attention_mask": attention.long().to(device)}
    impl = llm.config._attn_implementation
    if impl not in ("sdpa", "eager"):
        raise UserError(f"{PACKING_KEY} needs an attention kernel that takes a dense mask (sdpa or eager); "
                        f"model.llm.attn_implementation is {impl!r}")
    segments = torch.tensor(packed.segments)
    width = segments.shape[1]
    causal = torch.ones(width, width, dtype=torch.bool).tril()
    allowed = (segments[:, :, None] == segments[:, None, :]) & causal & attention[:, None, :]
    mask = allowed[:, None]
    if impl == "eager":  # eager attention adds the mask to the scores
        mask = torch.zeros(mask.shape, dtype=dtype).masked_fill(~mask, torch.finfo(dtype).min)
    return {"attention_mask": mask.to(device), "position_ids": torch.tensor(packed.positions).to(device)}


def answer_nll(llm: nn.Module, packed: PackedRows, visual: torch.Tensor, n_samples: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sample, the summed next-token NLL over its labelled tokens and their count ([B], [B])."""
    ids = torch.tensor(packed.ids)
    embeds = splice_visual(llm.get_input_embeddings(), ids, packed.image_at, visual)
    device = embeds.device
    labels = torch.tensor(packed.labels)
    targets = labels[:, 1:]
    keep = (targets != IGNORE).any(dim=0).nonzero().flatten()  # positions that predict a label
    logits = llm(inputs_embeds=embeds, use_cache=False, logits_to_keep=keep.to(device),
                 **attention_inputs(llm, packed, device, embeds.dtype)).logits  # [R, K, vocab]
    targets = targets[:, keep].to(device)
    nll = nn.functional.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=IGNORE,
                                      reduction="none").view(targets.shape)
    valid = targets != IGNORE
    owner = torch.tensor(packed.segments)[:, keep + 1].to(device)  # the sample each predicted token is in
    total = nll.new_zeros(n_samples).index_add_(0, owner.flatten(), nll.flatten())
    count = torch.zeros(n_samples, dtype=torch.long, device=device).index_add_(0, owner.flatten(),
                                                                                valid.long().flatten())
    return total, count
