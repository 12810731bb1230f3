"""OpenAI-compatible chat completions on the demo's server (the protocol vLLM, SGLang, LMDeploy,
llama.cpp's server and MindIE speak), so the `openai` client works unchanged:

    GET  /v1/models             -> {"object": "list", "data": [{"id": "tinygpt-v", ...}]}
    POST /v1/chat/completions   {"messages": [...], "max_tokens", "temperature", "top_p", "stop",
                                 "seed", "n", "stream", "stream_options": {"include_usage"}}
        -> a `chat.completion` (with `usage`), or with "stream": true server-sent events of
           `chat.completion.chunk`s ending in `data: [DONE]`
        -> 4xx {"error": {"message", "type": "invalid_request_error", "param", "code"}}

Messages (an optional system message first) alternate user / assistant and end with the user's
question; the image is an `image_url` part of the first user message as a `data:image/...;base64,`
URI (the server fetches nothing: http(s) URLs are refused; `Limits.local_image_root` allows
`file://` paths under one folder, off by default).  One image per conversation, as TinyGPT-V;
earlier turns are the history.  `n` choices are n rows of one batch; `stop` strings end a row's
generation.  Validation, decoding, the queue bound and the scheduler are the mllm-npu API's
(`api.py`, `validation.py`, `handoff.py`): one implementation.
"""
from __future__ import annotations

import json
import os
import time
import uuid
from typing import Any, AsyncIterator, Optional

from fastapi import FastAPI, Request
from fastapi.responses import Response

from ..conversation.chat import Chat
from .handoff import EventStream
from .validation import (Limits, RequestError, check_number, check_options, check_text, image_bytes,
                         read_json_request)

MODEL_NAME = "tinygpt-v"
_SUPPORTED = {"model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "stop", "seed",
              "n", "stream", "stream_options"}
# Accounting fields: they do not change the answer.
_IGNORED = {"user", "metadata", "service_tier"}
# Standard parameters this server does not implement, accepted at the neutral value chat front-ends
# send by default (as vLLM and llama.cpp's server accept them); any other value is a 400 naming them.
_NEUTRAL = {
    "frequency_penalty": lambda v: v in (None, 0),
    "presence_penalty": lambda v: v in (None, 0),
    "logprobs": lambda v: v in (None, False),
    "top_logprobs": lambda v: v in (None, 0),
    "logit_bias": lambda v: v in (None, {}),
    "response_format": lambda v: v is None or v == {"type": "text"},
    "tools": lambda v: v in (None, []),
    "tool_choice": lambda v: v in (None, "none", "auto"),
    "parallel_tool_calls": lambda v: v is None or isinstance(v, bool),
    "functions": lambda v: v in (None, []),
    "function_call": lambda v: v in (None, "none", "auto"),
    "modalities": lambda v: v in (None, ["text"]),
    "audio": lambda v: v is None,
    "prediction": lambda v: v is None,
    "store": lambda v: v in (None, False),
    "reasoning_effort": lambda v: v is None,
    "web_search_options": lambda v: v is None,
}
# A system message's text goes before the first question (separated as chat templates of models
# trained without a system role do, e.g. Mistral's and Gemma's).
SYSTEM_SEPARATOR = "\n\n"


def error_body(status: int, message: str, param: Optional[str] = None) -> dict:
    return {"error": {"message": message, "type": "invalid_request_error" if status < 500 else "server_error",
                      "param": param, "code": status}}


def add_openai_routes(app: FastAPI, chat: Chat, limits: Limits, handoff) -> None:
    """Mount /v1/models and /v1/chat/completions; `handoff` (handoff.Handoff, shared with api.py)
    takes a validated request to the scheduler and back."""

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": MODEL_NAME, "object": "model", "created": 0,
                                            "owned_by": "tinygpt"}]}

    @app.post("/v1/chat/completions")
    async def completions(request: Request):
        req = parse_chat_request(await read_json_request(request, limits), limits)
        scheduled, inbox = await handoff.start(req.image, req.history, req.question, req.options, n=req.n,
                                               stop=tuple(req.stop))
        if req.stream:
            return EventStream(_events(handoff, scheduled, inbox, req), scheduled, "text/event-stream")
        answers = await handoff.answers(scheduled, inbox, request)
        if answers is None:
            return Response(status_code=499)  # the client is gone: nothing is sent
        return completion(answers, req)


class ChatRequest:
    """A validated /v1/chat/completions body."""

    def __init__(self, image: Any, history: list, question: str, options: dict, stop: list[str], n: int,
                 stream: bool, include_usage: bool):
        self.image, self.history, self.question = image, history, question
        self.options, self.stop, self.n = options, stop, n
        self.stream, self.include_usage = stream, include_usage
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())


