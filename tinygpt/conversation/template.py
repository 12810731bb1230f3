"""Conversation templates: how a chat history becomes the one prompt string the model reads.

The template comes from the model config (`model.prompt_template`, `model.end_sym`,
`model.image_placeholder`), never from a stage number:

    stages 1-3   prompt_template "###Human: {} ###Assistant: "   end_sym "###"
    stage 4      prompt_template "[INST] {} [/INST]"              end_sym "<|endoftext|>"

One turn renders exactly as training wrapped it (`TinyGPTV.wrap`).  Several turns render the way
TinyGPT-V's chat does: each turn is `user + question + assistant + answer`, finished answers are
followed by the end marker, and the image placeholder opens the first question, joined to it by a
space (or closes it: `model.image_after_question`, the tiny recipe's order).  A template that
already begins with its end marker (`###Human: ` after an answer that ends in `###`) does not
repeat it:

    "###Human: <Img><ImageHere></Img> q1 ###Assistant: a1###Human: q2 ###Assistant: "
    "[INST] <Img><ImageHere></Img> q1 [/INST]a1<|endoftext|>[INST] q2 [/INST]"
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Optional, Sequence

SLOT = "{}"


@dataclass(frozen=True)
class Template:
    """One conversation format: `user + question + assistant + answer + end ...`."""

    user: str  # text before a question: "###Human: " / "[INST] "
    assistant: str  # text between a question and its answer: " ###Assistant: " / " [/INST]"
    end: str  # end marker generated after each answer: "###" / "<|endoftext|>"
    image: str = "<Img><ImageHere></Img>"
    image_after_question: bool = False  # the tiny recipe's question-first order

    @classmethod
    def from_config(cls, model_cfg) -> "Template":
        """From a `ModelConfig` (or anything with prompt_template, end_sym, image_placeholder)."""
        text = model_cfg.prompt_template
        if text.count(SLOT) != 1:
            raise ValueError(f"model.prompt_template must contain exactly one '{{}}' for the "
                             f"instruction; got {text!r}")
        user, assistant = text.split(SLOT)
        return cls(user=user, assistant=assistant, end=model_cfg.end_sym, image=model_cfg.image_placeholder,
                   image_after_question=getattr(model_cfg, "image_after_question", False))

    @property
    def separator(self) -> str:
        """What follows a finished answer before the next question."""
        if self.end and self.user.startswith(self.end):
            return ""
        return self.end

    @property
    def instruct(self) -> bool:
        """True for `[INST]`-style templates, the multi-task stage that knows task tags and boxes."""
        return self.user.lstrip().startswith("[INST]")

    def wrap(self, instruction: str) -> str:
        """One instruction in the template (equal to `model.cfg.prompt_template.format(instruction)`)."""
        return self.user + instruction + self.assistant

    def render(self, turns: Sequence[tuple[str, Optional[str]]], image: bool = True) -> str:
        """The prompt for `turns` = [(question, answer), ...]; only the last answer may be None
        (the one to generate).  `image` puts the placeholder in front of the first question (after
        it with `image_after_question`)."""
        parts = []
        last = len(turns) - 1
        for i, (question, answer) in enumerate(turns):
            if i and parts:
                parts.append(self.separator)
            if i == 0 and image:
                pair = (question, self.image) if self.image_after_question else (self.image, question)
                question = " ".join(p for p in pair if p)
            parts.append(self.wrap(question))
            if answer is not None:
                parts.append(answer)
            elif i != last:
                raise ValueError(f"turn {i} has no answer; only the last turn may be unanswered")
        return "".join(parts)


@dataclass
class Conversation:
    """A chat history: turns of [question, answer-or-None] about at most one image."""

    template: Template
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

    def prompt(self, first: int = 0) -> str:
        """The prompt from turn `first` on (older turns dropped to fit the context); the image
        placeholder always opens the first rendered question."""
        return self.template.render([tuple(t) for t in self.turns[first:]], image=self.has_image)
