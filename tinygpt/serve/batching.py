"""The running batch of the serving scheduler: many answers decoded together, each row with its own
prompt, sampling options, seed and token budget (iteration-level batching: rows join after a
batched prefill and leave when they finish, at decode-step boundaries).

The LLM's KV cache holds every row left-padded to one length.  A joining group is prefilled on its
own (its prompts left-padded together, its images encoded together); then its cache and the running
one are left-padded to the longer of the two and stacked.  A finished row is cut out, and leading
columns no row attends any more are trimmed.  Positions follow transformers' `generate`: the cumsum
of the attention mask at prefill (masked tokens, such as the BOS text between turns, do not advance
them), then +1 per generated token.  Scores go through transformers' logits processors (repetition
penalty on the generated tokens, the minimum length, temperature, top-p), so a greedy row gets the
answer `TinyGPTV.generate` gives its prompt alone (tests/chat/test_scheduler.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import torch
from transformers import TemperatureLogitsWarper, TopPLogitsWarper

from ..conversation.chat import GenerationOptions
from ..conversation.protocol import Layout
from ..models.llm import cache_keyword
from .visual_cache import VisualCache


@dataclass(eq=False)  # rows are compared by identity (a tensor has no truth value)
class Row:
    """One answer being generated: its prompt and options in, its tokens out."""

    image: torch.Tensor  # [3, S, S]: the model's input (never the decoded picture)
    layout: Layout  # the prompt's token layout (protocol.encode), made off the model thread
    options: GenerationOptions
    dialogue: Any = None  # the fitted Dialogue (beam search runs it through TinyGPTV.generate)
    owner: Any = None  # the scheduler's request this row answers, and which of its choices
    index: int = 0
    tokens: list[int] = field(default_factory=list)
    finished: bool = False
    generator: Optional[torch.Generator] = None  # sampled rows: their own RNG (a seed repeats the row)

    def __post_init__(self):
        if self.options.temperature > 0:
            self.generator = torch.Generator()
            if self.options.seed is None:
                self.generator.seed()
            else:
                self.generator.manual_seed(self.options.seed)


class DecodeBatch:
    """The rows being decoded and their KV cache.  Only the scheduler's model thread touches it."""

    def __init__(self, model, visual_cache: Optional[VisualCache] = None):
        self.model = model
        self.visual_cache = visual_cache if visual_cache is not None else VisualCache(0)
        self.llm = model.llm
        self.eos = model.tokenizer.eos_token_id
        self._cache_key = cache_keyword(self.llm)
        self.rows: list[Row] = []
        self.cache = None  # the LLM's DynamicCache, [B, H, T, D] per layer
        self.mask: Optional[torch.Tensor] = None  # [B, T] 1 where a row attends
        self.positions: Optional[torch.Tensor] = None  # [B] the position of each row's next token
        self.seen: Optional[torch.Tensor] = None  # [B, V] tokens each row generated (repetition penalty)

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def device(self) -> torch.device:
        return self.llm.device

    # ------------------------------------------------------------------ joining
    @torch.no_grad()
    def prefill(self, rows: list[Row]) -> list[int]:
        """Prefill `rows` together (the images the visual cache does not hold encoded as one batch,
        each distinct image once) and add them to the batch; -> each new row's first token."""
        visual = self.visual([row.image for row in rows])
        embeds, mask, _ = self.model.embed_layouts([row.layout for row in rows], visual, left=True)
        positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)
        out = self.llm(inputs_embeds=embeds, attention_mask=mask, position_ids=positions, use_cache=True,
                       logits_to_keep=1)
        cache = out.cache if self._cache_key == "cache" else out.past_key_values
        self._join(rows, cache, mask, positions[:, -1] + 1)
        return self._pick(out.logits[:, -1], slice(len(self.rows) - len(rows), len(self.rows)))

    @torch.no_grad()
    def visual(self, images: list[torch.Tensor]) -> torch.Tensor:
        """Visual tokens [len(images), Q, D] of `images` [3, S, S]: those the visual cache holds
        from it, the others encoded together (each distinct image once)."""
        return self.visual_cache.encode(images, lambda batch: self.model.encode_images(batch.to(self.device)))

    def _join(self, rows: list[Row], cache, mask: torch.Tensor, positions: torch.Tensor) -> None:
        seen = torch.zeros(len(rows), self.llm.config.vocab_size, dtype=torch.bool, device=mask.device)
        if not self.rows:
            self.rows, self.cache, self.mask, self.positions, self.seen = list(rows), cache, mask, positions, seen
            return
        width = max(self.mask.shape[1], mask.shape[1])
        for old, new in zip(self.cache.layers, cache.layers):
            old.keys = torch.cat([_left_pad(old.keys, width), _left_pad(new.keys, width)])
            old.values = torch.cat([_left_pad(old.values, width), _left_pad(new.values, width)])
        self.mask = torch.cat([_left_pad(self.mask, width), _left_pad(mask, width)])
        self.positions = torch.cat([self.positions, positions])
        self.seen = torch.cat([self.seen, seen])
        self.rows += rows

    # ------------------------------------------------------------------ decoding
    @torch.no_grad()
    def step(self, last: list[int]) -> list[int]:
        """Feed each row's last token; -> each row's next token."""
        ids = torch.tensor(last, device=self.device)[:, None]
        self.mask = torch.cat([self.mask, self.mask.new_ones(len(self.rows), 1)], dim=1)
        out = self.llm(input_ids=ids, attention_mask=self.mask, position_ids=self.positions[:, None],
                       use_cache=True, logits_to_keep=1, **{self._cache_key: self.cache})
        self.positions = self.positions + 1
        return self._pick(out.logits[:, -1], slice(0, len(self.rows)))

    def _pick(self, logits: torch.Tensor, rows: slice) -> list[int]:
        """The next token of each row in `rows` from its logits [b, V], with that row's options."""
        scores = logits.float()
        seen = self.seen[rows]
        for penalty in {r.options.repetition_penalty for r in self.rows[rows]} - {1.0}:
            # transformers' RepetitionPenaltyLogitsProcessor, on the tokens each row generated (with
            # inputs_embeds generate penalises no prompt token either); a Python-float penalty, as
            # there, so the rounding is the same.
            which = torch.tensor([r.options.repetition_penalty == penalty for r in self.rows[rows]])[:, None]
            penalised = torch.where(scores < 0, scores * penalty, scores / penalty)
            scores = torch.where(seen & which.to(seen.device), penalised, scores)
        tokens = []
        for i, row in enumerate(self.rows[rows]):
            s = scores[i:i + 1]
            if len(row.tokens) < row.options.min_new_tokens and self.eos is not None:
                s = s.clone()
                s[:, self.eos] = -float("inf")
            if row.generator is None:
                token = int(s.argmax(-1))
            else:
                s = TemperatureLogitsWarper(row.options.temperature)(None, s)
                s = TopPLogitsWarper(row.options.top_p)(None, s)
                token = int(torch.multinomial(s.softmax(-1)[0], 1, generator=row.generator))
            tokens.append(token)
        index = torch.arange(rows.start, rows.stop, device=self.seen.device)
        self.seen[index, torch.tensor(tokens, device=self.seen.device)] = True
        return tokens

    # ------------------------------------------------------------------ leaving
    def keep(self, keep: list[int]) -> None:
        """Keep only the rows at indices `keep` (the others finished or were cancelled)."""
        if len(keep) == len(self.rows):
            return
        if not keep:
            self.rows, self.cache, self.mask, self.positions, self.seen = [], None, None, None, None
            return
        index = torch.tensor(keep, device=self.mask.device)
        mask = self.mask[index]
        start = int((mask.sum(0) > 0).nonzero()[0])  # leading columns no kept row attends
        for layer in self.cache.layers:
            layer.keys = layer.keys[index, :, start:]
            layer.values = layer.values[index, :, start:]
        self.mask = mask[:, start:]
        self.positions, self.seen = self.positions[index], self.seen[index]
        self.rows = [self.rows[i] for i in keep]


def _left_pad(x: torch.Tensor, width: int) -> torch.Tensor:
    """x [B, T] or [B, H, T, D] -> zeros in front up to `width` along T."""
    if x.dim() == 2:
        return torch.nn.functional.pad(x, (width - x.shape[1], 0))
    return torch.nn.functional.pad(x, (0, 0, width - x.shape[2], 0))
