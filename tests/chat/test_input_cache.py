"""The server's cache of decoded model inputs (tinygpt/serve/handoff.py, on tinygpt/serve/lru.py): an
image file sent again (the next turn of an API conversation) is not decoded again, its answer is
the one a fresh decode gives, another encoding of the same picture is decoded (its bytes differ),
and the cache keeps at most its entries and bytes."""
from __future__ import annotations

import base64
import io

import httpx
import openai
import pytest
import torch

from tinygpt.serve import handoff
from tinygpt.serve.api import create_api
from tinygpt.serve.lru import LRU
from tinygpt.serve.validation import Limits


def test_lru_keeps_the_most_recently_used_within_its_entries_and_bytes():
    four = torch.zeros(1)  # 4 bytes
    cache = LRU(capacity=3, max_bytes=12)
    for key in "abc":
        cache.put(key, four)
    assert cache.get("a") is four  # a is now the most recent: b is the oldest
    cache.put("d", four)
    assert "b" not in cache and len(cache) == 3 and cache.bytes == 12
    cache.put("big", torch.zeros(2))  # 8 bytes: the two oldest (c, a) leave to stay within 12
    assert [k in cache for k in "acd"] == [False, False, True] and cache.bytes == 12
    cache.put("huge", torch.zeros(4))  # 16 bytes: over the bound on its own, never kept
    assert "huge" not in cache and cache.bytes == 12
    cache.put("d", torch.zeros(2))  # d replaced by 8 bytes (its old 4 no longer count): big leaves
    assert "big" not in cache and cache.bytes == 8 and cache.get("d").numel() == 2
    off = LRU(capacity=0)
    off.put("a", four)
    assert len(off) == 0 and off.get("a") is None
    with pytest.raises(ValueError, match=">= 0"):
        LRU(capacity=-1)


def png_uri(image, compress_level=6) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=compress_level)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def ask(client, uri: str, question: str = "what colour is the circle?") -> str:
    r = client.chat.completions.create(model="tinygpt-v", max_tokens=6, messages=[{"role": "user", "content": [
        {"type": "text", "text": question}, {"type": "image_url", "image_url": {"url": uri}}]}])
    return r.choices[0].message.content


def input_cache_hits(url: str) -> float:
    for line in httpx.get(url + "/metrics", timeout=30).text.splitlines():
        if line.startswith("tinygpt_input_cache_hits_total "):
            return float(line.split()[1])
    raise AssertionError("no tinygpt_input_cache_hits_total in /metrics")


class CountingDecoder:
    """Counts the image files the server decodes (wraps handoff.open_image)."""

    def __init__(self, monkeypatch):
        self.files = 0
        real = handoff.open_image

        def open_image(raw, limits):
            self.files += 1
            return real(raw, limits)

        monkeypatch.setattr(handoff, "open_image", open_image)


@pytest.mark.parametrize("kind", ["thread", "process"])
def test_a_resent_image_file_is_not_decoded_again_and_answers_the_same(kind, tiny_model, make_chat, serve, engine,
                                                                        image, monkeypatch):
    limits = Limits(max_new_tokens=16)
    decoder = CountingDecoder(monkeypatch)
    with engine(kind, limits) as scheduler, serve(create_api(make_chat(tiny_model), limits, scheduler)) as running:
        client = openai.OpenAI(base_url=running.url + "/v1", api_key="none", max_retries=0)
        uri = png_uri(image)
        first = ask(client, uri)
        assert decoder.files == 1 and input_cache_hits(running.url) == 0
        # the next turn resends the same file: its model input comes from the cache, the answer is the same
        assert ask(client, uri) == first
        assert decoder.files == 1 and input_cache_hits(running.url) == 1
        # the same picture in other bytes (another PNG compression) is another file: decoded
        other_bytes = png_uri(image, compress_level=1)
        assert other_bytes != uri
        assert ask(client, other_bytes) == first
        assert decoder.files == 2
        # the mllm-npu route shares the cache (its base64 is the same file)
        worker = httpx.post(running.url + "/worker_generate", timeout=60, json={
            "input_text": "what colour is the circle?", "image": uri.split(",", 1)[1], "max_new_tokens": 6})
        assert worker.status_code == 200 and decoder.files == 2 and input_cache_hits(running.url) == 2


def test_without_the_cache_every_request_decodes_its_image(tiny_model, make_chat, serve, image, monkeypatch):
    limits = Limits(max_new_tokens=16, visual_cache_size=0)
    decoder = CountingDecoder(monkeypatch)
    with serve(create_api(make_chat(tiny_model), limits)) as running:
        client = openai.OpenAI(base_url=running.url + "/v1", api_key="none", max_retries=0)
        uri = png_uri(image)
        assert ask(client, uri) == ask(client, uri)
        assert decoder.files == 2 and input_cache_hits(running.url) == 0


def test_a_bad_file_is_refused_again_when_resent(tiny_model, make_chat, serve, monkeypatch):
    # A file that failed to decode was never cached: the second try gets the same 4xx, not a 500.
    limits = Limits(max_new_tokens=16)
    with serve(create_api(make_chat(tiny_model), limits)) as running:
        client = openai.OpenAI(base_url=running.url + "/v1", api_key="none", max_retries=0)
        uri = "data:image/png;base64," + base64.b64encode(b"\x89PNG\r\n\x1a\n not really").decode()
        for _ in range(2):
            with pytest.raises(openai.APIStatusError) as caught:
                ask(client, uri)
            assert caught.value.status_code == 415
