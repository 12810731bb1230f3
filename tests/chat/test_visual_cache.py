"""The server's visual cache (tinygpt/serve/visual_cache.py): an image seen again (the next turn of
an API conversation, which resends it) is not encoded again, its answers are the same as without
the cache, and the cache keeps at most its capacity."""
from __future__ import annotations

import torch
from PIL import Image

from tinygpt.serve.scheduler import Scheduler
from tinygpt.serve.visual_cache import VisualCache, image_key

from test_scheduler import HISTORY, QUESTIONS, alone, submit


class CountingTower:
    """Counts the images the model encodes (wraps TinyGPTV.encode_images)."""

    def __init__(self, model, monkeypatch):
        self.images = 0
        real = model.encode_images

        def encode(images):
            self.images += len(images)
            return real(images)

        monkeypatch.setattr(model, "encode_images", encode)


def test_image_key_follows_the_pixels_not_the_tensor_object():
    a = torch.rand(3, 8, 8)
    assert image_key(a) == image_key(a.clone())
    b = a.clone()
    b[0, 0, 0] += 1e-3
    assert image_key(a) != image_key(b)
    assert image_key(a) != image_key(a.double())  # the same values in another dtype: another input
    assert image_key(a) != image_key(a.reshape(3, 4, 16))


def test_only_images_not_held_are_encoded_and_the_least_recent_leave():
    calls = []

    def encode(images):
        calls.append(len(images))
        return images.mean(dim=(2, 3))[:, None, :].repeat(1, 2, 1)  # [n, 2 tokens, 3]

    cache = VisualCache(capacity=2)
    a, b, c = (torch.full((3, 4, 4), float(v)) for v in (1, 2, 3))
    out = cache.encode([a, b, a.clone()], encode)
    assert calls == [2] and out.shape == (3, 2, 3)  # a's copy: the same pixels, encoded once
    assert torch.equal(out[0], out[2]) and out[1, 0, 0] == 2
    out = cache.encode([b, c], encode)  # b held, c new: c alone is encoded; a is now the oldest
    assert calls == [2, 1] and cache.hits == 1 and len(cache) == 2
    assert out[1, 0, 0] == 3
    cache.encode([a], encode)  # a left when c came in (capacity 2)
    assert calls == [2, 1, 1]
    off = VisualCache(capacity=0)
    off.encode([a], encode)
    off.encode([a], encode)
    assert calls == [2, 1, 1, 1, 1] and len(off) == 0


def test_the_next_turn_about_the_same_image_skips_its_encoding_and_answers_the_same(chat, image, tiny_model,
                                                                                      monkeypatch):
    expected = [alone(chat, image, QUESTIONS[0], max_new_tokens=8), alone(chat, image, QUESTIONS[0], HISTORY,
                                                                          max_new_tokens=8)]
    other = Image.new("RGB", image.size, "white")
    expected_other = alone(chat, other, QUESTIONS[1], max_new_tokens=8)
    tower = CountingTower(tiny_model, monkeypatch)
    scheduler = Scheduler(tiny_model, max_batch_size=8, max_queue=8, visual_cache_size=4)
    try:
        first = submit(scheduler, chat, image, QUESTIONS[0], max_new_tokens=8)[1].answers()[0]
        assert tower.images == 1
        # the next turn resends the image (with the history): not encoded again, same answer as uncached
        second = submit(scheduler, chat, image, QUESTIONS[0], HISTORY, max_new_tokens=8)[1].answers()[0]
        assert tower.images == 1
        assert [first.text, second.text] == expected
        # another image is encoded
        assert submit(scheduler, chat, other, QUESTIONS[1], max_new_tokens=8)[1].answers()[0].text == expected_other
        assert tower.images == 2
        assert "tinygpt_visual_cache_hits_total 1.0" in scheduler.metrics.render().decode()
    finally:
        scheduler.close()
