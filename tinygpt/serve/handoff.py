"""From a validated HTTP request to the scheduler and back, as both APIs (mllm-npu's and OpenAI's) do it:

    request, inbox = await handoff.start(read_image, history, question, options, n=1, stop=())
    answers = await handoff.answers(request, inbox, http_request)    # plain: None if the client left
    async for events in handoff.events(request, inbox): ...          # streamed (in an EventStream)

`start` reserves a slot first (Busy -> 429 before any image is decoded), then decodes the image,
fits the dialogue to the context and encodes the prompt in a worker thread (at most
`Limits.max_decoding` images decoded at once), so the model thread gets model-size inputs only.
An image file seen lately is not decoded again: the model inputs of the last
`Limits.visual_cache_size` images (at most `Limits.input_cache_bytes`) are kept by a hash of the
file's bytes, since an API client resends its picture with every turn of a conversation (a
4096 px PNG takes about half a second of CPU to decode and resize).
Whatever happens next -- an answer, an error, a client that drops a plain request or a stream, a
cancel while the image is still decoding -- the request is cancelled in a `finally`, and its slot
is freed exactly once (scheduler.Request).
"""
from __future__ import annotations

import asyncio
import threading
from typing import AsyncIterator, Callable, Optional

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request as HTTPRequest
from starlette.responses import StreamingResponse

from ..conversation.chat import Chat, GenerationOptions
from .batching import Row
from .engine_process import ModelGone
from .lru import LRU, digest
from .memory import trim_heap
from .scheduler import Answer, Event, Request, Scheduler, client_options
from .validation import Limits, open_image

# A request whose image file is larger than this gives its freed memory back even when its model
# input came from the cache (glibc keeps freed chunks below its mmap threshold in the heap).
TRIM_AFTER_BYTES = 2**20


class GenerationFailed(Exception):
    """The model failed on this request (HTTP 500)."""


class Inbox:
    """A request's events, put by the model thread, read on the event loop."""

    def __init__(self):
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue[Event] = asyncio.Queue()

    def __call__(self, event: Event) -> None:
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, event)
        except RuntimeError:  # the event loop is closed: nobody is listening any more
            pass


class EventStream(StreamingResponse):
    """A streamed answer that cancels its request when the response ends in any way (sent, client
    gone before or during the stream, an error)."""

    def __init__(self, content, request: Request, media_type: str):
        super().__init__(content, media_type=media_type)
        self.request = request

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.request.cancel()


class Handoff:
    def __init__(self, chat: Chat, scheduler: Scheduler, limits: Limits):
        self.chat, self.scheduler, self.limits = chat, scheduler, limits
        self.decoding = threading.BoundedSemaphore(limits.max_decoding)
        self.inputs = LRU(limits.visual_cache_size, limits.input_cache_bytes)  # file digest -> model input

    async def start(self, read_image: Callable[[], bytes], history: list, question: str, options: dict, n: int = 1,
                    stop: tuple[str, ...] = ()) -> tuple[Request, Inbox]:
        """`read_image()`: the image file's bytes (checked against the byte limit), read in the worker."""
        request = self.scheduler.reserve(n)  # Busy: refused before any work
        try:
            opts = client_options(self.chat.defaults, options)
            image, dialogue, layout = await run_in_threadpool(self._prepare, read_image, history, question,
                                                              opts.max_new_tokens)
            inbox = Inbox()
            request.start([Row(image, layout, _choice(opts, i), dialogue=dialogue) for i in range(n)], inbox, stop)
            return request, inbox
        except BaseException:
            request.cancel()
            raise

    def _prepare(self, read_image: Callable[[], bytes], history: list, question: str, max_new_tokens: int):
        # A worker thread: decoding, preprocessing and the text work, never on the model thread.
        # The file's bytes and the full-size decoded image live only inside this block, a few at a time.
        with self.decoding:
            raw = read_image()
            key = digest(raw)
            tensor = self.inputs.get(key)
            decoded = tensor is None
            if decoded:
                tensor = self.chat.image_input(open_image(raw, self.limits))
                self.inputs.put(key, tensor)
            else:
                self.scheduler.metrics.input_cache_hits.inc()
            trim = decoded or len(raw) > TRIM_AFTER_BYTES
            del raw
            if trim:
                trim_heap()
        session = self.chat.session()
        session.upload_input(tensor)
        for asked, answered in history:
            session.add_turn(asked, answered)
        session.ask(question)
        return session.generation_input(max_new_tokens)

    async def answers(self, request: Request, inbox: Inbox, http: HTTPRequest) -> Optional[list[Answer]]:
        """Every choice's Answer, or None when the client hung up first (its rows are then dropped)."""
        gone = asyncio.ensure_future(_disconnected(http))
        try:
            done: dict[int, Answer] = {}
            while len(done) < request.n:
                event = asyncio.ensure_future(inbox.queue.get())
                await asyncio.wait({event, gone}, return_when=asyncio.FIRST_COMPLETED)
                if not event.done():
                    event.cancel()
                    return None
                event = event.result()
                if isinstance(event.error, ModelGone):
                    raise event.error
                if event.error is not None:
                    raise GenerationFailed(f"generation failed: {type(event.error).__name__}: {event.error}")
                if event.answer is not None:
                    done[event.index] = event.answer
            return [done[i] for i in range(request.n)]
        finally:
            gone.cancel()
            request.cancel()

    @staticmethod
    async def events(request: Request, inbox: Inbox) -> AsyncIterator[list[Event]]:
        """The request's events until every choice has its Answer (an error event ends it too), in
        lists of those that had arrived when the stream was ready for more: a stream writes each
        list at once (a token and its row's end, produced by one step, are one socket write)."""
        open_ = request.n
        while open_:
            arrived = [await inbox.queue.get()]
            while not inbox.queue.empty():
                arrived.append(inbox.queue.get_nowait())
            for i, event in enumerate(arrived):
                if event.error is not None:
                    yield arrived[:i + 1]
                    return
                open_ -= event.answer is not None
            yield arrived


async def _disconnected(http: HTTPRequest) -> None:
    """Returns when the client closes the connection (the body has been read: uvicorn's receive
    then waits for the disconnect)."""
    while (await http.receive())["type"] != "http.disconnect":
        pass


def _choice(opts: GenerationOptions, i: int) -> GenerationOptions:
    """Choice i of n: choice 0 is the request's own options; a seeded request gives choice i the
    seed + i, so each choice repeats and they differ."""
    if i == 0 or opts.seed is None:
        return opts
    return opts.replace(seed=(opts.seed + i) % 2**64)
