"""Streamed answers write the events that arrived together at once (tinygpt/serve/handoff.py
`Handoff.events`, openai_api.py `_events`, api.py `_ndjson`): a token and its row's end, produced by
one decode step, are one socket write, the usage and [DONE] go with the last one (the OpenAI role
chunk goes at once, before any token), and what a client reads is the same chunks as one write per
event."""
from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace

from tinygpt.serve.api import _ndjson
from tinygpt.serve.handoff import Handoff
from tinygpt.serve.openai_api import ChatRequest, _events
from tinygpt.serve.scheduler import Answer, Event

ANSWER = Answer("a red circle", "stop", completion_tokens=3, prompt_tokens=9)


def writes(stream_of, steps: list[list[Event]], head: int = 0) -> list[bytes]:
    """What a stream writes when the events of each step arrive together (the stream reads them
    after each step's last one is queued), after the `head` writes it makes before any event."""

    async def run():
        inbox = SimpleNamespace(queue=asyncio.Queue())
        stream = stream_of(Handoff.events(SimpleNamespace(n=1), inbox))
        out = [await stream.__anext__() for _ in range(head)]
        for step in steps:
            for event in step:
                inbox.queue.put_nowait(event)
            try:
                out.append(await stream.__anext__())
            except StopAsyncIteration:
                break
        out += [w async for w in stream]
        return out

    return asyncio.run(run())


def sse(written: list[bytes]) -> list[dict | str]:
    events = b"".join(written).decode().split("\n\n")
    return [e[len("data: "):] if e == "data: [DONE]" else json.loads(e[len("data: "):]) for e in events if e]


def test_openai_stream_writes_each_step_once_with_the_usage_and_done_in_the_last():
    req = ChatRequest(None, [], "q", {}, [], n=1, stream=True, include_usage=True)

    def stream_of(events):
        return _events(SimpleNamespace(events=lambda scheduled, inbox: events), None, None, req)

    steps = [[Event(0, "a")], [Event(0, " red")], [Event(0, " circle"), Event(0, answer=ANSWER)]]
    written = writes(stream_of, steps, head=1)
    assert len(written) == 4  # the role at once; a token; a token; the last token + finish + usage + [DONE]
    chunks = sse(written)
    assert sse(written[:1])[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert [len(sse([w])) for w in written] == [1, 1, 1, 4]
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks[1:-2]) == "a red circle"
    assert chunks[-3]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-2]["usage"]["completion_tokens"] == 3 and chunks[-2]["choices"] == []
    assert chunks[-1] == "[DONE]"
    # the same chunks, event by event, as each arriving on its own
    one_by_one = sse(writes(stream_of, [[e] for step in steps for e in step], head=1))
    assert [c if isinstance(c, str) else c["choices"] for c in one_by_one] == \
        [c if isinstance(c, str) else c["choices"] for c in chunks]


def test_an_error_ends_the_stream_after_what_arrived_before_it():
    req = ChatRequest(None, [], "q", {}, [], n=1, stream=True, include_usage=False)

    def stream_of(events):
        return _events(SimpleNamespace(events=lambda scheduled, inbox: events), None, None, req)

    written = writes(stream_of, [[Event(0, "a"), Event(0, error=RuntimeError("boom")), Event(0, "late")]], head=1)
    chunks = sse(written)
    assert len(written) == 2 and chunks[1]["choices"][0]["delta"]["content"] == "a"
    assert "generation failed: RuntimeError: boom" in chunks[2]["error"]["message"] and len(chunks) == 3


def test_ndjson_stream_writes_each_step_once():
    steps = [[Event(0, "a")], [Event(0, " red"), Event(0, " circle"), Event(0, answer=ANSWER)]]
    written = writes(lambda events: _ndjson(SimpleNamespace(events=lambda request, inbox: events), None, None), steps)
    assert len(written) == 2
    lines = [json.loads(line) for line in b"".join(written).decode().splitlines()]
    assert [line["text"] for line in lines] == ["a", "a red", "a red circle"]