def parse_chat_request(payload: Any, limits: Limits) -> ChatRequest:
    if not isinstance(payload, dict):
        raise RequestError(400, f"the body must be a JSON object, not {type(payload).__name__}")
    unknown = sorted(set(payload) - _SUPPORTED - _IGNORED - set(_NEUTRAL))
    if unknown:
        raise RequestError(400, f"unsupported parameter(s): {', '.join(unknown)}; supported: {', '.join(sorted(_SUPPORTED))}")
    unimplemented = sorted(k for k, neutral in _NEUTRAL.items() if k in payload and not neutral(payload[k]))
    if unimplemented:
        raise RequestError(400, f"not implemented by this server: {', '.join(unimplemented)} (accepted only at "
                                "the neutral value: 0, false, {}, [] or a text response_format)")
    numbers = {"max_tokens": payload.get("max_completion_tokens", payload.get("max_tokens")),
               "temperature": payload.get("temperature"), "top_p": payload.get("top_p"),
               "seed": payload.get("seed"), "n": payload.get("n")}
    for key, value in numbers.items():
        if value is None:
            continue
        integer = key in ("max_tokens", "seed", "n")
        if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
            raise RequestError(400, f"'{key}' must be {'an integer' if integer else 'a number'}, got {type(value).__name__}")
        check_number(key, value, 400)
    n = numbers.pop("n")
    if n is not None and not 1 <= n <= limits.max_choices:
        raise RequestError(400, f"'n' must be between 1 and {limits.max_choices}, got {n}")
    image, turns = _read_messages(payload.get("messages"), limits)
    options = {"max_new_tokens" if k == "max_tokens" else k: float(v) if k in ("temperature", "top_p") else v
               for k, v in numbers.items() if v is not None}
    try:
        check_options(options, limits)
    except RequestError as exc:  # the same checks, in this API's names
        raise RequestError(400, exc.message.replace("'max_new_tokens'", "'max_tokens'")) from None
    stop = payload.get("stop") or []
    stop = [stop] if isinstance(stop, str) else stop
    if not isinstance(stop, list) or len(stop) > 4 or not all(isinstance(s, str) and s for s in stop):
        raise RequestError(400, "'stop' must be a string or a list of up to 4 non-empty strings")
    stream = payload.get("stream", False)
    if not isinstance(stream, bool):
        raise RequestError(400, "'stream' must be a boolean")
    usage = payload.get("stream_options") or {}
    if not isinstance(usage, dict):
        raise RequestError(400, "'stream_options' must be an object")
    history, (question, _) = turns[:-1], turns[-1]
    return ChatRequest(image, history, question, options, stop, n or 1, stream, bool(usage.get("include_usage")))


def _read_messages(messages: Any, limits: Limits) -> tuple[Any, list]:
    """-> (the image's loader, [(user text, assistant text or None), ...]); the last turn is open."""
    if not isinstance(messages, list) or not messages:
        raise RequestError(400, "'messages' must be a non-empty list of {role, content}")
    turns, image, system = [], None, []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ("system", "developer", "user", "assistant"):
            raise RequestError(400, f"messages[{i}] must be an object with role system, user or assistant")
        role = message["role"]
        if role in ("system", "developer"):  # OpenAI's newer name for the system role
            if turns:
                raise RequestError(400, f"messages[{i}]: system messages come before the first user message")
            text, found = _read_content(message.get("content"), i, limits)
            if found is not None:
                raise RequestError(400, f"messages[{i}]: a system message holds text only")
            system.append(check_text(text, limits))
            continue
        want = "user" if len(turns) == 0 or turns[-1][1] is not None else "assistant"
        if role != want:
            raise RequestError(400, f"messages[{i}] is from {role!r} but a {want!r} message was expected: "
                                    "messages alternate user / assistant, starting with the user")
        text, found = _read_content(message.get("content"), i, limits)
        if found is not None:
            if image is not None or turns:
                raise RequestError(400, f"messages[{i}]: one image per conversation, in the first user message")
            image = found
        if role == "user":
            text = check_text(text, limits)
            turns.append([SYSTEM_SEPARATOR.join(system + [text]) if not turns else text, None])
        else:
            turns[-1][1] = text
    if turns[-1][1] is not None:
        raise RequestError(400, "the last message must be the user's question")
    if image is None:
        raise RequestError(400, "the first user message needs an image_url part: this model answers about an image")
    return image, [tuple(t) for t in turns]


