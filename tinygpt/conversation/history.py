"""A chat history: the turns asked and answered about one image, as the protocol's Dialogue.

A chat is laid out exactly as a multi-turn training sample (protocol.py): the image placeholder
opens the first question (or closes it, `image_after_question`), each later question follows the
previous answer's end marker behind the BOS text, and the pending question's template ends the
prompt.  So the ids a chat generates from are the ids training supervised, minus BOS and the answer.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from .protocol import Dialogue, PromptStyle, encode


@dataclass
class Conversation:
    """Turns of [question, answer-or-None] about at most one image."""

    style: PromptStyle
    turns: list[list] = field(default_factory=list)
    has_image: bool = False

    def copy(self) -> "Conversation":
        return dataclasses.replace(self, turns=[list(t) for t in self.turns])

    @property
    def pending(self) -> bool:
        """A question waits for its answer."""
        return bool(self.turns) and self.turns[-1][1] is None

    def add_question(self, text: str) -> None:
        if self.pending:
            raise ValueError("the previous question has not been answered yet")
        self.turns.append([text, None])

    def set_answer(self, text: str) -> None:
        if not self.pending:
            raise ValueError("no question is waiting for an answer")
        self.turns[-1][1] = text

    def drop_pending(self) -> None:
        if self.pending:
            self.turns.pop()

    def dialogue(self, first: int = 0) -> Dialogue:
        """The turns from `first` on (older ones dropped to fit the context); the image placeholder
        goes into the first kept question."""
        turns = [tuple(t) for t in self.turns[first:]]
        if self.has_image and turns:
            turns[0] = (self.style.place_image(turns[0][0]), turns[0][1])
        return Dialogue(tuple(turns), multi_turn=True, has_image=self.has_image)


def fit(conv: Conversation, tokenizer, n_query: int, max_new_tokens: int, max_positions: int) -> Dialogue:
    """`conv` as a Dialogue without its oldest turns (never the newest) so that its layout fits
    `style.max_context_len` and, with the answer, `max_positions`.

    Linear in the history: each turn's question (behind the BOS text) and answer are counted once,
    the length from a given first turn is the first question's condition plus a suffix sum, and only
    the conditions of the first turns tried are encoded (re-encoding the dialogue once per dropped
    turn made a 1000-turn request cost minutes).  The counts add up to `len(encode(...))` exactly:
    encode tokenises every question and answer on its own."""
    style, turns = conv.style, conv.turns
    bos = tokenizer.bos_token or ""

    def count(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False).input_ids) if text else 0

    # after[j]: tokens of turns j.. when they follow the first kept turn
    after = [0] * (len(turns) + 1)
    for j in range(len(turns) - 1, 0, -1):
        question, answer = turns[j]
        after[j] = after[j + 1] + count(bos + style.wrap(question)) + (count(answer + style.end_sym)
                                                                         if answer is not None else 0)
    for first in range(len(turns) - 1):
        question, answer = turns[first]
        head = Dialogue(((style.place_image(question) if conv.has_image else question, None),),
                        multi_turn=True, has_image=conv.has_image)
        length = (len(encode(style, tokenizer, head, n_query)) + after[first + 1]
                  + (count(answer + style.end_sym) if answer is not None else 0))
        if length <= style.max_context_len and length + max_new_tokens <= max_positions:
            return conv.dialogue(first)
    return conv.dialogue(max(len(turns) - 1, 0))
