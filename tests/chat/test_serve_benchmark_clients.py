"""benchmarks/serve.py's load generator against a real server (127.0.0.1, the tiny model): its light
aiohttp client reads the same streamed answers the official `openai` client reads, and its pool
runs several clients at once, each answer the one its question gets alone."""
from __future__ import annotations

import asyncio

import aiohttp
import openai
import pytest

from benchmarks.serve import QUESTIONS, Clients, ask, ask_http, shapes_png
from tinygpt.serve.api import create_api
from tinygpt.serve.validation import Limits

LIMITS = Limits(max_new_tokens=8)


@pytest.fixture(scope="module")
def served(tiny_model, make_chat, serve):
    """(the server's url, the official client's streamed answer to each question about picture k,
    k = 0, 1, 2)."""
    with serve(create_api(make_chat(tiny_model), LIMITS)) as running:
        client = openai.OpenAI(base_url=running.url + "/v1", api_key="none", max_retries=0)
        yield running.url, {(k, q): ask(client, shapes_png(variant=k), q, 8) for k in range(3) for q in QUESTIONS}


def test_aiohttp_client_reads_what_the_openai_client_reads(served):
    url, lone = served

    async def all_questions():
        async with aiohttp.ClientSession() as session:
            return [await ask_http(session, url, shapes_png(variant=0), q, 8) for q in QUESTIONS]

    for q, got in zip(QUESTIONS, asyncio.run(all_questions())):
        want = lone[0, q]
        assert (got["question"], got["text"], got["tokens"]) == (q, want["text"], want["tokens"])
        assert got["tokens"] > 0 and 0 < got["ttft"] <= got["latency"]


def test_http_pool_runs_clients_at_once_each_answer_its_lone_one(served):
    url, lone = served
    images = [shapes_png(variant=k) for k in range(3)]
    pool = Clients(images, [url], "http")
    try:
        wall, answers, cpu = pool.run(url, 3, 2, 8)
    finally:
        pool.close()
    # client k asks questions k, k+1 about its own picture
    assert sorted((images.index(a["image"]), a["question"]) for a in answers) == sorted(
        (k, QUESTIONS[k + i]) for k in range(3) for i in range(2))
    for a in answers:
        assert a["text"] == lone[images.index(a["image"]), a["question"]]["text"]
    assert wall >= max(a["latency"] for a in answers) and cpu > 0
