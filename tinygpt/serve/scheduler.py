"""One scheduler owns the model: every route (`/v1/chat/completions`, `/worker_generate`, the web
page) hands it prepared requests, and one model thread decodes them together.

    scheduler = Scheduler(model, max_batch_size=8, max_queue=64)
    request = scheduler.reserve(n=1)          # a slot, or Busy (-> 429 + Retry-After)
    ... decode the image, fit the dialogue, encode the prompt (the caller's worker thread) ...
    request.start(rows, sink)                 # sink(Event) is called from the model thread
    request.cancel()                          # any time, any number of times: the slot is freed once

Iteration-level scheduling (as vLLM and LMDeploy do): between two decode steps the model thread
prefills the rows that arrived (their images encoded together) and stacks them into the running
batch (batching.py); each row leaves on its own end marker, stop string, EOS or token budget, and
streams its text as it comes.  Waiting rows hold model-size inputs only (the image tensor and the
prompt's token ids, never the decoded picture), so the queue can be deep; past `max_queue` waiting
requests `reserve` refuses.  While other accepted requests are still being prepared, arrivals wait
for them up to `batch_timeout_s`, to be prefilled together (a prefill's cost is mostly per call).  Beam search
(num_beams > 1) runs alone, between steps.

A slot is freed exactly once, whatever the client does: when all its rows finish, when it fails,
or on `cancel` -- at once if it was not running, else at the next step boundary, where the model
thread drops its rows (a dropped stream, a dropped plain request, a cancel during prefill).
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable, Iterator, Optional

import torch

from ..conversation.chat import Chat, GenerationOptions, VisibleText
from .batching import DecodeBatch, Row
from .metrics import ServeMetrics
from .visual_cache import VisualCache

log = logging.getLogger(__name__)


class Busy(Exception):
    """The queue is full: come back in `retry_after` seconds."""

    def __init__(self, message: str, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class Answer:
    text: str
    finish_reason: str  # "stop" (end marker, EOS or a stop string) or "length" (max_new_tokens)
    completion_tokens: int
    prompt_tokens: int


@dataclass(frozen=True)
class Event:
    """What a request's sink receives: a piece of choice `index`'s visible text, its Answer, or an error."""

    index: int
    text: str = ""
    answer: Optional[Answer] = None
    error: Optional[BaseException] = None


def cut_at_stop(text: str, stop: tuple[str, ...]) -> tuple[str, bool]:
    """`text` up to the first stop string (stripped), and whether one was found."""
    cut = min((text.find(s) for s in stop if s in text), default=-1)
    return (text[:cut].rstrip(), True) if cut >= 0 else (text, False)


class Request:
    """n rows answering one prompt (OpenAI's `n` choices; 1 elsewhere), and the slot they hold.

    state: "new" (reserved) -> "queued" (rows waiting) -> "model" (a row reached the model thread,
    which from then on is the one that frees the slot) -> "done" (freed)."""

    def __init__(self, scheduler: "Scheduler", n: int):
        self.scheduler, self.n = scheduler, n
        self.rows: list[Row] = []
        self.stop: tuple[str, ...] = ()
        self.sink: Callable[[Event], None] = lambda event: None
        self.cancelled = False
        self.state = "new"
        self.started_at = self.queued_at = time.monotonic()
        self._texts: dict[int, _RowText] = {}
        self._open = n

    def start(self, rows: list[Row], sink: Callable[[Event], None], stop: tuple[str, ...] = ()) -> None:
        """Queue `rows` (one per choice); `sink` gets their events on the model thread (keep it quick)."""
        if len(rows) != self.n:
            raise ValueError(f"this request reserved {self.n} rows, got {len(rows)}")
        self.sink, self.stop = sink, tuple(stop)
        for i, row in enumerate(rows):
            row.owner, row.index = self, i
        self.rows = rows
        self.scheduler._enqueue(self)

    def cancel(self) -> None:
        """The client is gone (or no longer wants the answer): stop its rows and free its slot.
        Safe to call any number of times, also after the answer."""
        self.scheduler._cancel(self)

    @property
    def released(self) -> bool:
        return self.state == "done"


class _RowText:
    """A row's text as it grows: visible pieces (never an end marker or stop string, nor the start
    of one) and, at the end, the answer."""

    def __init__(self, style, tokenizer, stop: tuple[str, ...]):
        self.style, self.tokenizer = style, tokenizer
        self.filters = [VisibleText(style.end_sym)] + [VisibleText(s) for s in stop]
        self.stop, self.decoded, self.last_at = stop, "", None

    def feed(self, tokens: list[int]) -> tuple[str, bool]:
        """All tokens so far -> (the new visible piece, whether an end marker or stop string showed)."""
        text = self.tokenizer.decode(tokens, skip_special_tokens=True)
        if text.endswith("\ufffd"):  # a character cut between tokens: wait for its other bytes
            return "", False
        piece, self.decoded = text[len(self.decoded):], text
        for f in self.filters:
            piece = f.feed(piece)
        return piece, any(f.done for f in self.filters)

    def tail(self, tokens: list[int]) -> str:
        """The rest of the visible text once the row ended without an end marker: what the filters
        held back, and a character cut between tokens as it decodes."""
        piece = self.tokenizer.decode(tokens, skip_special_tokens=True)[len(self.decoded):]
        for f in self.filters:
            piece = f.feed(piece) + f.flush()
        return piece

    def answer(self, tokens: list[int]) -> tuple[str, bool]:
        text = self.style.clean_answer(self.tokenizer.decode(tokens, skip_special_tokens=True))
        return cut_at_stop(text, self.stop)


class Scheduler:
    """The model thread, its queue and its running batch (see the module docstring)."""

    def __init__(self, model, *, max_batch_size: int = 8, max_queue: int = 64, batch_timeout_s: float = 0.005,
                 retry_after_s: int = 2, metrics: Optional[ServeMetrics] = None, visual_cache_size: int = 0):
        if max_batch_size < 1 or max_queue < 0 or batch_timeout_s < 0:
            raise ValueError("max_batch_size must be >= 1, max_queue and batch_timeout_s >= 0")
        self.model = model
        self.style = model.style
        self.tokenizer = model.tokenizer
        self.max_batch_size, self.max_queue, self.batch_timeout_s = max_batch_size, max_queue, batch_timeout_s
        self.retry_after_s = retry_after_s
        self.metrics = metrics or ServeMetrics()
        self.batch = DecodeBatch(model, VisualCache(visual_cache_size))
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._waiting: deque[Row] = deque()
        self._held = 0  # requests reserved and not yet released (preparing, waiting or running)
        self._preparing = 0  # requests reserved and not yet started (their inputs are being made)
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="tinygpt-model", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ callers' side
    @property
    def held(self) -> int:
        """Requests accepted and not yet answered (reported as queue_length)."""
        return self._held

    @property
    def running(self) -> int:
        return len(self.batch)

    def reserve(self, n: int = 1) -> Request:
        """A slot for a request of `n` rows, or Busy when `max_batch_size + max_queue` are held."""
        with self._lock:
            if self._closed:
                raise Busy("the server is shutting down", self.retry_after_s)
            if self._held >= self.max_batch_size + self.max_queue:
                raise Busy(f"the server is busy ({self._held} requests accepted, the queue holds "
                           f"{self.max_queue}); retry later", self.retry_after_s)
            self._held += 1
            self._preparing += 1
            self.metrics.held.set(self._held)
        return Request(self, n)

    def close(self) -> None:
        with self._wake:
            self._closed = True
            self._wake.notify_all()
        self._thread.join(timeout=30)

    def _enqueue(self, request: Request) -> None:
        with self._wake:
            if request.state != "new":
                raise RuntimeError("a request starts once")
            self._preparing -= 1
            if request.cancelled or self._closed:
                self._release(request)
                return
            request.state = "queued"
            request.queued_at = time.monotonic()
            self._waiting.extend(request.rows)
            self.metrics.queue_depth.set(len(self._waiting))
            self._wake.notify()

    def _cancel(self, request: Request) -> None:
        with self._lock:
            request.cancelled = True
            if request.state in ("new", "queued"):  # nothing of it on the model thread: free now
                self._preparing -= request.state == "new"
                self._unqueue(request)
                self._release(request)
            # "model": the model thread drops its rows and frees it at the next step boundary

    def _unqueue(self, request: Request) -> None:
        # Called with the lock held.
        for row in request.rows:
            if row in self._waiting:
                self._waiting.remove(row)
        self.metrics.queue_depth.set(len(self._waiting))

    def _release(self, request: Request) -> None:
        """Free the request's slot, once.  Called with the lock held."""
        if request.state != "done":
            request.state = "done"
            self._held -= 1
            self.metrics.held.set(self._held)

    def _release_locked(self, request: Request) -> None:
        with self._lock:
            self._release(request)

    # ------------------------------------------------------------------ the model thread
    def _run(self) -> None:
        while True:
            joining = self._next_rows()
            if joining is None:
                return
            try:
                if joining:
                    self._prefill(joining)
                elif self.batch.rows:
                    self._step()
            except Exception as exc:  # the model failed: every row in flight gets the error
                log.exception("generation failed")
                for row in {id(r.owner): r for r in self.batch.rows + joining}.values():
                    self._fail(row.owner, exc)
                self.batch.keep([])
            self.metrics.running.set(len(self.batch))

    def _next_rows(self) -> Optional[list[Row]]:
        """Rows to join the batch now (waiting for work when idle); None when closed."""
        with self._wake:
            while not self._waiting and not self.batch.rows and not self._closed:
                self._wake.wait()
            closing = self._closed
            if closing:  # every request still held gets an answer: the server is going away
                in_flight = list({id(r.owner): r.owner for r in [*self.batch.rows, *self._waiting]}.values())
        if closing:
            for request in in_flight:
                self._fail(request, Busy("the server is shutting down", self.retry_after_s))
            self.batch.keep([])
            return None
        with self._wake:
            # Prefill has a high fixed cost per call, and a decode step costs about the same for 1
            # row as for 8: while other accepted requests are still being prepared (their images
            # decoding), arrivals wait for them up to batch_timeout_s from their queueing, to be
            # prefilled together -- decoding the running rows meanwhile.  Nobody else coming, or a
            # batch that would be full: they join at once.
            while (self._waiting and self._preparing and not self._closed
                   and len(self.batch) + len(self._waiting) < self.max_batch_size):
                left = self._waiting[0].owner.queued_at + self.batch_timeout_s - time.monotonic()
                if left <= 0:
                    break
                if self.batch.rows:
                    return []  # decode a step meanwhile
                self._wake.wait(left)
            joining = []
            while self._waiting and len(self.batch) + len(joining) < self.max_batch_size:
                row = self._waiting.popleft()
                row.owner.state = "model"
                joining.append(row)
            self.metrics.queue_depth.set(len(self._waiting))
        return joining

    def _prefill(self, joining: list[Row]) -> None:
        for row in [r for r in joining if r.options.num_beams > 1]:
            self._beam_search(row)
        rows = [r for r in joining if r.options.num_beams == 1 and not r.owner.cancelled]
        if rows:
            for row in rows:
                row.owner._texts[row.index] = _RowText(self.style, self.tokenizer, row.owner.stop)
            self.metrics.prompt_tokens.inc(sum(len(r.layout) for r in rows))
            started, hits = time.monotonic(), self.batch.visual_cache.hits
            tokens = self.batch.prefill(rows)
            now = time.monotonic()
            self.metrics.prefill.observe(now - started)
            self.metrics.prefill_rows.inc(len(rows))
            self.metrics.visual_cache_hits.inc(self.batch.visual_cache.hits - hits)
            for row in rows:
                self.metrics.ttft.observe(now - row.owner.started_at)
            self._advance(len(self.batch) - len(rows), tokens)
        self._drop_cancelled(joining)

    def _step(self) -> None:
        started = time.monotonic()
        tokens = self.batch.step([r.tokens[-1] for r in self.batch.rows])
        self.metrics.token_latency.observe(time.monotonic() - started)
        self._advance(0, tokens)
        self._drop_cancelled()

    def _advance(self, first: int, tokens: list[int]) -> None:
        """Hand rows first.. their new tokens."""
        for i, token in enumerate(tokens, start=first):
            row = self.batch.rows[i]
            if not row.owner.cancelled:
                self._take(row, token, int(self.batch.positions[i]))
        self.metrics.generation_tokens.inc(len(tokens))

    def _drop_cancelled(self, joined: list[Row] = ()) -> None:
        """The step boundary: rows that ended or whose client left leave the batch; a cancelled
        request's waiting rows leave the queue, and its slot is freed (`joined`: rows that just
        reached the model thread, beam searches included)."""
        rows = self.batch.rows
        self.batch.keep([i for i, r in enumerate(rows) if not (r.owner.cancelled or r.finished)])
        with self._lock:
            for request in {id(r.owner): r.owner for r in [*rows, *joined] if r.owner.cancelled}.values():
                self._unqueue(request)
                self._release(request)

    def _take(self, row: Row, token: int, position: int) -> None:
        text = row.owner._texts[row.index]
        if token == self.batch.eos:
            return self._finish(row, "stop", text.tail(row.tokens))
        row.tokens.append(token)
        piece, ended = text.feed(row.tokens)
        if piece:
            row.owner.sink(Event(row.index, text=piece))
        if ended:
            self._finish(row, "stop", "")
        elif len(row.tokens) >= row.options.max_new_tokens or position + 1 >= self.model.max_positions:
            self._finish(row, "length", text.tail(row.tokens))

    def _finish(self, row: Row, reason: str, tail: str) -> None:
        request = row.owner
        if tail:
            request.sink(Event(row.index, text=tail))
        answer, stopped = request._texts[row.index].answer(row.tokens)
        row.finished = True
        request.sink(Event(row.index, answer=Answer(answer, "stop" if stopped else reason, len(row.tokens),
                                                    len(row.layout))))
        self._closed_row(request)

    def _closed_row(self, request: Request) -> None:
        request._open -= 1
        if request._open == 0:
            self._release_locked(request)

    def _beam_search(self, row: Row) -> None:
        request = row.owner
        if request.cancelled:
            return
        try:
            opts = row.options
            if opts.seed is not None:
                torch.manual_seed(opts.seed)  # beam sampling draws from the global RNG: only this thread does
            raw = self.model.generate(row.image[None].to(self.batch.device), [row.dialogue],
                                      visual=self.batch.visual([row.image]), **opts.generate_kwargs())[0]
            answer, _ = cut_at_stop(raw, request.stop)
            if answer:
                request.sink(Event(row.index, text=answer))
            n_tokens = len(self.tokenizer(raw, add_special_tokens=False).input_ids)
            reason = "length" if n_tokens >= opts.max_new_tokens else "stop"
            row.finished = True
            request.sink(Event(row.index, answer=Answer(answer, reason, n_tokens, len(row.layout))))
            self._closed_row(request)
        except Exception as exc:
            log.exception("beam search failed")
            self._fail(request, exc)

    def _fail(self, request: Request, exc: BaseException) -> None:
        if not request.released:
            request.sink(Event(0, error=exc))
        with self._lock:
            self._unqueue(request)
            self._release(request)


