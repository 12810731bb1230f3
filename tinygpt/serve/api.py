"""HTTP JSON API (the mllm-npu worker contract) beside the Gradio demo.

    POST /worker_generate  {"input_text": str, "image": base64 str, "max_new_tokens": int,
                            "temperature": float, "top_p": float, "num_beams": int, "stream": bool}
        -> 200 {"text": answer, "error_code": 0}
        -> stream: 200 application/x-ndjson, one {"text": answer so far, "error_code": 0} per line;
           the last line holds the whole answer (an error after the first line: error_code 500)
        -> 4xx {"text": what is wrong, "error_code": status}  (every route, 404/405 included)
        -> 503 + Retry-After when `Limits.max_pending` requests are already being served
        Content-Type must be application/json (415 otherwise): a web page cannot make a visitor's
        browser run generation without a CORS preflight.
    POST /worker_get_status -> {"model_names": [...], "speed": 1, "queue_length": n}  (mllm-npu)
    GET  /health            -> {"status": "ok", "busy": bool, "queue_length": n, ...}

Each request is a fresh single-turn conversation (`chat.session()`); requests queue on the
model's lock, so concurrent clients are answered one after another.  Memory is bounded: at most
`Limits.max_decoding` images are decoded at once, at most `Limits.max_pending` requests are held,
and a session keeps only the model's input tensor and a bounded thumbnail (Chat.upload_image).
"""
from __future__ import annotations

import ctypes
import functools
import json
import logging
import threading
from typing import Iterator

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from ..conversation.chat import Chat
from .openai_api import add_openai_routes, error_body
from .validation import Limits, RequestError, decode_image, parse_generate_request, read_json_request

log = logging.getLogger(__name__)

MODEL_NAME = "tinygpt-v"


RETRY_AFTER_S = 2


class _Counter:
    """Requests accepted and not yet answered (reported as queue_length)."""

    def __init__(self):
        self._n = 0
        self._lock = threading.Lock()

    def add(self, k: int) -> None:
        with self._lock:
            self._n += k

    def admit(self, limit: int) -> bool:
        """Count one more request unless `limit` are already held."""
        with self._lock:
            if self._n >= limit:
                return False
            self._n += 1
            return True

    @property
    def value(self) -> int:
        return self._n


def create_api(chat: Chat, limits: Limits | None = None) -> FastAPI:
    """A FastAPI app serving `chat`'s model (mount the Gradio UI on it, or serve it alone)."""
    limits = limits or Limits()
    limit_malloc_arenas()
    app = FastAPI(title="tinygpt", docs_url=None, redoc_url=None, openapi_url=None)
    pending = _Counter()
    decoding = threading.BoundedSemaphore(limits.max_decoding)

    @app.exception_handler(RequestError)
    async def _bad_request(request: Request, exc: RequestError):
        return _error(exc.status, exc.message, openai=_is_openai(request))

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException):  # 404, 405, ... in the API's shape
        return _error(exc.status_code, str(exc.detail), headers=getattr(exc, "headers", None),
                      openai=_is_openai(request))

    def release() -> None:
        pending.add(-1)
        trim_heap()

    def session_for(load_image, history, question) -> Chat:
        # Decoding and preprocessing run in a worker thread: they are CPU work, not for the event
        # loop.  The full-size decoded image lives only inside this block, a few at a time.
        with decoding:
            session = chat.session()
            session.upload_image(load_image())
            trim_heap()
        for asked, answered in history:
            session.add_turn(asked, answered)
        session.ask(question)
        return session

    add_openai_routes(app, chat, limits, lambda: pending.admit(limits.max_pending), release, session_for)

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": MODEL_NAME, "busy": chat.busy, "queue_length": pending.value,
                "prompt_template": chat.style.template, "end_sym": chat.style.end_sym}

    @app.post("/worker_get_status")
    async def status():
        return {"model_names": [MODEL_NAME], "speed": 1, "queue_length": pending.value}

    @app.post("/worker_generate")
    async def worker_generate(request: Request):
        req = parse_generate_request(await read_json_request(request, limits), limits)
        if not pending.admit(limits.max_pending):
            return _error(503, f"the server is busy ({limits.max_pending} requests in progress); retry later",
                          headers={"Retry-After": str(RETRY_AFTER_S)})
        streaming = False
        try:
            session = await run_in_threadpool(session_for, lambda: decode_image(req.image_b64, limits), [], req.text)
            if not req.stream:
                text = await run_in_threadpool(session.answer, **req.options)
                return {"text": text, "error_code": 0}
            pieces = await run_in_threadpool(session.stream, **req.options)  # waits for the model
            streaming = True  # from here on _ndjson owns the pending count
            return StreamingResponse(_ndjson(session, pieces, pending), media_type="application/x-ndjson")
        except RequestError:
            raise
        except Exception as exc:
            log.exception("generation failed")
            return _error(500, f"generation failed: {type(exc).__name__}: {exc}")
        finally:
            if not streaming:
                release()

    return app


@functools.cache
def _glibc():
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (musl, macOS, Windows): nothing to tune
        return None


def limit_malloc_arenas(n: int = 2) -> None:
    """At most `n` malloc arenas for this process: glibc otherwise gives each server thread its own
    (up to 8 x cores), and each keeps the peak of what its thread once decoded (measured: held RSS
    1.40x idle after three bursts of 4096 px images with the default, 1.03x with 2)."""
    libc = _glibc()
    if libc is not None:
        libc.mallopt(_M_ARENA_MAX, n)


def trim_heap() -> None:
    """Give freed heap memory back to the OS: a decoded image is freed at once, but glibc keeps
    freed chunks in its arenas, so without this RSS after a burst of large images stays near its peak."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


_M_ARENA_MAX = -8  # glibc's mallopt parameter number


def _ndjson(session: Chat, pieces: Iterator[str], pending: _Counter) -> Iterator[bytes]:
    text = ""
    try:
        for piece in pieces:
            text += piece
            yield _line({"text": text, "error_code": 0})
        final = session.history[-1][1]
        if final != text or not text:
            yield _line({"text": final, "error_code": 0})
    except Exception as exc:  # the status line is already sent: report in-band, as mllm-npu does
        log.exception("generation failed while streaming")
        yield _line({"text": f"generation failed: {type(exc).__name__}: {exc}", "error_code": 500})
    finally:
        close = getattr(pieces, "close", None)
        if close is not None:
            close()  # a client that went away cancels generation
        pending.add(-1)
        trim_heap()


def _line(obj: dict) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode() + b"\n"


def _is_openai(request: Request) -> bool:
    return request.url.path.startswith("/v1/")


def _error(status: int, message: str, headers: dict | None = None, openai: bool = False) -> JSONResponse:
    body = error_body(status, message) if openai else {"text": message, "error_code": status}
    return JSONResponse(body, status_code=status, headers=headers)
