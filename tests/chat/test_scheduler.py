"""The serving scheduler (tinygpt/serve/scheduler.py) with the tiny model: rows decoded in one batch
give the answers `TinyGPTV.generate` gives each prompt alone (greedy; mixed lengths, a row joining
mid-decode, rows stopping early), seeds repeat their own row, and every request frees its slot
exactly once (cancelled while queued, while streaming, during its prefill)."""
from __future__ import annotations

import queue
import threading

import pytest

from tinygpt.serve.batching import Row
from tinygpt.serve.scheduler import Busy, Scheduler

QUESTIONS = ["what colour is the circle?", "how many squares are there?", "describe",
             "[vqa] is the red circle left of the blue square in this picture?"]
HISTORY = [("what is it?", "a red circle left of a green triangle"), ("and the square?", "blue")]


@pytest.fixture
def scheduler(tiny_model):
    s = Scheduler(tiny_model, max_batch_size=8, max_queue=8)
    yield s
    s.close()


def session_for(chat, image, question, history=()):
    session = chat.session()
    session.upload_image(image)
    for asked, answered in history:
        session.add_turn(asked, answered)
    session.ask(question)
    return session


def alone(chat, image, question, history=(), **options):
    """The Chat's own answer (transformers' generate, one prompt, no scheduler)."""
    return session_for(chat, image, question, history).answer(**options)


class Collect:
    """A sink gathering one request's events; `answers` once every choice has finished."""

    def __init__(self):
        self.events = queue.Queue()
        self.pieces: dict[int, str] = {}

    def __call__(self, event):
        self.events.put(event)

    def answers(self, n=1, timeout=60):
        done = {}
        while len(done) < n:
            event = self.events.get(timeout=timeout)
            assert event.error is None, event.error
            if event.answer is not None:
                done[event.index] = event.answer
            else:
                self.pieces[event.index] = self.pieces.get(event.index, "") + event.text
        return [done[i] for i in range(n)]


def submit(scheduler, chat, image, question, history=(), n=1, stop=(), choices=None, **options):
    opts = chat.defaults.replace(**options)
    image_t, dialogue, layout = session_for(chat, image, question, history).generation_input(opts.max_new_tokens)
    request = scheduler.reserve(n)
    sink = Collect()
    request.start([Row(image_t, layout, c, dialogue=dialogue) for c in (choices or [opts] * n)], sink, stop)
    return request, sink


def wait_until(condition, timeout=30):
    done = threading.Event()
    for _ in range(int(timeout / 0.01)):
        if condition():
            return
        done.wait(0.01)
    raise AssertionError("condition not reached")


def test_batched_greedy_rows_equal_their_answers_alone(chat, image, scheduler):
    cases = [(q, ()) for q in QUESTIONS] + [(QUESTIONS[0], HISTORY)]  # prompts of different lengths
    expected = [alone(chat, image, q, h, max_new_tokens=12) for q, h in cases]
    started = [submit(scheduler, chat, image, q, h, max_new_tokens=12) for q, h in cases]
    got = [sink.answers()[0] for _, sink in started]
    assert [a.text for a in got] == expected
    assert len({a.prompt_tokens for a in got}) > 2
    for (_, sink), answer in zip(started, got):  # the streamed pieces join to the answer
        assert sink.pieces.get(0, "") == answer.text
    assert scheduler.held == 0


def test_a_row_joining_mid_decode_and_rows_stopping_early(chat, image, scheduler):
    expected_long = alone(chat, image, QUESTIONS[0], max_new_tokens=16, min_new_tokens=16)
    expected_short = [alone(chat, image, q, max_new_tokens=2, min_new_tokens=1) for q in QUESTIONS[1:3]]
    joined = {}

    def join_on_first_piece(event):
        long_sink(event)
        if "rows" not in joined and event.text:  # the model thread is decoding the long row: join it now
            joined["running"] = scheduler.running
            joined["rows"] = [submit(scheduler, chat, image, q, max_new_tokens=2, min_new_tokens=1)
                              for q in QUESTIONS[1:3]]

    long_sink = Collect()
    opts = chat.defaults.replace(max_new_tokens=16, min_new_tokens=16)
    image_t, dialogue, layout = session_for(chat, image, QUESTIONS[0]).generation_input(16)
    request = scheduler.reserve()
    request.start([Row(image_t, layout, opts, dialogue=dialogue)], join_on_first_piece)
    long = long_sink.answers()[0]
    assert joined["running"] == 1
    assert [sink.answers()[0].text for _, sink in joined["rows"]] == expected_short
    assert long.text == expected_long and long.completion_tokens == 16 and long.finish_reason == "length"
    wait_until(lambda: scheduler.held == 0)


