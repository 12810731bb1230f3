"""THE text protocol of the TinyGPT-V family: how an image, instructions and answers become the
token ids, labels and attention mask the language model reads.  Training (the model's forward),
candidate ranking, generation, the chat, the HTTP API, the datasets and the evaluators all build
their sequences here; nothing else places an image, a template or an end marker.  Torch-free: a
layout is three lists of ints.

The rules are TinyGPT-V's (`minigpt4/models/minigpt_base.py`, checked against that code on the same
tiny weights; the facts are written out in tests/chat/test_protocol.py):

* **Condition** = the first instruction wrapped in the stage's template, its text tokenised in the
  segments around `<ImageHere>` (no special tokens) with the visual tokens in between.  With no
  instruction (caption pre-training, TinyGPT-V stages 1-2) the condition is the visual tokens alone.
  It is cut at `max_context_len` (never into the visual tokens).
* **Training** = BOS + condition + target, labels only on the target.
  - single turn: target = tokens(answer + end_sym)[:max_txt_len]; labels = target with every pad-id
    token masked; attention 1 everywhere (the original's `padding="longest"` tokenizer mask).
  - multi-turn (samples joined with `connect_sym`, and every chat): target = a1+end, BOS text +
    template(q2), a2+end, ... cut at max_txt_len; answers labelled as they are, questions masked;
    attention = (id != pad), so with Phi-2 (pad = BOS = EOS) the BOS in front of each later
    question is not attended to -- the original's `tokenize_conversation`, reproduced as is.
* **Generation** = the training sequence without BOS and without the last answer: the first text
  segment is tokenised with the tokenizer's own special tokens (`add_special_tokens=True`, which for
  Phi-2 adds nothing: the prompt starts with its text), later segments without; rows left-padded.
* The answer ends at the end marker the model was trained with: generation stops there and the
  text is cut there (`clean_answer`).

`PromptStyle` holds what a model was trained with (template, end marker, image placement, image
size, lengths); every `checkpoint_final` records it and loading reads it back (models/build.py).
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence

from ..common.errors import UserError

IMAGE_SLOT = "<ImageHere>"  # where the visual tokens go
IMAGE_TEXT = "<Img><ImageHere></Img>"  # how an instruction carries the image
CONNECT_SYM = "!@#"  # MiniGPT-v2's turn separator inside multi-turn `instruction_input`/`answer`
# MiniGPT-v2's task identifiers (TinyGPT-V stage 4), in the order of its instruction pools.
TASK_TAGS = ("[vqa]", "[refer]", "[identify]", "[grounding]", "[detection]", "[caption]")
IGNORE = -100  # label of a position that is not supervised
STYLE_KEY = "prompt_style"  # the safetensors metadata entry of checkpoint_final that records it
SLOT = "{}"  # where a template takes the instruction

# What a config that leaves the prompt style unset gets when no checkpoint records one
# (TinyGPT-V stage 3's `###Human: {} ###Assistant: ` and `###`).
DEFAULT_TEMPLATE = "###Human: {} ###Assistant: "
DEFAULT_END = "###"
# The templates TinyGPT-V trains with: stage 3 (MiniGPT-4's) and stage 4 (MiniGPT-v2's).
TEMPLATES = (DEFAULT_TEMPLATE, "[INST] {} [/INST]")

Turn = tuple[Optional[str], Optional[str]]  # (instruction or None, answer or None)


@dataclass(frozen=True)
class PromptStyle:
    """How a model was trained to read prompts.  `template` "" means no template (the stages that
    train without instructions); otherwise it holds exactly one `{}`."""

    template: str = DEFAULT_TEMPLATE
    end_sym: str = DEFAULT_END
    image: str = IMAGE_TEXT
    image_after_question: bool = False  # the tiny recipe's question-first order
    image_size: Optional[int] = None
    max_txt_len: int = 160
    max_context_len: int = 3800

    def __post_init__(self):
        check_template(self.template)
        if IMAGE_SLOT not in self.image:
            raise ValueError(f"the image placeholder {self.image!r} must contain {IMAGE_SLOT}")

    @classmethod
    def from_config(cls, model_cfg) -> "PromptStyle":
        """From a `ModelConfig`; fields it leaves unset (None) take the protocol defaults."""
        return cls(
            template=_or(model_cfg.prompt_template, DEFAULT_TEMPLATE),
            end_sym=_or(model_cfg.end_sym, DEFAULT_END),
            image=model_cfg.image_placeholder,
            image_after_question=bool(model_cfg.image_after_question),
            image_size=model_cfg.vision.image_size,
            max_txt_len=model_cfg.max_txt_len,
            max_context_len=model_cfg.max_context_len,
        )

    # ------------------------------------------------------------------ records
    RECORDED = ("template", "end_sym", "image", "image_after_question", "image_size")
    # Recorded field -> its `model.` config key (image_size is `model.vision.image_size`).
    CONFIG_KEYS = {"template": "prompt_template", "end_sym": "end_sym", "image": "image_placeholder",
                   "image_after_question": "image_after_question"}
    # The fields a config may leave unset (null) to take the checkpoint's.
    FROM_CHECKPOINT = ("template", "end_sym", "image_after_question")

    def record(self) -> str:
        """What a checkpoint stores (JSON text, a safetensors metadata value)."""
        return json.dumps({name: getattr(self, name) for name in self.RECORDED}, sort_keys=True)

    @staticmethod
    def read_record(text: str, where: str) -> dict:
        """The fields of a `record()`; a clear ValueError naming `where` when it is not one."""
        try:
            fields = json.loads(text)
        except ValueError:
            raise ValueError(f"{where}: prompt_style metadata is not JSON: {text[:80]!r}") from None
        if not isinstance(fields, dict) or not set(fields) <= set(PromptStyle.RECORDED):
            raise ValueError(f"{where}: prompt_style metadata must be an object with keys from "
                             f"{', '.join(PromptStyle.RECORDED)}; got {text[:80]!r}")
        return fields

    def markup(self) -> tuple[str, ...]:
        """The strings that are structure, not text, in this style's prompts: the image slot, the
        pieces of the image placeholder and of the template around their slots, the end marker."""
        pieces = (IMAGE_SLOT, *self.image.split(IMAGE_SLOT), *self.template.split(SLOT), self.end_sym)
        return tuple(sorted({p.strip() for p in pieces if p.strip()}))

    @property
    def instruct(self) -> bool:
        """`[INST]`-style templates: the multi-task stage that knows task tags and boxes."""
        return self.template.lstrip().startswith("[INST]")

    def describe(self) -> str:
        where = "after" if self.image_after_question else "before"
        return (f"template {self.template!r}, end marker {self.end_sym!r}, image {where} the question"
                + (f", {self.image_size} px" if self.image_size else ""))

    # ------------------------------------------------------------------ text
    def wrap(self, instruction: str) -> str:
        """One instruction in the template (the instruction itself when there is no template)."""
        return self.template.replace(SLOT, instruction, 1) if self.template else instruction

    def place_image(self, question: str) -> str:
        """A question with the image placeholder before it, or after it with `image_after_question`."""
        return place_image(question, self.image, after=self.image_after_question)

    def clean_answer(self, text: str) -> str:
        """Generated text -> the answer: cut at the end marker, a leaked role prefix dropped (as
        TinyGPT-V's chat and evaluation do), stripped."""
        if self.end_sym:
            text = text.split(self.end_sym)[0]
        return text.split("Assistant:")[-1].strip()

    def render(self, dialogue: "Dialogue", bos_text: str = "") -> str:
        """The text of a dialogue's layout (training order, without the leading BOS); for display and
        for counting.  Generation prompts end with the last question's template."""
        parts = []
        for i, (question, answer) in enumerate(dialogue.turns):
            if i:
                parts.append(bos_text + self.wrap(question or ""))
            elif question is not None:
                parts.append(self.wrap(question))
            elif dialogue.has_image:
                parts.append(IMAGE_SLOT)
            if answer is not None:
                parts.append(answer + self.end_sym)
        return "".join(parts)

    def replace(self, **changes) -> "PromptStyle":
        return dataclasses.replace(self, **changes)


def place_image(question: str, image: str = IMAGE_TEXT, after: bool = False) -> str:
    """`<Img><ImageHere></Img> question` (or `question <Img>...` with `after`), joined by a space;
    a question that already places the image is kept (stripped)."""
    question = question.strip()
    if IMAGE_SLOT in question:
        return question
    pair = (question, image) if after else (image, question)
    return " ".join(p for p in pair if p)


class UserTextError(UserError):
    """A user's text holds protocol markup (an image slot, a template's role marker, the end marker
    or a tokenizer's special token), which would be read as structure instead of text."""


def check_user_text(style: PromptStyle, text: str, what: str = "the question", specials: Iterable[str] = ()) -> str:
    """`text` as typed by a user, refused (UserTextError naming the marker) when it holds any of the
    style's markup or `specials` (the tokenizer's special tokens, which it would encode as such):
    placed as is, a typed `<ImageHere>` would become a second image slot and a typed end marker or
    role marker a forged turn.  A user's text is text, never structure."""
    for marker in (*style.markup(), *(s for s in specials if s)):
        if marker in text:
            raise UserTextError(f"{what} contains {marker!r}, which this model's prompts use as markup "
                                f"(image slot, role or end marker); remove it")
    return text


def check_template(template: str) -> None:
    if template and template.count(SLOT) != 1:
        raise ValueError(f"a prompt template must contain exactly one '{{}}' for the instruction "
                         f"(or be empty for none); got {template!r}")


def _or(value, default):
    return default if value is None else value


@dataclass(frozen=True)
class Dialogue:
    """One sequence's content: turns of (instruction, answer).  The first instruction may be None
    (no instruction: caption pre-training); only the last answer may be None (the one to generate).
    `multi_turn` selects the original's conversation rules (connect_sym samples and chats);
    `has_image` says whether visual tokens are spliced in at the first `<ImageHere>`."""

    turns: tuple[Turn, ...]
    multi_turn: bool = False
    has_image: bool = True

    def __post_init__(self):
        if not self.turns:
            raise ValueError("a dialogue needs at least one turn")
        for i, (question, answer) in enumerate(self.turns):
            if question is None and i:
                raise ValueError(f"turn {i} has no question; only the first may have none (no instruction)")
            if answer is None and i != len(self.turns) - 1:
                raise ValueError(f"turn {i} has no answer; only the last turn may be unanswered")

    @classmethod
    def single(cls, instruction: Optional[str], answer: Optional[str] = None, has_image: bool = True) -> "Dialogue":
        return cls(((instruction, answer),), has_image=has_image)

    @property
    def generating(self) -> bool:
        return self.turns[-1][1] is None


def sample_dialogues(samples: dict) -> list[Dialogue]:
    """A training batch in TinyGPT-V's sample format -> one Dialogue per sample.

    {"answer": [...], "instruction_input": [...] (absent: no instruction), "connect_sym": [...]
    (multi-turn: questions and answers joined with it), "image" (absent: text only)}.
    """
    answers = samples["answer"]
    instructions = samples.get("instruction_input") or [None] * len(answers)
    symbols = samples.get("connect_sym") or [None] * len(answers)
    has_image = "image" in samples or "query_features" in samples
    return [split_sample(q, a, sym, has_image) for q, a, sym in zip(instructions, answers, symbols)]


def split_sample(instruction: Optional[str], answer: str, connect_sym: Optional[str] = None,
                 has_image: bool = True) -> Dialogue:
    """One sample -> Dialogue; a multi-turn sample's questions and answers must pair up."""
    if not connect_sym:
        return Dialogue.single(instruction, answer, has_image)
    questions, answers = (instruction or "").split(connect_sym), answer.split(connect_sym)
    if len(questions) != len(answers):
        raise ValueError(f"multi-turn sample has {len(questions)} questions but {len(answers)} answers "
                         f"(joined with {connect_sym!r})")
    return Dialogue(tuple(zip(questions, answers)), multi_turn=True, has_image=has_image)


# ----------------------------------------------------------------------------- ids
@dataclass
class Layout:
    """One row: ids, labels (IGNORE where unsupervised), attention (0/1), and where the `n_query`
    visual-token slots start (-1: none).  The slot positions hold the pad id in `ids`."""

    ids: list[int]
    labels: list[int]
    attention: list[int]
    image_at: int = -1

    def __len__(self) -> int:
        return len(self.ids)


def encode(style: PromptStyle, tokenizer, dialogue: Dialogue, n_query: int) -> Layout:
    """The token layout of `dialogue` (training when every answer is given, generation when the
    last is None) with `n_query` visual-token slots (0: text only).  `tokenizer` is a Hugging Face
    tokenizer (bos/pad ids and text, `__call__` with add_special_tokens)."""
    generating = dialogue.generating
    pad = tokenizer.pad_token_id
    ids, labels, attention = [], [], []
    if not generating and tokenizer.bos_token_id is not None:
        ids, labels, attention = [tokenizer.bos_token_id], [IGNORE], [1]

    first_question, first_answer = dialogue.turns[0]
    condition, image_at = _condition(style, tokenizer, first_question,
                                     n_query if dialogue.has_image else 0, specials=generating)
    if image_at >= 0:
        image_at += len(ids)
    ids += condition
    labels += [IGNORE] * len(condition)
    attention += [1] * len(condition)

    if not dialogue.multi_turn:
        if first_answer is not None:
            target = _tokens(tokenizer, first_answer + style.end_sym)[: style.max_txt_len]
            ids += target
            labels += [IGNORE if t == pad else t for t in target]
            attention += [1] * len(target)
        return Layout(ids, labels, attention, image_at)

    tail, tail_labels = [], []
    bos_text = tokenizer.bos_token or ""
    for i, (question, answer) in enumerate(dialogue.turns):
        if i:
            q = _tokens(tokenizer, bos_text + style.wrap(question))
            tail += q
            tail_labels += [IGNORE] * len(q)
        if answer is not None:
            a = _tokens(tokenizer, answer + style.end_sym)
            tail += a
            tail_labels += a
    if not generating:  # a chat fits its context by dropping old turns instead (Chat)
        tail, tail_labels = tail[: style.max_txt_len], tail_labels[: style.max_txt_len]
    ids += tail
    labels += tail_labels
    attention += [int(t != pad) for t in tail]
    return Layout(ids, labels, attention, image_at)


def encode_all(style: PromptStyle, tokenizer, dialogues: Sequence[Dialogue], n_query: int) -> list[Layout]:
    """The layout of each dialogue, `n_query` visual slots where it has an image: what the model's
    training step and the data dry run (`python -m tinygpt.datasets check`) both lay out."""
    return [encode(style, tokenizer, d, n_query if d.has_image else 0) for d in dialogues]


def _tokens(tokenizer, text: str, specials: bool = False) -> list[int]:
    if not text and not specials:
        return []
    return list(tokenizer(text, add_special_tokens=specials).input_ids)


def _condition(style: PromptStyle, tokenizer, question: Optional[str], n_query: int,
               specials: bool) -> tuple[list[int], int]:
    """(ids of the condition, start of the visual slots or -1).  Text segments are tokenised
    separately around `<ImageHere>` as the original does; `specials` applies to the first one."""
    pad = tokenizer.pad_token_id
    if question is None:  # no instruction: the visual tokens alone
        return [pad] * n_query, (0 if n_query else -1)
    text = style.wrap(question)
    if not n_query:
        if IMAGE_SLOT in text:
            raise ValueError(f"a text-only sample carries the image placeholder: {question!r}")
        return _tokens(tokenizer, text, specials), -1
    before, slot, after = text.partition(IMAGE_SLOT)
    if not slot:
        raise ValueError(f"an instruction about an image must contain {IMAGE_SLOT} (e.g. {style.image!r}); "
                         f"got {question!r}")
    if IMAGE_SLOT in after:
        raise ValueError(f"one image per sequence, but the instruction has several {IMAGE_SLOT}: {question!r}")
    head = _tokens(tokenizer, before, specials)
    ids = head + [pad] * n_query + _tokens(tokenizer, after)
    # The original cuts the condition at max_context_len; we never cut into the visual tokens.
    return ids[: max(style.max_context_len, len(head) + n_query)], len(head)


def pad_rows(rows: Sequence[Layout], pad_id: int, left: bool) -> tuple[list[list[int]], list[list[int]],
                                                                         list[list[int]], list[int]]:
    """Rows padded to one width (left for generation, right for training): (ids, labels, attention,
    image starts shifted by the padding, -1 kept)."""
    width = max(len(r) for r in rows)
    ids, labels, attention, starts = [], [], [], []
    for r in rows:
        fill = width - len(r)
        if left:
            ids.append([pad_id] * fill + r.ids)
            labels.append([IGNORE] * fill + r.labels)
            attention.append([0] * fill + r.attention)
            starts.append(r.image_at + fill if r.image_at >= 0 else -1)
        else:
            ids.append(r.ids + [pad_id] * fill)
            labels.append(r.labels + [IGNORE] * fill)
            attention.append(r.attention + [0] * fill)
            starts.append(r.image_at)
    return ids, labels, attention, starts
