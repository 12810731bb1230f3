"""A `Chat`: one image, a multi-turn conversation about it, blocking or streamed answers.

    chat = Chat(model, image_processor, device)
    chat.upload_image(pil_image)          # starts a new conversation about this image
    chat.ask("what colour is the circle?")
    chat.answer(max_new_tokens=50)        # -> "red"            (greedy: temperature 0)
    chat.ask("and the square?")
    for piece in chat.stream(temperature=0.7):
        print(piece, end="")              # the answer as it is generated

The demo, the HTTP API, the terminal chat and evaluators share this object.  Many Chats may share
one model: `chat.session()` is a new, empty conversation on the same model (one per browser tab or
API request).  Every Chat on a model shares that model's generation lock, so concurrent requests
queue for the model instead of interleaving; each session's own history has its own lock.
"""
from __future__ import annotations

import dataclasses
import logging
import threading
import weakref
from dataclasses import dataclass
from typing import Callable, Iterator, Optional

import torch
from PIL import ImageOps
from transformers import TextIteratorStreamer

from ..common.errors import UserError
from ..common.numbers import number_problem, shown
from .history import Conversation, fit
from .protocol import Dialogue, Layout, check_user_text, encode

log = logging.getLogger(__name__)

DISPLAY_SIDE = 1024  # the largest side of the image a Chat keeps for display


# ----------------------------------------------------------------------------- options
class GenerationOptionsError(UserError):
    """A generation option is not a usable number (NaN temperature, a seed beyond 64 bits, ...)."""