def test_stop_strings_end_a_row_early(chat, image, scheduler):
    full = submit(scheduler, chat, image, QUESTIONS[0], max_new_tokens=12)[1].answers()[0]
    stop = full.text[3:5]
    cut = submit(scheduler, chat, image, QUESTIONS[0], stop=(stop,), max_new_tokens=12)[1]
    answer = cut.answers()[0]
    assert answer.text == full.text[:full.text.find(stop)].rstrip() and answer.finish_reason == "stop"
    assert answer.completion_tokens < full.completion_tokens  # generation stopped, not just the text
    assert cut.pieces.get(0, "") == answer.text


def test_each_sampled_row_has_its_own_seed(chat, image, scheduler):
    sampled = chat.defaults.replace(max_new_tokens=8, temperature=1.0, top_p=1.0)
    greedy = chat.defaults.replace(max_new_tokens=8)
    choices = [sampled.replace(seed=7), greedy, sampled.replace(seed=7), sampled.replace(seed=8)]
    batch = [a.text for a in submit(scheduler, chat, image, QUESTIONS[0], n=4, choices=choices)[1].answers(4)]
    lone = submit(scheduler, chat, image, QUESTIONS[0], temperature=1.0, top_p=1.0, max_new_tokens=8, seed=7)
    assert batch[0] == batch[2] == lone[1].answers()[0].text  # a seed repeats its row, in a batch or alone
    assert batch[1] == alone(chat, image, QUESTIONS[0], max_new_tokens=8)
    others = {submit(scheduler, chat, image, QUESTIONS[0], temperature=1.0, top_p=1.0, max_new_tokens=8,
                     seed=s)[1].answers()[0].text for s in range(8, 12)}
    assert len(others) > 1


def test_a_cancelled_stream_frees_its_slot_and_the_batch_goes_on(chat, image, scheduler):
    expected = alone(chat, image, QUESTIONS[1], max_new_tokens=12)
    endless, endless_sink = submit(scheduler, chat, image, QUESTIONS[0], max_new_tokens=200, min_new_tokens=200)
    other, other_sink = submit(scheduler, chat, image, QUESTIONS[1], max_new_tokens=12)
    endless_sink.events.get(timeout=60)  # it is streaming
    assert scheduler.held == 2
    endless.cancel()
    endless.cancel()  # twice: still freed once
    assert other_sink.answers()[0].text == expected
    wait_until(lambda: scheduler.held == 0 and scheduler.running == 0)


def test_cancelled_while_queued_or_during_prefill_frees_once(chat, image, tiny_model):
    scheduler = Scheduler(tiny_model, max_batch_size=1, max_queue=2)
    try:
        first, _ = submit(scheduler, chat, image, QUESTIONS[0], max_new_tokens=200, min_new_tokens=200)
        queued, queued_sink = submit(scheduler, chat, image, QUESTIONS[1], max_new_tokens=4)
        assert scheduler.held == 2
        queued.cancel()  # still waiting behind the full batch: freed at once
        assert scheduler.held == 1
        first.cancel()
        wait_until(lambda: scheduler.held == 0)

        prefill = scheduler.batch.prefill
        victims = []

        def cancelled_during(rows):
            for row in rows:
                row.owner.cancel()
                victims.append(row.owner)
            return prefill(rows)

        scheduler.batch.prefill = cancelled_during
        request, sink = submit(scheduler, chat, image, QUESTIONS[2], max_new_tokens=4)
        wait_until(lambda: victims and scheduler.held == 0 and scheduler.running == 0)
        assert request.released and sink.events.empty()  # no answer for a request nobody waits for
        scheduler.batch.prefill = prefill
        assert submit(scheduler, chat, image, QUESTIONS[2], max_new_tokens=4)[1].answers()[0].text
    finally:
        scheduler.close()


def test_past_the_queue_bound_reserve_refuses(tiny_model):
    scheduler = Scheduler(tiny_model, max_batch_size=1, max_queue=1)
    try:
        held = [scheduler.reserve(), scheduler.reserve()]
        with pytest.raises(Busy) as busy:
            scheduler.reserve()
        assert busy.value.retry_after > 0
        held[0].cancel()
        scheduler.reserve().cancel()  # a freed slot is reusable
        held[1].cancel()
        assert scheduler.held == 0
    finally:
        scheduler.close()
