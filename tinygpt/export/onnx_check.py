"""The `onnx` target's parity check: onnxruntime (tinygpt/onnx_runtime.py) against the torch model the
directory was exported from, on one image and question, in fp32: the visual tokens, the logits of the
prompt (the prefill: the step graph with an empty cache) and the greedy tokens of both decode loops
(every decode step goes through the graph's cache), and so the answer.

tests/models/test_onnx.py holds every family of tests/backbones.py to it; `python -m
benchmarks.backbones --only onnx` walks every family docs/backbones.md lists through it.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from .verify import TOLERANCE  # max |difference| of visual tokens and logits, fp32: the hf targets' too


@dataclass
class OnnxParity:
    visual_diff: float  # max |visual tokens difference|
    logits_diff: float  # max |logits difference|: the prompt's positions and every decode step x vocabulary
    torch_tokens: list[int]
    onnx_tokens: list[int]
    torch_answer: str
    onnx_answer: str
    tie_margin: Optional[float] = None  # where the tokens part: torch's top-2 logit margin there

    @property
    def tokens_agree(self) -> bool:
        """The same greedy tokens, or tokens that part only where torch's two best logits lie closer than
        TOLERANCE (an argmax tie of fp32 arithmetic: random test models have them)."""
        return self.torch_tokens == self.onnx_tokens or (self.tie_margin is not None and self.tie_margin < TOLERANCE)

    @property
    def ok(self) -> bool:
        return self.visual_diff < TOLERANCE and self.logits_diff < TOLERANCE and self.tokens_agree

    def summary(self) -> str:
        same = self.torch_tokens == self.onnx_tokens
        tokens = "equal" if same else f"part at a tie (margin {self.tie_margin:.1e})" if self.tokens_agree else (
            f"DIFFER (torch: {self.torch_tokens}, onnx: {self.onnx_tokens})")
        return (f"max |visual diff| {self.visual_diff:.1e}, max |logits diff| {self.logits_diff:.1e}, "
                f"greedy tokens {tokens} ({len(self.onnx_tokens)}), answer {self.onnx_answer!r}"
                + ("" if self.torch_answer == self.onnx_answer else f" (torch: {self.torch_answer!r})"))


@contextlib.contextmanager
def _generated_ids(llm, record: list):
    """`llm.generate` appends the ids it returns to `record` (the torch model's own decode loop,
    untouched: the tokens behind its answer)."""
    generate = llm.generate
    llm.generate = lambda *args, **kwargs: record.append(generate(*args, **kwargs)) or record[-1]
    try:
        yield
    finally:
        del llm.generate  # the instance attribute goes; the class's method is back


@torch.no_grad()
def onnx_parity(model, directory: str, image, question: str, max_new_tokens: int = 12) -> OnnxParity:
    """onnxruntime's directory `directory` against `model` (the torch inference model it was exported
    from, fp32) on one PIL image and question (the stage template is applied by both).  The logits are
    compared on the prompt and then along torch's greedy tokens: the graph stepping through its own
    cache against torch's forward over the whole sequence."""
    from ..onnx_runtime import OnnxModel
    from ..processors.build import eval_processor

    onnx = OnnxModel(directory)
    pixels = eval_processor(model.cfg)(image)[None]
    prompt = model.style.place_image(question)
    generated: list = []
    with _generated_ids(model.llm, generated):
        torch_answer = model.generate(pixels, [prompt], max_new_tokens=max_new_tokens)[0]
    tokens, forced = generated[0][0].tolist(), False
    if len(tokens) == max_new_tokens and tokens[-1] == model.llm.generation_config.forced_eos_token_id:
        # BART-family generation configs force EOS at the length limit: a stopping rule, not a prediction
        tokens, forced = tokens[:-1], True
    elif tokens and tokens[-1] == model.tokenizer.eos_token_id:
        tokens.pop()  # generate keeps the EOS it stopped at; greedy_ids does not
    visual = model.encode_images(pixels)
    embeds, mask, _ = model.embed_inputs([prompt], visual)
    follow = model.llm.get_input_embeddings()(torch.tensor([tokens], dtype=torch.long))
    whole = torch.ones(1, mask.shape[1] + len(tokens), dtype=mask.dtype)
    # Positions as generate gives them (from the mask): a family that counts its own from the
    # embeddings (RoBERTa's padding offset) would otherwise number them differently.
    logits = model.llm(inputs_embeds=torch.cat([embeds, follow], 1), attention_mask=whole,
                       position_ids=whole.cumsum(-1) - 1).logits[0]

    onnx_visual = onnx.visual_tokens(onnx.preprocess(image)[None])
    step_embeds, step_mask = onnx.prompt(onnx_visual, question)
    if not np.array_equal(step_mask, mask.numpy()):
        raise AssertionError(f"the ONNX prompt has {step_mask.shape[1]} positions, torch's {mask.shape[1]}")
    steps, past = [], onnx.empty_cache()
    for token in [None, *tokens]:
        if token is not None:
            step_embeds, step_mask = onnx.next_inputs(token, step_mask)
        step_logits, past = onnx.logits(step_embeds, step_mask, past)
        steps.append(step_logits[0])
    onnx_ids = onnx.greedy_ids(image, question, max_new_tokens)
    onnx_tokens = onnx_ids[:len(tokens)] if forced else onnx_ids
    parted = next((i for i, (a, b) in enumerate(zip(tokens, onnx_tokens)) if a != b), None)
    margin = None
    if parted is not None:
        top2 = logits[mask.shape[1] - 1 + parted].topk(2).values
        margin = float(top2[0] - top2[1])
    return OnnxParity(
        visual_diff=float(np.abs(onnx_visual - visual.numpy()).max()),
        logits_diff=float(np.abs(np.concatenate(steps) - logits.numpy()).max()),
        torch_tokens=tokens, onnx_tokens=onnx_tokens, torch_answer=torch_answer,
        onnx_answer=onnx.style.clean_answer(onnx.tokenizer.decode(onnx_ids)), tie_margin=margin)
