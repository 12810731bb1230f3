"""#27 item 4: a chat's history is fitted to the context once, in time linear in its size: the same
turns kept as re-encoding the dialogue once per dropped turn (the old way), with each turn's text
tokenised a bounded number of times."""
from __future__ import annotations

import random

import pytest

from tinygpt.conversation.history import Conversation, fit
from tinygpt.conversation.protocol import encode


def fit_by_reencoding(conv, tokenizer, n_query, max_new_tokens, max_positions):
    first = 0
    while True:
        dialogue = conv.dialogue(first)
        if first >= len(conv.turns) - 1:
            return dialogue
        length = len(encode(conv.style, tokenizer, dialogue, n_query))
        if length <= conv.style.max_context_len and length + max_new_tokens <= max_positions:
            return dialogue
        first += 1


class CountingTokenizer:
    """The model's tokenizer, counting the characters it is asked to tokenise."""

    def __init__(self, tokenizer):
        self.tokenizer, self.chars = tokenizer, 0

    def __call__(self, text, **kwargs):
        self.chars += len(text)
        return self.tokenizer(text, **kwargs)

    def __getattr__(self, name):
        return getattr(self.tokenizer, name)


def conversation(style, turns, rng):
    conv = Conversation(style, has_image=True)
    words = ["red", "circle", "blue", "square", "left of", "the", "green triangle", "how many", "0", "9"]
    for i in range(turns):
        conv.add_question(" ".join(rng.choices(words, k=rng.randint(1, 8))) + "?")
        if i < turns - 1:
            conv.set_answer(" ".join(rng.choices(words, k=rng.randint(0, 12))))
    return conv


@pytest.mark.parametrize("turns", [1, 2, 5, 17, 40])
@pytest.mark.parametrize("context, max_new_tokens, positions", [(64, 8, 256), (160, 20, 256), (1000, 100, 120)])
def test_the_same_turns_as_reencoding_once_per_dropped_turn(tiny_model, turns, context, max_new_tokens, positions):
    style = tiny_model.style.replace(max_context_len=context)
    rng = random.Random(turns * 1000 + context)
    conv = conversation(style, turns, rng)
    n_query = tiny_model.n_visual_tokens
    assert fit(conv, tiny_model.tokenizer, n_query, max_new_tokens, positions) == \
        fit_by_reencoding(conv, tiny_model.tokenizer, n_query, max_new_tokens, positions)


def test_the_tokenised_text_is_linear_in_the_history(tiny_model):
    style = tiny_model.style.replace(max_context_len=64)  # a long history that keeps only its last turns
    rng = random.Random(0)
    for turns in (100, 400):
        conv = conversation(style, turns, rng)
        size = sum(len(q) + len(a or "") for q, a in conv.turns)
        counting = CountingTokenizer(tiny_model.tokenizer)
        kept = fit(conv, counting, tiny_model.n_visual_tokens, 8, 256)
        assert len(kept.turns) < 10
        # Each question is tokenised at most twice (as a later turn and as a first-turn candidate),
        # each answer twice, plus the templates around them: a few times the history, never turns x history.
        assert counting.chars < 4 * size + 60 * turns