def client_options(defaults: GenerationOptions, options: dict) -> GenerationOptions:
    """The server's defaults with a client's options; a budget under the default minimum length
    lowers that minimum (the client's max_tokens wins)."""
    if "max_new_tokens" in options:
        options = {"min_new_tokens": min(defaults.min_new_tokens, options["max_new_tokens"]), **options}
    return defaults.replace(**options)


def stream_session(scheduler: Scheduler, session: Chat, **options) -> Iterator[str]:
    """`session.stream(**options)` through the scheduler (the web page: its tabs batch with the API's
    requests): the visible pieces of the pending question's answer, which then joins the session's
    history.  Busy when the queue is full; closing the iterator cancels the row."""
    opts = client_options(session.defaults, options)
    request, seen, answered = None, "", False
    try:
        request = scheduler.reserve()
        image, dialogue, layout = session.generation_input(opts.max_new_tokens)
        events: queue.Queue[Event] = queue.Queue()
        request.start([Row(image, layout, opts, dialogue=dialogue)], events.put)
        while not answered:
            event = events.get()
            if event.error is not None:
                raise event.error
            if event.answer is not None:
                session.record_answer(event.answer.text)
                answered = True
            elif event.text:
                seen += event.text
                yield event.text
    finally:
        if request is not None:
            request.cancel()
        if not answered:  # keep what the reader saw, so the history still alternates question/answer
            session.record_answer(seen)
