"""A chat history: the turns asked and answered about one image, as the protocol's Dialogue.

A chat is laid out exactly as a multi-turn training sample (protocol.py): the image placeholder
opens the first question (or closes it, `image_after_question`), each later question follows the
previous answer's end marker behind the BOS text, and the pending question's template ends the
prompt.  So the ids a chat generates from are the ids training supervised, minus BOS and the answer.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from .protocol import Dialogue, PromptStyle


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
