"""Chat histories render as the protocol lays out training samples; end markers never reach users."""
from __future__ import annotations

import pytest

from tinygpt.common.config import ModelConfig
from tinygpt.conversation import Conversation, PromptStyle, VisibleText

BOS = "<|endoftext|>"
HUMAN = PromptStyle(template="###Human: {} ###Assistant: ", end_sym="###")
INST = PromptStyle(template="[INST] {} [/INST]", end_sym="###")


def chat_text(style: PromptStyle, turns, has_image=True, first=0) -> str:
    conv = Conversation(style, [list(t) for t in turns], has_image=has_image)
    return style.render(conv.dialogue(first), BOS)


def test_stage_3_template_one_and_two_turns():
    assert chat_text(HUMAN, [("What is in the image?", None)]) == \
        "###Human: <Img><ImageHere></Img> What is in the image? ###Assistant: "
    assert chat_text(HUMAN, [("What is in the image?", "A red circle."), ("What colour is it?", None)]) == (
        "###Human: <Img><ImageHere></Img> What is in the image? ###Assistant: A red circle.###"
        "<|endoftext|>###Human: What colour is it? ###Assistant: ")


def test_stage_4_template_two_turns_and_question_first_image():
    assert chat_text(INST, [("[vqa] What is in the image?", "A red circle."), ("[vqa] What colour is it?", None)]) == (
        "[INST] <Img><ImageHere></Img> [vqa] What is in the image? [/INST]A red circle.###"
        "<|endoftext|>[INST] [vqa] What colour is it? [/INST]")
    style = INST.replace(image_after_question=True)
    assert chat_text(style, [("[vqa] where is the red circle?", "top left"), ("and the square?", None)]) == (
        "[INST] [vqa] where is the red circle? <Img><ImageHere></Img> [/INST]top left###"
        "<|endoftext|>[INST] and the square? [/INST]")


@pytest.mark.parametrize("style", [HUMAN, INST])
def test_one_turn_equals_the_training_wrap(style):
    instruction = "<Img><ImageHere></Img> describe this image."
    assert chat_text(style, [("describe this image.", None)]) == style.template.format(instruction)


def test_style_comes_from_config_not_stage():
    cfg = ModelConfig(prompt_template="<user> {} <bot>", end_sym="</s>")
    style = PromptStyle.from_config(cfg)
    assert chat_text(style, [("q1", "a1"), ("q2", None)]) == \
        "<user> <Img><ImageHere></Img> q1 <bot>a1</s><|endoftext|><user> q2 <bot>"
    unset = PromptStyle.from_config(ModelConfig())
    assert (unset.template, unset.end_sym, unset.image_after_question) == ("###Human: {} ###Assistant: ", "###", False)


def test_template_needs_one_slot():
    with pytest.raises(ValueError, match="exactly one"):
        PromptStyle(template="###Human: ###Assistant: ")


def test_conversation_state_rules():
    conv = Conversation(HUMAN, has_image=True)
    conv.add_question("q1")
    with pytest.raises(ValueError, match="not been answered"):
        conv.add_question("q2")
    conv.set_answer("a1")
    with pytest.raises(ValueError, match="no question"):
        conv.set_answer("again")
    conv.add_question("q2")
    # Dropping old turns to fit the context moves the image to the first kept question.
    assert HUMAN.render(conv.dialogue(first=1), BOS) == "###Human: <Img><ImageHere></Img> q2 ###Assistant: "
    conv.drop_pending()
    assert conv.turns == [["q1", "a1"]]


def test_text_only_conversation_has_no_placeholder():
    assert chat_text(INST, [("hello", None)], has_image=False) == "[INST] hello [/INST]"


# ----------------------------------------------------------------------------- end marker
def _stream(end, pieces):
    v = VisibleText(end)
    out = [v.feed(p) for p in pieces] + [v.flush()]
    return [p for p in out if p]


def test_end_marker_cut_while_streaming():
    assert _stream("###", [" The", " red", " circle", "#", "##", "Human: more"]) == ["The", " red", " circle"]
    assert "".join(_stream("###", [" The red#", "##Human"])) == "The red"


def test_partial_end_marker_is_held_back_then_released():
    assert _stream("###", ["a #", "# b"]) == ["a", " ## b"]
    assert _stream("###", ["ends with ##"]) == ["ends with", " ##"]  # no marker after all: flushed at the end


def test_end_marker_eos_and_trailing_space():
    assert "".join(_stream("<|endoftext|>", ["{<10><20>", "<30><40>} ", "<|endo", "ftext|>x"])) == \
        "{<10><20><30><40>}"
    assert _stream("", ["  hi ", "there  "]) == ["hi", " there"]


@pytest.mark.parametrize("end, raw, clean", [
    ("###", " red circle###Human: what", "red circle"),
    ("###", "Assistant: red###", "red"),
    ("<|endoftext|>", " {<1><2><3><4>}<|endoftext|>", "{<1><2><3><4>}"),
])
def test_clean_answer_cuts_end_marker(end, raw, clean):
    assert PromptStyle(end_sym=end).clean_answer(raw) == clean
