"""/v1/chat/completions and /v1/models with the official `openai` client against a real server
(127.0.0.1, the tiny model): plain, streamed, multi-turn, stop, seed, usage, bad requests."""
from __future__ import annotations

import base64
import io
import json
import socket

import httpx
import openai
import pytest

from tinygpt.serve.api import create_api
from tinygpt.serve.validation import Limits

LIMITS = Limits(max_new_tokens=16)


def data_uri(image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


@pytest.fixture(scope="module", params=["thread", "process"])
def server(request, tiny_model, make_chat, serve, engine):
    with engine(request.param, LIMITS) as scheduler, serve(create_api(make_chat(tiny_model), LIMITS, scheduler)) as running:
        yield running


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="not-needed", max_retries=0)


def first_turn(image, text="what colour is the circle?"):
    return {"role": "user", "content": [{"type": "text", "text": text},
                                        {"type": "image_url", "image_url": {"url": data_uri(image)}}]}


def test_models(client):
    assert [m.id for m in client.models.list()] == ["tinygpt-v"]


def test_plain_answer_is_the_chat_answer_with_usage(client, server, image):
    r = client.chat.completions.create(model="tinygpt-v", messages=[first_turn(image)], max_tokens=6)
    text = r.choices[0].message.content
    assert text and r.choices[0].message.role == "assistant" and r.object == "chat.completion"
    assert r.choices[0].finish_reason in ("stop", "length")
    assert r.usage.prompt_tokens > 4 and r.usage.completion_tokens > 0  # 4 visual tokens + the text
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    # The same Chat path as the mllm-npu API: the same greedy answer to the same image and question.
    worker = httpx.post(server.url + "/worker_generate", timeout=60, json={
        "input_text": "what colour is the circle?", "image": data_uri(image).split(",", 1)[1], "max_new_tokens": 6})
    assert worker.json()["text"] == text


