"""Instruction mixes in LLaVA's conversation format, as LLaVA-1.5 / LLaVA-NeXT publish them
(`llava_v1_5_mix665k.json`), and ShareGPT4V's captions.

    [{"id": 12 | "000000033471" | "i6IyJda_0",            (any type; not used)
      "image": "coco/train2017/000000033471.jpg",          (relative to image_root, sub-folders kept;
                                                             absent: a text-only ShareGPT record)
      "conversations": [{"from": "human", "value": "What is in it?\\n<image>"},   (<image> anywhere)
                        {"from": "gpt", "value": "..."}, ...]}, ...]

llava_mix       the records WITH an image, every exchange (multi-turn, joined the MiniGPT-v2 way:
                conversation.py's llava_conversation sample, the image placed before the first question
                as LLaVA's own preprocessing moves it there).
llava_mix_text  the records WITHOUT an image (text-only turns: no image, no placeholder).
                A batch is either all image or all text (the model encodes images per batch), so a mix
                file is two `datasets:` entries with the same storage; each builder says how many
                records it leaves to the other.
sharegpt4v      ShareGPT4V captions (`sharegpt4v_instruct_gpt4-vision_cap100k.json`,
                `share-captioner_coco_lcs_sam_1246k_1107.json`): the same record shape, first exchange
                only (llava_detail's sample: the question, the long caption verbatim); records
                `{"image", "caption"}` get a detailed-description prompt (cc_sbu_align's pool, or
                prompts_path).

The file is parsed at start-up; each record is checked only when the epoch reaches it, so a
malformed record (no conversations, a turn out of order, an `image` that is not a path) is skipped
and counted with its file and index, never the end of a run.
"""
from __future__ import annotations

import logging
import random

from tinygpt.common.registry import registry
from tinygpt.conversation.protocol import CONNECT_SYM, IMAGE_SLOT
from tinygpt.datasets.base import BadRecord, DataError, require
from tinygpt.datasets.conversation import _LlavaBuilder, _turns
from tinygpt.datasets.templates import ALIGNMENT, PROMPT_LINE

log = logging.getLogger(__name__)


def checked_turns(rec, path: str, index) -> list[tuple[str, str]]:
    """The (question, answer) exchanges of a LLaVA-format record (conversation.py's reading), or
    BadRecord: also for text that holds the turn separator, which would mis-pair the turns."""
    try:
        turns = _turns(rec, path, index)
    except DataError as e:
        raise BadRecord(str(e)) from None
    if any(CONNECT_SYM in text for pair in turns for text in pair):
        raise BadRecord(f"{path}: record {index} holds {CONNECT_SYM!r}, the separator multi-turn samples join turns with")
    return turns


def has_image(rec) -> bool:
    """A record that names an image (anything but a dict without `image` counts as one, so a
    malformed record is reported by the image builder rather than lost between the two)."""
    return not isinstance(rec, dict) or rec.get("image") is not None


class _MixBuilder(_LlavaBuilder):
    with_image = True  # which records of the file this builder serves ...
    partner: str | None = None  # ... leaving the others to this builder (None: serves them all)

    def build(self):
        self.root = self.image_root() if self.with_image else None
        records, other = [], 0
        for raw in self.json_records():
            if self.partner is None or has_image(raw[2]) == self.with_image:
                records.append(raw)
            else:
                other += 1
        if other:
            log.warning("datasets.%s: %d of %d records %s an image; they are %s's (an entry with the same "
                        "storage)", self.name, other, other + len(records), "lack" if self.with_image else "have",
                        self.partner)
        if self.with_image:
            self.probe_parsed(records, self.parse, self.locate)
        return self.dataset(records, self.sample)

    def parse(self, raw) -> tuple[tuple[str, ...], list[tuple[str, str]]]:
        """(path, index, record) -> the llava builders' record ((image names), [(question, answer)])."""
        path, index, rec = raw
        turns = checked_turns(rec, path, index)
        try:
            image = require(rec, "image", path, index, str) if self.with_image else ""
        except DataError as e:
            raise BadRecord(str(e)) from None
        return (image,), turns if self.multi_turn else turns[:1]

    def sample(self, raw, rng: random.Random) -> dict:
        return super().sample(self.parse(raw), rng)


@registry.register("dataset", "llava_mix")
class LlavaMixBuilder(_MixBuilder):
    """storage: llava_v1_5_mix665k.json (or any LLaVA-format list); image_root: the folder holding
    coco/, gqa/, ocr_vqa/, textvqa/, vg/ ...  Multi-turn; records with an image."""

    multi_turn = True
    partner = "llava_mix_text"


@registry.register("dataset", "llava_mix_text")
class LlavaMixTextBuilder(_MixBuilder):
    """storage: the same file as llava_mix; no image_root.  Multi-turn; records without an image."""

    multi_turn = True
    with_image = False
    uses_images = False
    partner = "llava_mix"

    def sample(self, raw, rng: random.Random) -> dict:
        _, turns = self.parse(raw)
        if any(mark in q for q, _ in turns for mark in ("<image>", IMAGE_SLOT)):
            raise BadRecord(f"{raw[0]}: record {raw[1]} has no 'image' but its conversation marks one")
        return {"instruction_input": CONNECT_SYM.join(q.strip() for q, _ in turns),
                "answer": CONNECT_SYM.join(a for _, a in turns), "connect_sym": CONNECT_SYM}


@registry.register("dataset", "sharegpt4v")
class ShareGPT4VBuilder(_MixBuilder):
    """storage: ShareGPT4V caption JSON; image_root: the folder its `image` paths start from.
    (A caption without an image is malformed here: there is nothing to describe.)"""

    default_prompts = ALIGNMENT
    prompt_slot = False
    instruction_line = PROMPT_LINE  # written as MiniGPT-4's alignment.txt lines, like cc_sbu_align's

    def build(self):
        self.pool = self.prompts()
        return super().build()

    def parse(self, raw):
        path, index, rec = raw
        if isinstance(rec, dict) and "conversations" not in rec and "caption" in rec:
            try:
                image = require(rec, "image", path, index, str)
                caption = require(rec, "caption", path, index, str)
            except DataError as e:
                raise BadRecord(str(e)) from None
            return (image,), [(None, caption)]
        return super().parse(raw)

    def sample(self, raw, rng: random.Random) -> dict:
        names, turns = self.parse(raw)
        if turns[0][0] is None:  # a bare caption: a drawn description prompt, the caption verbatim
            return {"image": self.image(self.locate((names, turns)), rng),
                    "instruction_input": rng.choice(self.pool), "answer": turns[0][1]}
        return _LlavaBuilder.sample(self, (names, turns), rng)
