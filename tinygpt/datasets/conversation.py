"""Instruction and conversation data in LLaVA's format, plus the text-only unnatural instructions.

LLaVA-Instruct-150K (`detail_23k.json`, `complex_reasoning_77k.json`, `conversation_58k.json`) and
MiniGPT-v2's `multitask_conversation.json`: a list of
    {"id": "000000033471", "image": "000000033471.jpg",
     "conversations": [{"from": "human", "value": "<image>\\nWhat ...?"}, {"from": "gpt", "value": "..."}, ...]}
Images: COCO 2014 train, looked up as `image` then `COCO_train2014_<id>.jpg` under image_root.

Single-turn sets (llava_detail, llava_reason) emit the first exchange.  Multi-turn sets
(llava_conversation, multitask_conversation) emit every exchange, joined the MiniGPT-v2 way:
    instruction_input = "<Img><ImageHere></Img> q1 !@#q2 !@#q3 ", answer = "a1!@#a2!@#a3",
    connect_sym = "!@#"
with TinyGPT-V's spaces: the first question wrapped as `templates.INSTRUCTION` (trailing space), each
later one as written plus a space (`value + " "`, never stripped).
The protocol (conversation/protocol.py, `split_sample`) splits both on `connect_sym` and lays the
turns out as TinyGPT-V's `tokenize_conversation` does; the loss is on every a_i.  The image placeholder appears once, in the first question.

unnatural_instruction (MiniGPT-v2's filtered_unnatural_instruction.json, `[{"instances":
[{"instruction_with_input", "constraints", "output"}]}]`) has no image: its samples carry no "image"
key and no placeholder, so a batch of them has no "image" either.  The model must then skip the
vision tower and feed the wrapped instruction as plain text (what MiniGPT-v2 does); it must not
invent an image.
"""
from __future__ import annotations

import random

from tinygpt.common.registry import registry
from tinygpt.datasets.base import Builder, DataError, first_existing, require
from tinygpt.conversation.protocol import CONNECT_SYM
from tinygpt.datasets.templates import INSTRUCTION


def _turns(rec, path: str, index: int) -> list[tuple[str, str]]:
    conv = require(rec, "conversations", path, index, list)
    if len(conv) < 2:
        raise DataError(f"{path}: record {index} 'conversations' needs at least one human/gpt exchange")
    pairs = []
    for t in range(0, len(conv) - 1, 2):
        q, a = conv[t], conv[t + 1]
        for turn, who in ((q, "human"), (a, "gpt")):
            if not isinstance(turn, dict) or not isinstance(turn.get("value"), str):
                raise DataError(f"{path}: record {index} conversations entry is not {{'from', 'value'}}: {turn!r}")
            if turn.get("from") != who:
                raise DataError(f"{path}: record {index} conversations: expected a {who!r} turn, got {turn.get('from')!r}")
        pairs.append((q["value"], a["value"]))
    return pairs


class _LlavaBuilder(Builder):
    multi_turn = False

    def build(self):
        self.root = self.image_root()
        records = []
        for path, i, rec in self.json_records():
            image_id = str(require(rec, "id", path, i, (str, int)))
            names = (rec.get("image") if isinstance(rec.get("image"), str) else "",
                     f"COCO_train2014_{image_id}.jpg")
            turns = _turns(rec, path, i)
            records.append((names, turns if self.multi_turn else turns[:1]))
        self.probe_images(records, self.locate)
        return self.dataset(records, self.sample)

    def locate(self, rec) -> str:
        return first_existing(self.root, rec[0])

    @staticmethod
    def _first_question(text: str) -> str:
        # LLaVA marks the image with "<image>" and a newline on either side of it.
        return text.replace("<image>", "").replace("\n", "").strip()

    def sample(self, rec, rng: random.Random) -> dict:
        image = self.image(self.locate(rec), rng)
        turns = rec[1]
        if not self.multi_turn:
            question, answer = turns[0]
            return {"image": image, "instruction_input": INSTRUCTION.format(self.text(self._first_question(question))),
                    "answer": answer}
        questions = [INSTRUCTION.format(self._first_question(turns[0][0]))] + [q + " " for q, _ in turns[1:]]
        return {"image": image, "instruction_input": CONNECT_SYM.join(questions),
                "answer": CONNECT_SYM.join(a for _, a in turns), "connect_sym": CONNECT_SYM}


@registry.register("dataset", "llava_detail")
class LlavaDetailBuilder(_LlavaBuilder):
    """storage: detail_23k.json; image_root: COCO 2014 train images."""


@registry.register("dataset", "llava_reason")
class LlavaReasonBuilder(_LlavaBuilder):
    """storage: complex_reasoning_77k.json; image_root: COCO 2014 train images."""


@registry.register("dataset", "llava_conversation")
class LlavaConversationBuilder(_LlavaBuilder):
    """storage: conversation_58k.json; image_root: COCO 2014 train images.  Multi-turn."""

    multi_turn = True


@registry.register("dataset", "multitask_conversation")
class MultitaskConversationBuilder(_LlavaBuilder):
    """storage: multitask_conversation.json; image_root: COCO 2014 train images.  Multi-turn."""

    multi_turn = True


@registry.register("dataset", "unnatural_instruction")
class UnnaturalInstructionBuilder(Builder):
    """storage: filtered_unnatural_instruction.json; no images.  Sample: {"instruction_input", "answer"}."""

    uses_images = False

    def build(self):
        records = []
        for path, i, rec in self.json_records():
            instances = require(rec, "instances", path, i, list)
            if not instances:
                raise DataError(f"{path}: record {i} has an empty 'instances' list")
            inst = instances[0]
            instruction = require(inst, "instruction_with_input", path, f"{i}.instances[0]", str)
            constraints = inst.get("constraints")
            if constraints:
                instruction = f"{instruction} {constraints}"
            records.append((instruction, require(inst, "output", path, f"{i}.instances[0]", str)))
        return self.dataset(records, self.sample)

    def sample(self, rec, rng: random.Random) -> dict:
        return {"instruction_input": self.text(rec[0]), "answer": self.text(rec[1])}