@dataclass(frozen=True)
class GenerationOptions:
    """Decoding settings for one answer.  temperature 0 means greedy decoding; above 0 samples
    with that temperature and nucleus `top_p`."""

    max_new_tokens: int = 300
    num_beams: int = 1
    temperature: float = 0.0
    top_p: float = 0.9
    repetition_penalty: float = 1.05  # TinyGPT-V's chat default
    min_new_tokens: int = 1
    seed: Optional[int] = None  # seeds sampling, under the model lock (repeatable answers)

    def replace(self, **changes) -> "GenerationOptions":
        """A copy with `changes` applied; unknown names raise TypeError, bad values ValueError."""
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise TypeError(f"unknown generation option(s): {', '.join(unknown)}; "
                            f"known: {', '.join(sorted(known))}")
        out = dataclasses.replace(self, **changes)
        out.check()
        return out

    def check(self) -> None:
        """Every option a number of its type (not a boolean), finite and in range; a seed torch can
        take.  ValueError (GenerationOptionsError, a UserError) listing every problem."""
        problems = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None and f.name == "seed":
                continue
            integer = f.type in ("int", "Optional[int]")
            problem = "it must be an integer" if integer and not isinstance(value, int) else (
                number_problem(value, 0 if f.name == "seed" else None))
            if problem:
                problems.append(f"{f.name} is {shown(value)}; {problem}")
        if problems:
            raise GenerationOptionsError("; ".join(problems))
        if self.max_new_tokens < 1:
            problems.append(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.num_beams < 1:
            problems.append(f"num_beams must be >= 1, got {self.num_beams}")
        if self.temperature < 0:
            problems.append(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            problems.append(f"top_p must be in (0, 1], got {self.top_p}")
        if self.repetition_penalty <= 0:
            problems.append(f"repetition_penalty must be > 0, got {self.repetition_penalty}")
        if not 0 <= self.min_new_tokens <= self.max_new_tokens:
            problems.append(f"min_new_tokens must be in [0, max_new_tokens], got {self.min_new_tokens}")
        if problems:
            raise GenerationOptionsError("; ".join(problems))

    def generate_kwargs(self) -> dict:
        """Keyword arguments for `TinyGPTV.generate` (the seed is applied by the Chat)."""
        return dict(max_new_tokens=self.max_new_tokens, num_beams=self.num_beams,
                    do_sample=self.temperature > 0, temperature=self.temperature or 1.0,
                    top_p=self.top_p, repetition_penalty=self.repetition_penalty,
                    min_new_tokens=self.min_new_tokens)


def _seed(opts: GenerationOptions) -> None:
    # Called with the model lock held: no other generation draws from the RNG in between.
    if opts.seed is not None:
        torch.manual_seed(opts.seed)


# ----------------------------------------------------------------------------- locks
# One generation lock per model object, shared by every Chat built on it (a weak map, so a
# discarded model does not stay alive through its lock).
_MODEL_LOCKS: "weakref.WeakKeyDictionary[torch.nn.Module, threading.Lock]" = weakref.WeakKeyDictionary()
_MODEL_LOCKS_GUARD = threading.Lock()


def model_lock(model: torch.nn.Module) -> threading.Lock:
    """The lock that serialises generation on `model`.  A plain Lock (not an RLock) on purpose:
    a streamed answer takes it in the caller's thread and the generation thread releases it."""
    with _MODEL_LOCKS_GUARD:
        lock = _MODEL_LOCKS.get(model)
        if lock is None:
            lock = _MODEL_LOCKS[model] = threading.Lock()
        return lock


# ----------------------------------------------------------------------------- streaming
class _Cancelled(Exception):
    """Raised inside the generation thread when the reader of a stream went away."""


class _Streamer(TextIteratorStreamer):
    """TextIteratorStreamer that can stop a running `generate` (its next `put` raises)."""

    def __init__(self, tokenizer):
        super().__init__(tokenizer, skip_prompt=True, skip_special_tokens=True)
        self.cancelled = threading.Event()
        self.text = ""  # everything decoded so far

    def put(self, value):
        if self.cancelled.is_set():
            raise _Cancelled()
        super().put(value)

    def on_finalized_text(self, text: str, stream_end: bool = False):
        self.text += text
        super().on_finalized_text(text, stream_end)


class VisibleText:
    """Streamed raw text -> pieces of the visible answer: they end at the end marker, never show a
    tail that may be the start of one (`#`, `##` before `###`) and join to the stripped answer.

        v = VisibleText("###"); v.feed(" re") -> "re"; v.feed("d#") -> "d"; v.feed("##Hu") -> ""
    """

    def __init__(self, end: str):
        self.end = end
        self.raw = ""
        self.sent = 0
        self.done = False

    def feed(self, piece: str) -> str:
        if self.done:
            return ""
        self.raw += piece
        text = self.raw.lstrip()
        if self.end and self.end in text:
            text = text.split(self.end, 1)[0]
            self.done = True
        else:
            text = text[:len(text) - self._partial_end(text)]
        # Trailing whitespace waits until more text follows, so the pieces join to the stripped answer.
        text = text.rstrip()
        delta, self.sent = text[self.sent:], max(self.sent, len(text))
        return delta

    def flush(self) -> str:
        """The held-back tail once the stream is over (it was not an end marker after all)."""
        if self.done:
            return ""
        self.done = True
        return self.raw.strip()[self.sent:]

    def _partial_end(self, text: str) -> int:
        for k in range(min(len(self.end) - 1, len(text)), 0, -1):
            if text.endswith(self.end[:k]):
                return k
        return 0


# ----------------------------------------------------------------------------- chat
class Chat:
    """A conversation with a TinyGPT-V model about one image (see the module docstring).

    `image_processor` maps an RGB PIL image to a [3, S, S] tensor (the eval transform);
    `device` is where image tensors go (the model's device); `defaults` are the generation options
    that `answer`/`stream` keyword arguments override.
    """

    def __init__(self, model, image_processor: Callable, device: torch.device | str, *,
                 defaults: Optional[GenerationOptions] = None):
        self.model = model
        self.image_processor = image_processor
        self.device = torch.device(device)
        self.defaults = defaults or GenerationOptions()
        self.defaults.check()
        self.style = model.style  # what the model was trained with (protocol.PromptStyle)
        self._model_lock = model_lock(model)
        self._state_lock = threading.Lock()
        self._conversation = Conversation(self.style)
        self._image: Optional[torch.Tensor] = None  # [1, 3, S, S] on self.device
        self._visual: Optional[torch.Tensor] = None  # its visual tokens, encoded at the first answer
        self.image = None  # the uploaded PIL image (RGB), for drawing boxes on it

    def session(self) -> "Chat":
        """A new empty conversation on the same model, processor, device and defaults."""
        return Chat(self.model, self.image_processor, self.device, defaults=self.defaults)

    # ------------------------------------------------------------------ state
    @property
    def history(self) -> list[tuple[str, Optional[str]]]:
        """[(question, answer-or-None), ...] as asked (without the image placeholder)."""
        with self._state_lock:
            return [tuple(t) for t in self._conversation.turns]

    @property
    def busy(self) -> bool:
        """Some Chat on this model is generating right now."""
        return self._model_lock.locked()

    def prompt(self) -> str:
        """The text the next answer would be generated from (after fitting the context), with
        `<ImageHere>` where the visual tokens go."""
        with self._state_lock:
            dialogue = self._fitted(self.defaults.max_new_tokens)
        return self.style.render(dialogue, self.model.tokenizer.bos_token or "")

    def upload_image(self, image) -> None:
        """Start a new conversation about `image` (a PIL image; converted to RGB).  TinyGPT-V's
        model sees one image per conversation, so a new image forgets the previous history.
        The model's input is computed from the full image; what is kept is that tensor and a
        thumbnail of at most DISPLAY_SIDE px for drawing boxes (their coordinates are relative), so
        a session never holds a full-resolution image."""
        tensor = self.image_input(image)
        # The display copy is made from a resize, never from a full-size copy of the image.
        shown = ImageOps.contain(image, (DISPLAY_SIDE, DISPLAY_SIDE)) if max(image.size) > DISPLAY_SIDE else image
        self._new_conversation(tensor, shown.convert("RGB"))

    def image_input(self, image) -> torch.Tensor:
        """The model's input for `image` (a PIL image): [1, 3, S, S] on the model's device."""
        tensor = self.image_processor(image)
        if tensor.dim() == 3:
            tensor = tensor.unsqueeze(0)
        return tensor.to(self.device)

    def upload_input(self, tensor: torch.Tensor) -> None:
        """Start a new conversation about an image given as its model input (`image_input`'s tensor;
        the server keeps those of the images it decoded last): no picture is kept to draw boxes on."""
        self._new_conversation(tensor if tensor.dim() == 4 else tensor.unsqueeze(0), None)

    def _new_conversation(self, tensor: torch.Tensor, shown) -> None:
        with self._state_lock:
            self._image, self.image, self._visual = tensor, shown, None
            self._conversation = Conversation(self.style, has_image=True)

    def restart(self) -> None:
        """A new conversation about the same image."""
        with self._state_lock:
            self._conversation = Conversation(self.style, has_image=self._image is not None)

    def ask(self, text: str) -> None:
        """Add a question (to be answered by the next `answer`/`stream`).  The text is the user's:
        protocol markup in it (`<ImageHere>`, the template's role or end markers, special tokens)
        raises protocol.UserTextError (a UserError, so a ValueError) and nothing is added."""
        text = self._user_text(text, "the question")
        with self._state_lock:
            self._conversation.add_question(text)

    def add_turn(self, question: str, answer: str) -> None:
        """Add a finished turn to the history (a client that sends the whole conversation); both
        texts are checked as `ask` checks a question."""
        question = self._user_text(question, "a question of the history")
        answer = check_user_text(self.style, str(answer), "an answer of the history", self._specials())
        with self._state_lock:
            self._conversation.add_question(question)
            self._conversation.set_answer(answer)

    def _user_text(self, text, what: str) -> str:
        if not isinstance(text, str) or not text.strip():
            raise ValueError("the question is empty")
        return check_user_text(self.style, text.strip(), what, self._specials())

    def _specials(self) -> list[str]:
        return list(getattr(self.model.tokenizer, "all_special_tokens", None) or [])

    def prompt_length(self) -> int:
        """Tokens the next answer is generated from, visual tokens included."""
        with self._state_lock:
            dialogue = self._fitted(self.defaults.max_new_tokens)
        n_query = self.model.n_visual_tokens if dialogue.has_image else 0
        return len(encode(self.style, self.model.tokenizer, dialogue, n_query))

    def generation_input(self, max_new_tokens: int) -> tuple[torch.Tensor, Dialogue, Layout]:
        """What the pending question's answer is generated from, for a scheduler that batches many
        Chats (serve/scheduler.py): the image tensor [3, S, S], the dialogue fitted to the context
        and its token layout.  Text work only: call it off the model's thread."""
        with self._state_lock:
            dialogue = self._start(max_new_tokens)
        n_query = self.model.n_visual_tokens if dialogue.has_image else 0
        return self._image[0], dialogue, encode(self.style, self.model.tokenizer, dialogue, n_query)

    def record_answer(self, text: str) -> None:
        """The pending question's answer, generated elsewhere (by the scheduler)."""
        with self._state_lock:
            self._conversation.set_answer(text)

    def reset(self) -> None:
        """Forget the image and the conversation."""
        with self._state_lock:
            self._conversation = Conversation(self.style)
            self._image, self.image, self._visual = None, None, None

    # ------------------------------------------------------------------ answers
    def answer(self, **options) -> str:
        """Answer the pending question (blocking); the answer is added to the history.  Waits for
        the model while another Chat on it is generating."""
        opts = self.defaults.replace(**options)
        with self._model_lock, self._state_lock:
            prompt = self._start(opts.max_new_tokens)
            try:
                _seed(opts)
                text = self.model.generate(self._image, [prompt], visual=self._visual_tokens(),
                                           **opts.generate_kwargs())[0]
            except BaseException:
                self._conversation.drop_pending()
                raise
            self._conversation.set_answer(text)
            return text

    def stream(self, **options) -> Iterator[str]:
        """Answer the pending question, yielding pieces of text as they are generated; the pieces
        never include the end marker.  When the iterator is exhausted the full answer (exactly what
        `answer` would have returned, also in `history`) is in place.

        The model is reserved at this call (queued behind other generations) and released by the
        generation thread when it ends, so a reader that stops early never blocks the model:
        closing the iterator cancels generation at the next token.  Beam search cannot stream
        token by token, so with num_beams > 1 the answer arrives as one piece.
        """
        opts = self.defaults.replace(**options)
        self._model_lock.acquire()
        try:
            self._state_lock.acquire()
            try:
                prompt = self._start(opts.max_new_tokens)
            except BaseException:
                self._state_lock.release()
                raise
        except BaseException:
            self._model_lock.release()
            raise
        streamer = _Streamer(self.model.tokenizer)
        outcome: dict = {}
        thread = threading.Thread(target=self._generate_in_thread, args=(prompt, opts, streamer, outcome),
                                  name="tinygpt-chat-generate", daemon=True)
        thread.start()
        return self._read(streamer, thread, outcome)

    def _read(self, streamer: _Streamer, thread: threading.Thread, outcome: dict) -> Iterator[str]:
        visible = VisibleText(self.style.end_sym)
        finished = False
        try:
            for piece in streamer:
                delta = visible.feed(piece)
                if delta:
                    yield delta
            thread.join()
            if "error" in outcome:
                raise outcome["error"]
            tail = visible.flush()
            if tail:
                yield tail
            finished = True
        finally:
            if not finished:
                streamer.cancelled.set()

    def _generate_in_thread(self, prompt: Dialogue, opts: GenerationOptions, streamer: _Streamer, outcome: dict):
        # Runs with both locks held (taken by `stream`); releases them when generation is over.
        try:
            _seed(opts)
            beams = opts.num_beams > 1
            text = self.model.generate(self._image, [prompt], streamer=None if beams else streamer,
                                       visual=self._visual_tokens(), **opts.generate_kwargs())[0]
            if beams:
                streamer.on_finalized_text(text)
            self._conversation.set_answer(text)
        except _Cancelled:
            # The reader left: keep what it saw, so the history still alternates question/answer.
            self._conversation.set_answer(self.style.clean_answer(streamer.text))
        except BaseException as exc:  # handed to the reader, which re-raises it
            log.exception("generation failed")
            self._conversation.drop_pending()
            outcome["error"] = exc
        finally:
            streamer.on_finalized_text("", stream_end=True)  # wake the reader in every case
            self._state_lock.release()
            self._model_lock.release()

    def _visual_tokens(self) -> torch.Tensor:
        """The image's visual tokens, encoded once per uploaded image: every later turn about it
        reuses them (the full-size 448 px encode is seconds of CPU).  Called with both locks held."""
        if self._visual is None:
            with torch.no_grad():
                self._visual = self.model.encode_images(self._image)
        return self._visual

    def _start(self, max_new_tokens: int) -> Dialogue:
        # Called with the state lock held.
        if self._image is None:
            raise ValueError("upload an image before asking (TinyGPT-V answers about an image)")
        if not self._conversation.pending:
            raise ValueError("ask a question before requesting an answer")
        return self._fitted(max_new_tokens)

    def _fitted(self, max_new_tokens: int) -> Dialogue:
        """The conversation as a Dialogue, dropping the oldest turns (never the newest) until its
        layout fits `model.max_context_len` and, with the answer, the LLM's position range
        (TinyGPT-V instead cuts the oldest embeddings, which can cut the image in half)."""
        conv = self._conversation
        n_query = self.model.n_visual_tokens if conv.has_image else 0
        return fit(conv, self.model.tokenizer, n_query, max_new_tokens, self.model.max_positions)
