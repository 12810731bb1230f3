"""Conversation templates render exactly as TinyGPT-V renders them; end markers never reach users."""
from __future__ import annotations

import pytest

from tinygpt.common.config import ModelConfig
from tinygpt.conversation import Conversation, Template, VisibleText
from tinygpt.models.tinygpt_v import TinyGPTV

HUMAN = ("###Human: {} ###Assistant: ", "###")
INST = ("[INST] {} [/INST]", "<|endoftext|>")


def template(kind) -> Template:
    cfg = ModelConfig()
    cfg.prompt_template, cfg.end_sym = kind
    return Template.from_config(cfg)


def test_stage_1_3_template_one_turn():
    t = template(HUMAN)
    assert t.render([("What is in the image?", None)]) == \
        "###Human: <Img><ImageHere></Img> What is in the image? ###Assistant: "
    assert not t.instruct


def test_stage_1_3_template_two_turns():
    t = template(HUMAN)
    turns = [("What is in the image?", "A red circle."), ("What colour is it?", None)]
    assert t.render(turns) == ("###Human: <Img><ImageHere></Img> What is in the image? ###Assistant: "
                               "A red circle.###Human: What colour is it? ###Assistant: ")


def test_image_after_question_closes_the_first_question_only():
    cfg = ModelConfig(image_after_question=True)
    cfg.prompt_template, cfg.end_sym = INST
    t = Template.from_config(cfg)
    turns = [("[vqa] where is the red circle?", "top left"), ("and the square?", None)]
    assert t.render(turns) == ("[INST] [vqa] where is the red circle? <Img><ImageHere></Img> [/INST]top left"
                               "<|endoftext|>[INST] and the square? [/INST]")
    assert t.render([("", None)]) == "[INST] <Img><ImageHere></Img> [/INST]"


def test_stage_4_template_one_turn():
    t = template(INST)
    assert t.render([("[vqa] What is in the image?", None)]) == \
        "[INST] <Img><ImageHere></Img> [vqa] What is in the image? [/INST]"
    assert t.instruct


def test_stage_4_template_two_turns():
    t = template(INST)
    turns = [("[vqa] What is in the image?", "A red circle."), ("[vqa] What colour is it?", None)]
    assert t.render(turns) == ("[INST] <Img><ImageHere></Img> [vqa] What is in the image? [/INST]A red circle."
                               "<|endoftext|>[INST] [vqa] What colour is it? [/INST]")


@pytest.mark.parametrize("kind", [HUMAN, INST])
def test_one_turn_equals_the_training_wrap(kind):
    cfg = ModelConfig()
    cfg.prompt_template, cfg.end_sym = kind
    instruction = "<Img><ImageHere></Img> describe this image."
    assert template(kind).wrap(instruction) == cfg.prompt_template.format(instruction)
    assert template(kind).render([("describe this image.", None)]) == cfg.prompt_template.format(instruction)


def test_template_comes_from_config_not_stage():
    cfg = ModelConfig()
    cfg.prompt_template, cfg.end_sym = "<user> {} <bot>", "</s>"
    t = Template.from_config(cfg)
    assert t.render([("q1", "a1"), ("q2", None)]) == "<user> <Img><ImageHere></Img> q1 <bot>a1</s><user> q2 <bot>"


def test_template_needs_one_slot():
    cfg = ModelConfig()
    cfg.prompt_template = "###Human: ###Assistant: "
    with pytest.raises(ValueError, match="exactly one"):
        Template.from_config(cfg)


def test_only_last_turn_may_be_open():
    with pytest.raises(ValueError, match="only the last turn"):
        template(HUMAN).render([("q1", None), ("q2", None)])


def test_conversation_state_rules():
    conv = Conversation(template(HUMAN), has_image=True)
    conv.add_question("q1")
    with pytest.raises(ValueError, match="not been answered"):
        conv.add_question("q2")
    conv.set_answer("a1")
    with pytest.raises(ValueError, match="no question"):
        conv.set_answer("again")
    conv.add_question("q2")
    assert conv.prompt(first=1) == "###Human: <Img><ImageHere></Img> q2 ###Assistant: "
    conv.drop_pending()
    assert conv.turns == [["q1", "a1"]]


def test_text_only_conversation_has_no_placeholder():
    assert template(INST).render([("hello", None)], image=False) == "[INST] hello [/INST]"


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
def test_model_clean_answer_cuts_end_marker(end, raw, clean):
    class Stub:
        cfg = ModelConfig(end_sym=end)

    assert TinyGPTV.clean_answer(Stub(), raw) == clean
