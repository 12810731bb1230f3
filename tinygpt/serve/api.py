"""HTTP JSON API (the mllm-npu worker contract) beside the Gradio demo.

    POST /worker_generate  {"input_text": str, "image": base64 str, "max_new_tokens": int,
                            "temperature": float, "top_p": float, "num_beams": int, "stream": bool}
        -> 200 {"text": answer, "error_code": 0}
        -> stream: 200 application/x-ndjson, one {"text": answer so far, "error_code": 0} per line;
           the last line holds the whole answer (an error after the first line: error_code 500)
        -> 4xx {"text": what is wrong, "error_code": status}  (every route, 404/405 included)
        -> 429 + Retry-After when `Limits.max_batch_size + Limits.max_queue` requests are held
        Content-Type must be application/json (415 otherwise): a web page cannot make a visitor's
        browser run generation without a CORS preflight.
    POST /worker_get_status -> {"model_names": [...], "speed": 1, "queue_length": n}  (mllm-npu)
    GET  /health            -> {"status": "ok", "busy": bool, "queue_length": n, "running": n, ...}
    GET  /metrics           -> Prometheus text (metrics.py)

Each request is a fresh single-turn conversation; all routes (and the web page) hand their
requests to one scheduler (scheduler.py), whose model thread decodes them in one batch.  Memory is
bounded: at most `Limits.max_decoding` images are decoded at once, waiting requests hold the model's
input tensor only, and at most `max_batch_size + max_queue` requests are held.
"""
from __future__ import annotations

import json
import logging
from contextlib import asynccontextmanager
from typing import AsyncIterator, Optional

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

from ..common.errors import UserError
from ..conversation.chat import Chat
from .engine_process import ModelGone
from .handoff import EventStream, GenerationFailed, Handoff, Inbox
from .memory import limit_malloc_arenas, trim_heap
from .metrics import CONTENT_TYPE, ServeMetrics
from .openai_api import add_openai_routes, error_body
from .scheduler import Busy, Request as Scheduled, Scheduler
from .validation import Limits, RequestError, image_bytes, parse_generate_request, read_json_request

log = logging.getLogger(__name__)

MODEL_NAME = "tinygpt-v"
CLIENT_GONE = 499  # nginx's "client closed request": counted in /metrics, never sent


def build_scheduler(chat: Chat, limits: Limits) -> Scheduler:
    return Scheduler(chat.model, max_batch_size=limits.max_batch_size, max_queue=limits.max_queue,
                     batch_timeout_s=limits.batch_timeout_s, metrics=ServeMetrics(),
                     visual_cache_size=limits.visual_cache_size)


def create_api(chat: Chat, limits: Optional[Limits] = None, scheduler: Optional[Scheduler] = None) -> FastAPI:
    """A FastAPI app serving `chat`'s model (mount the Gradio UI on it, or serve it alone).  Without
    `scheduler` it makes its own, closed when the server shuts down."""
    limits = limits or Limits()
    limit_malloc_arenas()
    owned = scheduler is None
    scheduler = scheduler or build_scheduler(chat, limits)

    @asynccontextmanager
    async def lifespan(_app):
        yield
        if owned:
            scheduler.close()

    app = FastAPI(title="tinygpt", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.scheduler = scheduler
    app.add_middleware(_CountRequests, metrics=scheduler.metrics)
    handoff = Handoff(chat, scheduler, limits)

    @app.exception_handler(RequestError)
    async def _bad_request(request: Request, exc: RequestError):
        return _error(exc.status, exc.message, openai=_is_openai(request))

    @app.exception_handler(UserError)
    async def _refused_text(request: Request, exc: UserError):  # e.g. protocol markup typed by a user
        return _error(400, str(exc), openai=_is_openai(request))

    @app.exception_handler(Busy)
    async def _busy(request: Request, exc: Busy):
        return _error(429, str(exc), headers={"Retry-After": str(exc.retry_after)}, openai=_is_openai(request))

    @app.exception_handler(ModelGone)
    async def _model_gone(request: Request, exc: ModelGone):
        return _error(503, str(exc), openai=_is_openai(request))

    @app.exception_handler(GenerationFailed)
    async def _failed(request: Request, exc: GenerationFailed):
        return _error(500, str(exc), openai=_is_openai(request))

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException):  # 404, 405, ... in the API's shape
        return _error(exc.status_code, str(exc.detail), headers=getattr(exc, "headers", None),
                      openai=_is_openai(request))

    add_openai_routes(app, chat, limits, handoff)

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": MODEL_NAME, "busy": scheduler.running > 0, "queue_length": scheduler.held,
                "running": scheduler.running, "prompt_template": chat.style.template, "end_sym": chat.style.end_sym}

    @app.get("/metrics")
    async def metrics():
        return Response(scheduler.metrics.render(), media_type=CONTENT_TYPE)

    @app.post("/worker_get_status")
    async def status():
        return {"model_names": [MODEL_NAME], "speed": 1, "queue_length": scheduler.held}

    @app.post("/worker_generate")
    async def worker_generate(request: Request):
        req = parse_generate_request(await read_json_request(request, limits), limits)
        scheduled, inbox = await handoff.start(lambda: image_bytes(req.image_b64, limits), [], req.text, req.options)
        if req.stream:
            return EventStream(_ndjson(handoff, scheduled, inbox), scheduled, "application/x-ndjson")
        answers = await handoff.answers(scheduled, inbox, request)
        if answers is None:
            return Response(status_code=CLIENT_GONE)
        return {"text": answers[0].text, "error_code": 0}

    return app


class _CountRequests:
    """ASGI middleware: every answered request counted by route and status in /metrics."""

    def __init__(self, app, metrics: ServeMetrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        status = [500]

        async def send_and_note(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            self.metrics.count(scope["path"], status[0])


async def _ndjson(handoff: Handoff, request: Scheduled, inbox: Inbox) -> AsyncIterator[bytes]:
    text = ""
    try:
        async for events in handoff.events(request, inbox):
            lines = []  # one write for the events that arrived together
            for event in events:
                if event.error is not None:  # the status line is already sent: report in-band, as mllm-npu does
                    lines.append(_line({"text": f"generation failed: {type(event.error).__name__}: {event.error}",
                                        "error_code": 500}))
                elif event.answer is not None:
                    if event.answer.text != text or not text:
                        lines.append(_line({"text": event.answer.text, "error_code": 0}))
                else:
                    text += event.text
                    lines.append(_line({"text": text, "error_code": 0}))
            if lines:
                yield b"".join(lines)
    finally:
        trim_heap()


def _line(obj: dict) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode() + b"\n"


def _is_openai(request: Request) -> bool:
    return request.url.path.startswith("/v1/")


def _error(status: int, message: str, headers: dict | None = None, openai: bool = False) -> JSONResponse:
    body = error_body(status, message) if openai else {"text": message, "error_code": status}
    return JSONResponse(body, status_code=status, headers=headers)
