"""A prompt style written as a Jinja chat template (exported processors) renders the token layout the
protocol gives the model: the same ids, with the image tokens where the visual slots are."""
from __future__ import annotations

import pytest

from tinygpt.conversation.chat_template import style_chat_template
from tinygpt.conversation.protocol import Dialogue, PromptStyle, encode

N_IMAGE = 3


@pytest.fixture(scope="module")
def tokenizer(tiny_root):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_root / "tokenizer")
    tok.add_tokens(["<image>"], special_tokens=True)
    return tok


def render_ids(tokenizer, style, messages):
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True,
                                         chat_template=style_chat_template(style, "<image>" * N_IMAGE))
    image = tokenizer.convert_tokens_to_ids("<image>")
    return [tokenizer.pad_token_id if i == image else i for i in tokenizer(text).input_ids]


@pytest.mark.parametrize("template", ["[INST] {} [/INST]", "###Human: {} ###Assistant: ", "USER: {} ASSISTANT: "])
@pytest.mark.parametrize("after", [False, True])
def test_one_question_about_an_image(tokenizer, template, after):
    style = PromptStyle(template=template, end_sym="###", image_after_question=after)
    question = "[vqa] what colour is the circle?"
    want = encode(style, tokenizer, Dialogue.single(style.place_image(question)), N_IMAGE)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    assert render_ids(tokenizer, style, messages) == want.ids


def test_a_conversation_puts_bos_before_later_questions_and_the_end_marker_after_answers(tokenizer):
    style = PromptStyle(template="[INST] {} [/INST]", end_sym="###")
    turns = ((style.place_image("what colour is the circle?"), "red"), ("how many squares are there?", None))
    want = encode(style, tokenizer, Dialogue(turns=turns, multi_turn=True), N_IMAGE)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "what colour is the circle?"}]},
                {"role": "assistant", "content": "red"},
                {"role": "user", "content": "how many squares are there?"}]
    assert render_ids(tokenizer, style, messages) == want.ids
