"""`demo.py --engine process`: the model and its scheduler in their own process, behind the same
API (the API tests run on both engines: test_openai_api.py, test_serve_slots.py).  Here: what only
the split has -- many concurrent greedy answers equal to the thread engine's, the queue bound
held on the HTTP side, and a model process that dies turning into 503s and a log line, not hangs."""
from __future__ import annotations

import base64
import io
import logging
import threading

import httpx
import pytest

from tinygpt.serve.api import create_api
from tinygpt.serve.validation import Limits

QUESTIONS = ["what colour is the circle?", "how many squares are there?", "describe this image in detail.",
             "is there a triangle?", "where is the blue square?", "what is left of the square?"]


def body(image, text, **more):
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return {"input_text": text, "image": base64.b64encode(buf.getvalue()).decode(), "max_new_tokens": 6, **more}


def concurrent_answers(url, image, n=12):
    answers = [None] * n

    def ask(i):
        answers[i] = httpx.post(url + "/worker_generate", json=body(image, QUESTIONS[i % len(QUESTIONS)]),
                                timeout=120).json()["text"]

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return answers


@pytest.mark.slow
def test_concurrent_greedy_answers_equal_the_thread_engines(tiny_model, make_chat, serve, engine, image):
    limits = Limits(max_batch_size=4)
    answers = {}
    for kind in ("thread", "process"):
        with engine(kind, limits) as scheduler, serve(create_api(make_chat(tiny_model), limits, scheduler)) as running:
            answers[kind] = concurrent_answers(running.url, image)
    assert all(answers["process"]) and answers["process"] == answers["thread"]


def test_the_queue_bound_is_kept_on_the_http_side(tiny_model, make_chat, serve, engine, image):
    from tinygpt.conversation import GenerationOptions

    chat = make_chat(tiny_model)
    chat.defaults = GenerationOptions(max_new_tokens=300, min_new_tokens=300)  # answers that take a while
    limits = Limits(max_batch_size=1, max_queue=0, max_new_tokens=300)
    with engine("process", limits) as scheduler, serve(create_api(chat, limits, scheduler)) as running:
        first = {}
        thread = threading.Thread(target=lambda: first.update(r=httpx.post(
            running.url + "/worker_generate", json=body(image, QUESTIONS[0], max_new_tokens=300), timeout=120)))
        thread.start()
        with httpx.Client(base_url=running.url, timeout=30) as c:
            while c.get("/health").json()["queue_length"] != 1:
                threading.Event().wait(0.02)
            busy = c.post("/worker_generate", json=body(image, QUESTIONS[1]))
            assert busy.status_code == 429 and busy.headers["retry-after"] == "2"
            thread.join(120)
            assert first["r"].status_code == 200
            assert c.get("/health").json()["queue_length"] == 0  # freed once the answer came
            assert c.post("/worker_generate", json=body(image, QUESTIONS[1])).status_code == 200


def test_a_dead_model_process_gives_503s_and_a_log_line(tiny_model, make_chat, serve, engine, image, caplog):
    from tinygpt.conversation import GenerationOptions

    chat = make_chat(tiny_model)
    chat.defaults = GenerationOptions(max_new_tokens=2000, min_new_tokens=2000)  # still answering when killed
    limits = Limits(max_new_tokens=2000)
    with engine("process", limits) as scheduler, serve(create_api(chat, limits, scheduler)) as running:
        caught = {}
        thread = threading.Thread(target=lambda: caught.update(r=httpx.post(
            running.url + "/worker_generate", json=body(image, QUESTIONS[0], max_new_tokens=2000), timeout=120)))
        with caplog.at_level(logging.ERROR, logger="tinygpt.serve.engine_process"):
            thread.start()
            while httpx.get(running.url + "/health", timeout=10).json()["running"] < 1:
                threading.Event().wait(0.02)
            scheduler.process.kill()
            thread.join(60)
            assert not thread.is_alive()
            assert caught["r"].status_code == 503 and "model process exited" in caught["r"].json()["text"]
            after = httpx.post(running.url + "/worker_generate", json=body(image, QUESTIONS[1]), timeout=30)
            assert after.status_code == 503 and "not running" in after.json()["text"]
        assert any("the model process exited" in r.getMessage() for r in caplog.records)
        assert httpx.get(running.url + "/health", timeout=10).json()["queue_length"] == 0


def test_beam_search_and_streams_cross_the_pipe(tiny_model, make_chat, serve, engine, image):
    limits = Limits()
    got = {}
    for kind in ("thread", "process"):
        with engine(kind, limits) as scheduler, serve(create_api(make_chat(tiny_model), limits, scheduler)) as running:
            beams = httpx.post(running.url + "/worker_generate", json=body(image, QUESTIONS[0], num_beams=2), timeout=60)
            lines = httpx.post(running.url + "/worker_generate", json=body(image, QUESTIONS[1], stream=True),
                               timeout=60).text.splitlines()
            got[kind] = (beams.status_code, beams.json()["text"], lines)
    assert got["process"][0] == 200 and got["process"][1] and len(got["process"][2]) >= 1
    assert got["process"] == got["thread"]


def test_the_web_pages_streams_run_on_the_process_engine(tiny_model, make_chat, engine, image):
    from tinygpt.serve.scheduler import Scheduler, stream_session

    chat = make_chat(tiny_model)
    limits = Limits()

    def answer(scheduler):
        session = chat.session()
        session.upload_image(image)
        session.ask(QUESTIONS[0])
        return list(stream_session(scheduler, session, max_new_tokens=6))

    thread_scheduler = Scheduler(tiny_model)
    try:
        expected = answer(thread_scheduler)
    finally:
        thread_scheduler.close()
    with engine("process", limits) as scheduler:
        assert answer(scheduler) == expected and "".join(expected)
        assert scheduler.held == 0