def _read_content(content: Any, i: int, limits: Limits) -> tuple[str, Any]:
    if isinstance(content, str):
        return content, None
    if not isinstance(content, list):
        raise RequestError(400, f"messages[{i}].content must be a string or a list of parts")
    texts, image = [], None
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind == "image_url":
            url = part.get("image_url", {}).get("url") if isinstance(part.get("image_url"), dict) else None
            if not isinstance(url, str) or not url:
                raise RequestError(400, f"messages[{i}].content[{j}].image_url.url must be a string")
            if image is not None:
                raise RequestError(400, f"messages[{i}]: one image per conversation")
            image = _image_loader(url, limits, f"messages[{i}].content[{j}]")
        else:
            raise RequestError(400, f"messages[{i}].content[{j}] must be a text or image_url part")
    return " ".join(t.strip() for t in texts if t.strip()), image


def _image_loader(url: str, limits: Limits, where: str):
    """A checked image reference -> a function reading its file's bytes (called later, in a worker
    thread, under the server's decoding bound; handoff.py decodes them)."""
    if url.startswith("data:"):
        return lambda: image_bytes(url, limits)
    if url.startswith(("http://", "https://")):
        raise RequestError(400, f"{where}: the server fetches no URL; send the image as a data:image/...;base64, URI")
    root = limits.local_image_root
    if root is None:
        raise RequestError(400, f"{where}: local image paths are off on this server (Limits.local_image_root); "
                                "send a data: URI")
    path = os.path.realpath(url[len("file://"):] if url.startswith("file://") else url)
    if os.path.commonpath([path, os.path.realpath(root)]) != os.path.realpath(root) or not os.path.isfile(path):
        raise RequestError(400, f"{where}: {url} is not a file under the allowed image folder")

    def read() -> bytes:
        with open(path, "rb") as f:
            return f.read(limits.max_image_bytes + 1)  # one byte over the limit is enough for its 413

    return read


def _usage(answers: list) -> dict:
    prompt, completion_tokens = answers[0].prompt_tokens, sum(a.completion_tokens for a in answers)
    return {"prompt_tokens": prompt, "completion_tokens": completion_tokens, "total_tokens": prompt + completion_tokens}


def completion(answers: list, req: ChatRequest) -> dict:
    return {"id": req.id, "object": "chat.completion", "created": req.created, "model": MODEL_NAME,
            "choices": [{"index": i, "message": {"role": "assistant", "content": a.text},
                         "finish_reason": a.finish_reason} for i, a in enumerate(answers)],
            "usage": _usage(answers)}


def _chunk(req: ChatRequest, index: int, delta: dict, finish: Optional[str] = None,
           usage: Optional[dict] = None) -> bytes:
    body = {"id": req.id, "object": "chat.completion.chunk", "created": req.created, "model": MODEL_NAME,
            "choices": [{"index": index, "delta": delta, "finish_reason": finish}] if usage is None else []}
    if usage is not None:
        body["usage"] = usage
    return f"data: {json.dumps(body, ensure_ascii=False)}\n\n".encode()


async def _events(handoff, scheduled, inbox, req: ChatRequest) -> AsyncIterator[bytes]:
    """Server-sent events: each choice's role, its content as it grows (never an end marker or a
    stop string, nor the start of one), its finish reason; the usage when asked; then [DONE].  The
    role goes at once (a client shows the answer has started, as OpenAI's and vLLM's streams do);
    after it, the chunks of events that arrived together go in one write (the last token, the
    finish reason, the usage and [DONE] together)."""
    yield b"".join(_chunk(req, i, {"role": "assistant", "content": ""}) for i in range(req.n))
    pending, answers = [], {}
    async for events in handoff.events(scheduled, inbox):
        for event in events:
            if event.error is not None:  # the status line is sent: report in-band, as OpenAI servers do
                message = f"generation failed: {type(event.error).__name__}: {event.error}"
                yield b"".join([*pending, f"data: {json.dumps(error_body(500, message))}\n\n".encode()])
                return
            if event.answer is not None:
                answers[event.index] = event.answer
                pending.append(_chunk(req, event.index, {}, event.answer.finish_reason))
            elif event.text:
                pending.append(_chunk(req, event.index, {"content": event.text}))
        if len(answers) < req.n and pending:
            yield b"".join(pending)
            pending = []
    if req.include_usage:
        pending.append(_chunk(req, 0, {}, usage=_usage([answers[i] for i in range(req.n)])))
    yield b"".join([*pending, b"data: [DONE]\n\n"])
