"""Scores that are not generated text: P("yes") for Hateful Memes, candidate losses for IconQA.

Both use only the model's public pieces (`encode_images`, `embed_inputs`, `dialogue_losses`, `llm`) over the protocol's
layouts (conversation/protocol.py): P("yes") reads the generation prompt, candidate ranking the
training sequence of each candidate answer (TinyGPT-V's `multi_select` runs `forward` per candidate).
"""
from __future__ import annotations

import torch

from ..conversation.protocol import Dialogue

YES_FORMS = ("yes", "Yes")
NO_FORMS = ("no", "No")


def first_token_ids(tokenizer, forms: tuple[str, ...]) -> list[int]:
    """The distinct first tokens of each surface form, tokenised alone.

    An answer is tokenised on its own after the prompt (the protocol's layout),
    so "yes" as the first answer token is the first token of `tokenizer("yes")`.
    """
    ids = []
    for form in forms:
        tokens = tokenizer(form, add_special_tokens=False).input_ids
        if tokens and tokens[0] not in ids:
            ids.append(tokens[0])
    return ids


@torch.no_grad()
def yes_probability(model, images: torch.Tensor, instructions: list[str]) -> torch.Tensor:
    """P("yes") / (P("yes") + P("no")) for the first answer token: [B] float32 in [0, 1].

    images [B, 3, S, S]; instructions contain the image placeholder and are wrapped in the stage
    template here, as in `generate`.  Both casings count ("yes"/"Yes", "no"/"No").  The batch is
    left-padded so that every row's next token is at the last position; position ids follow the
    attention mask so a padded row sees the same positions it would alone.
    """
    yes, no = first_token_ids(model.tokenizer, YES_FORMS), first_token_ids(model.tokenizer, NO_FORMS)
    if not yes or not no or set(yes) & set(no):
        raise ValueError(f"this tokenizer cannot tell 'yes' {yes} from 'no' {no} by their first token")
    visual = model.encode_images(images)
    embeds, mask, _ = model.embed_inputs(list(instructions), visual)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    logits = model.llm(inputs_embeds=embeds, attention_mask=mask, position_ids=positions).logits[:, -1].float()
    probs = logits.softmax(-1)
    p_yes, p_no = probs[:, yes].sum(-1), probs[:, no].sum(-1)
    return p_yes / (p_yes + p_no).clamp(min=torch.finfo(torch.float32).tiny)


@torch.no_grad()
def candidate_losses(model, images: torch.Tensor, instructions: list[str],
                     candidates: list[list[str]]) -> list[list[float]]:
    """Mean answer-token NLL of every candidate of every question: [B][n_candidates_b].

    The same number `model.answer_losses` gives for (image, instruction, candidate), but each
    image goes through the vision tower once, not once per candidate.
    """
    if len(candidates) != len(instructions) or images.shape[0] != len(instructions):
        raise ValueError("images, instructions and candidates must have one entry per question")
    visual = model.encode_images(images)  # [B, Q, D]
    owner = [i for i, cands in enumerate(candidates) for _ in cands]
    answers = [c for cands in candidates for c in cands]
    dialogues = [Dialogue.single(instructions[i], a) for i, a in zip(owner, answers)]
    losses = model.dialogue_losses(visual[owner], dialogues).tolist()
    out, start = [], 0
    for cands in candidates:
        out.append(losses[start:start + len(cands)])
        start += len(cands)
    return out
