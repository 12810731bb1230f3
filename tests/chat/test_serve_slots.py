"""#27 item 5 on a real server: every accepted request frees its slot exactly once, whatever the
client does -- dropped streams, dropped plain requests -- and /health answers while the model is busy."""
from __future__ import annotations

import base64
import io
import json
import socket
import threading
import time

import httpx
import pytest

from tinygpt.serve.api import create_api
from tinygpt.serve.validation import Limits

LIMITS = Limits(max_batch_size=4, max_queue=4)


@pytest.fixture(scope="module", params=["thread", "process"])
def server(request, tiny_model, make_chat, serve, engine):
    from tinygpt.conversation import GenerationOptions

    chat = make_chat(tiny_model)
    chat.defaults = GenerationOptions(max_new_tokens=200, min_new_tokens=200)  # answers that take a while
    with engine(request.param, LIMITS) as scheduler, serve(create_api(chat, LIMITS, scheduler)) as running:
        yield running


@pytest.fixture
def body(image):
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return {"input_text": "what colour is the circle?", "image": base64.b64encode(buf.getvalue()).decode()}


def health(server):
    return httpx.get(server.url + "/health", timeout=10).json()


def settles_to_idle(server, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        h = health(server)
        if h["queue_length"] == 0 and h["running"] == 0:
            return True
        time.sleep(0.05)
    return False


def raw_post(server, body: dict) -> socket.socket:
    data = json.dumps(body).encode()
    s = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    s.sendall(b"POST /worker_generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Content-Length: %d\r\n\r\n" % len(data) + data)
    return s


def test_dropped_streams_free_their_slots(server, body):
    # More dropped streams than the server holds (4 + 4): a leaked slot would refuse the last ones.
    for _ in range(2):
        sockets = [raw_post(server, {**body, "stream": True}) for _ in range(4)]
        for s in sockets:
            received = s.recv(65536)
            assert received.startswith(b"HTTP/1.1 200")
            while b'"text"' not in received:  # the answer has begun streaming
                received += s.recv(65536)
        assert health(server)["running"] >= 1  # /health answers while the model decodes
        for s in sockets:
            s.close()
        assert settles_to_idle(server)
    r = httpx.post(server.url + "/worker_generate", json={**body, "max_new_tokens": 4}, timeout=60)
    assert r.status_code == 200 and r.json()["text"]


def test_dropped_plain_requests_free_their_slots_before_their_answer(server, body):
    def count_499():
        text = httpx.get(server.url + "/metrics", timeout=10).text
        line = [x for x in text.splitlines() if x.startswith('tinygpt_requests_total{route="/worker_generate",status="499"}')]
        return float(line[0].split()[-1]) if line else 0.0

    before = count_499()
    for _ in range(2):
        sockets = [raw_post(server, body) for _ in range(4)]
        deadline = time.monotonic() + 30
        while health(server)["running"] < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        for s in sockets:
            s.close()
        assert settles_to_idle(server)
    assert count_499() == before + 8  # each noticed as gone, not answered into a closed socket


def test_health_answers_while_the_batch_is_full(server, body):
    results = []

    def call():
        results.append(httpx.post(server.url + "/worker_generate", json={**body, "max_new_tokens": 60},
                                  timeout=120).status_code)

    threads = [threading.Thread(target=call) for _ in range(4)]
    for t in threads:
        t.start()
    seen_running = 0
    while any(t.is_alive() for t in threads):
        seen_running = max(seen_running, health(server)["running"])
    for t in threads:
        t.join()
    assert results == [200] * 4 and seen_running >= 2  # requests shared the batch; /health kept answering
    assert settles_to_idle(server)