def test_streamed_answer_equals_the_plain_one(client, image):
    plain = client.chat.completions.create(model="tinygpt-v", messages=[first_turn(image)], max_tokens=6)
    chunks = list(client.chat.completions.create(model="tinygpt-v", messages=[first_turn(image)], max_tokens=6,
                                                 stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [plain.choices[0].finish_reason]
    assert chunks[-1].usage.completion_tokens == plain.usage.completion_tokens


def test_multi_turn_history_is_in_the_prompt(client, image):
    one = client.chat.completions.create(model="tinygpt-v", messages=[first_turn(image)], max_tokens=4)
    two = client.chat.completions.create(model="tinygpt-v", max_tokens=4, messages=[
        first_turn(image), {"role": "assistant", "content": one.choices[0].message.content},
        {"role": "user", "content": "and the square?"}])
    assert two.choices[0].message.content
    assert two.usage.prompt_tokens > one.usage.prompt_tokens + 3


def test_stop_strings_cut_plain_and_streamed_answers(client, image):
    full = client.chat.completions.create(model="tinygpt-v", messages=[first_turn(image)], max_tokens=12)
    text = full.choices[0].message.content
    assert len(text) >= 3
    stop = text[2:4]
    want = text[:text.find(stop)].rstrip()
    cut = client.chat.completions.create(model="tinygpt-v", messages=[first_turn(image)], max_tokens=12, stop=[stop])
    assert cut.choices[0].message.content == want and cut.choices[0].finish_reason == "stop"
    chunks = client.chat.completions.create(model="tinygpt-v", messages=[first_turn(image)], max_tokens=12,
                                            stop=stop, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == want


def test_seeded_sampling_repeats(client, image):
    def sample(seed):
        return client.chat.completions.create(model="tinygpt-v", messages=[first_turn(image)], max_tokens=8,
                                              temperature=1.0, top_p=1.0, seed=seed).choices[0].message.content

    assert sample(7) == sample(7)
    assert len({sample(seed) for seed in range(4)}) > 1  # it does sample: other seeds, other answers


@pytest.mark.parametrize("change, words", [
    (lambda m: [{"role": "user", "content": [{"type": "text", "text": "what?"},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]}], "fetches no url"),
    (lambda m: [{"role": "user", "content": [{"type": "text", "text": "what?"},
                {"type": "image_url", "image_url": {"url": "/etc/passwd"}}]}], "local image paths are off"),
    (lambda m: m[:1] + [{"role": "system", "content": "be nice"}], "before the first user"),
    (lambda m: [{"role": "user", "content": "what is it?"}], "needs an image_url"),
    (lambda m: m + [{"role": "assistant", "content": "red"}], "last message must be the user"),
    (lambda m: m + [{"role": "user", "content": "again?"}], "alternate"),
    (lambda m: [], "non-empty list"),
])
def test_bad_messages_are_openai_style_400s(client, image, change, words):
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="tinygpt-v", messages=change([first_turn(image)]), max_tokens=4)
    assert err.value.status_code == 400 and words in str(err.value).lower()
    assert err.value.body["type"] == "invalid_request_error"


@pytest.mark.parametrize("kwargs, words", [
    (dict(max_tokens=10_000), "'max_tokens' must be between 1 and 16"),
    (dict(temperature=1e-300), "temperature"),
    (dict(stop=["a", "b", "c", "d", "e"]), "up to 4"),
    (dict(extra_body={"top_k": 5}), "unsupported parameter(s): top_k"),
    (dict(logit_bias={"1": 5}), "not implemented by this server: logit_bias"),
    (dict(frequency_penalty=0.5, logprobs=True), "not implemented by this server: frequency_penalty, logprobs"),
    (dict(response_format={"type": "json_object"}), "response_format"),
    (dict(seed=2**70), "'seed' is out of range"),
    (dict(seed=2**64), "'seed' must be between"),
    (dict(temperature=10**400), "'temperature' is out of range"),
])
def test_bad_options_are_400s(client, image, kwargs, words):
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="tinygpt-v", messages=[first_turn(image)], **{"max_tokens": 4, **kwargs})
    assert words in str(err.value)


def test_unknown_routes_and_non_json_bodies_answer_in_openai_shape(server):
    r = httpx.get(server.url + "/v1/nope", timeout=10)
    assert r.status_code == 404 and r.json()["error"]["code"] == 404
    r = httpx.post(server.url + "/v1/chat/completions", content=b"{}", headers={"content-type": "text/plain"}, timeout=10)
    assert r.status_code == 415 and "application/json" in r.json()["error"]["message"]


def test_a_system_message_goes_before_the_first_question(client, image):
    system = "Answer in one word."
    with_system = client.chat.completions.create(model="tinygpt-v", max_tokens=6, messages=[
        {"role": "system", "content": system}, first_turn(image)])
    inline = client.chat.completions.create(model="tinygpt-v", max_tokens=6, messages=[
        first_turn(image, system + "\n\nwhat colour is the circle?")])
    plain = client.chat.completions.create(model="tinygpt-v", max_tokens=6, messages=[first_turn(image)])
    assert with_system.choices[0].message.content == inline.choices[0].message.content
    assert with_system.usage.prompt_tokens == inline.usage.prompt_tokens > plain.usage.prompt_tokens


def test_neutral_values_of_unimplemented_parameters_are_accepted(client, image):
    plain = client.chat.completions.create(model="tinygpt-v", max_tokens=6, messages=[first_turn(image)])
    neutral = client.chat.completions.create(
        model="tinygpt-v", max_tokens=6, messages=[first_turn(image)], frequency_penalty=0, presence_penalty=0,
        logprobs=False, response_format={"type": "text"}, logit_bias={}, user="someone", store=False,
        metadata={"team": "x"}, tool_choice="none")
    assert neutral.choices[0].message.content == plain.choices[0].message.content


HUGE = "1" + "0" * 4999  # a 5000-digit integer: more than Python's int-from-text limit


@pytest.mark.parametrize("body, words", [
    ('{"model": "tinygpt-v", "messages": [], "user": %s}' % HUGE, "more than 4300 digits"),
    ('{"model": "tinygpt-v", "messages": [], "max_tokens": %s}' % HUGE, "more than 4300 digits"),
    ('{"model": "tinygpt-v", "messages": [], "max_tokens": %s}' % HUGE[:4000], "'max_tokens' is out of range"),
])
def test_huge_integers_are_400s(server, body, words):
    r = httpx.post(server.url + "/v1/chat/completions", content=body.encode(),
                   headers={"content-type": "application/json"}, timeout=30)
    assert r.status_code == 400 and words in r.json()["error"]["message"]


def test_broken_http_framing_is_answered_in_json(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: abc\r\n\r\n{}")
        response = b""
        while chunk := s.recv(65536):
            response += chunk
    head, body = response.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 400") and b"application/json" in head.lower()
    parsed = json.loads(body)
    assert parsed["error"]["code"] == parsed["error_code"] == 400 and "malformed" in parsed["text"]


def test_n_choices_are_rows_of_one_batch(client, image):
    one = client.chat.completions.create(model="tinygpt-v", messages=[first_turn(image)], max_tokens=6)
    greedy = client.chat.completions.create(model="tinygpt-v", messages=[first_turn(image)], max_tokens=6, n=2)
    assert [c.index for c in greedy.choices] == [0, 1]
    assert [c.message.content for c in greedy.choices] == [one.choices[0].message.content] * 2

    def sampled():
        r = client.chat.completions.create(model="tinygpt-v", messages=[first_turn(image)], max_tokens=8, n=4,
                                           temperature=1.0, top_p=1.0, seed=11)
        return [c.message.content for c in r.choices], r.usage

    texts, usage = sampled()
    assert sampled()[0] == texts and len(set(texts)) > 1  # each choice repeats with the seed; they differ
    assert usage.completion_tokens >= 4
    chunks = list(client.chat.completions.create(model="tinygpt-v", messages=[first_turn(image)], max_tokens=8, n=4,
                                                 temperature=1.0, top_p=1.0, seed=11, stream=True))
    streamed = ["".join(c.choices[0].delta.content or "" for c in chunks if c.choices and c.choices[0].index == i)
                for i in range(4)]
    assert streamed == texts


def test_metrics_parse_and_count_requests(client, server, image):
    from prometheus_client.parser import text_string_to_metric_families

    def samples():
        text = httpx.get(server.url + "/metrics", timeout=10).text
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(text) for s in family.samples}

    before = samples()
    client.chat.completions.create(model="tinygpt-v", messages=[first_turn(image)], max_tokens=6)
    after = samples()
    key = ("tinygpt_requests_total", (("route", "/v1/chat/completions"), ("status", "200")))
    assert after[key] == before.get(key, 0) + 1
    assert after[("tinygpt_generation_tokens_total", ())] > before.get(("tinygpt_generation_tokens_total", ()), 0)
    assert after[("tinygpt_time_to_first_token_seconds_count", ())] >= 1
    assert after[("tinygpt_prompt_tokens_total", ())] > 4
    # the request's prefill: one more row, its time counted
    assert after[("tinygpt_prefill_rows_total", ())] == before.get(("tinygpt_prefill_rows_total", ()), 0) + 1
    assert after[("tinygpt_prefill_seconds_sum", ())] > before.get(("tinygpt_prefill_seconds_sum", ()), 0)
    for gauge in ("tinygpt_queue_depth", "tinygpt_running_batch_size", "tinygpt_requests_held"):
        assert (gauge, ()) in after
