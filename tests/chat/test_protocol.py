"""The text protocol against TinyGPT-V's own rules (`minigpt4/models/minigpt_base.py`), with the
expected ids written out by hand on a word-level tokenizer whose ids are known.

The original's rules, as facts:
* training: BOS + condition + target; the condition is the templated first instruction with the
  visual tokens at <ImageHere> (text segments tokenised without special tokens), or, with no
  instruction, the visual tokens alone; the target is tokens(answer + end_sym)[:max_txt_len],
  labelled except where a token equals the pad id; attention 1;
* multi-turn (`tokenize_conversation`): a1+end, BOS text + template(q2) (masked), a2+end, ... cut at
  max_txt_len; answers labelled as they are; attention = (id != pad id);
* generation (`get_context_emb`): no BOS (the first segment is tokenised with add_special_tokens,
  which adds nothing for Phi-2's tokenizer), left padding.
"""
from __future__ import annotations

import pytest

from tinygpt.conversation.protocol import (
    IGNORE, Dialogue, PromptStyle, encode, pad_rows, place_image, sample_dialogues, split_sample,
)

I = IGNORE
# A word-level tokenizer: whitespace splits, "###" is its own token, <|endoftext|> is bos = eos =
# pad (Phi-2's arrangement) and is recognised inside text.
VOCAB = ["<|endoftext|>", "###", "Human:", "Assistant:", "<Img>", "</Img>", "[INST]", "[/INST]",
         "q1", "q2", "a1", "a2", "[vqa]", "red", "circle", "[UNK]"]
E, H3, HUMAN, ASSIST, IMG, END_IMG, INST, END_INST, Q1, Q2, A1, A2, VQA, RED, CIRCLE, _ = range(len(VOCAB))
PAD = E
STAGE3 = PromptStyle(template="###Human: {} ###Assistant: ", end_sym="###")
STAGE4 = PromptStyle(template="[INST] {} [/INST]", end_sym="###")
NO_TEMPLATE = PromptStyle(template="", end_sym="###")
N_QUERY = 2


@pytest.fixture(scope="module")
def tok():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(VOCAB)}, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(),
                                                  pre_tokenizers.Split("###", behavior="isolated")])
    return PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                   pad_token="<|endoftext|>", unk_token="[UNK]")


def layout(tok, style, dialogue, n_query=N_QUERY):
    out = encode(style, tok, dialogue, n_query)
    return out.ids, out.labels, out.attention, out.image_at


def test_stage3_single_turn_training_and_generation(tok):
    d = Dialogue.single("<Img><ImageHere></Img> q1", "a1")
    ids, labels, attention, at = layout(tok, STAGE3, d)
    assert ids == [E, H3, HUMAN, IMG, PAD, PAD, END_IMG, Q1, H3, ASSIST, A1, H3]
    assert labels == [I] * 10 + [A1, H3]
    assert attention == [1] * 12 and at == 4
    # Generation: the same prompt without BOS and without the answer.
    ids, labels, attention, at = layout(tok, STAGE3, Dialogue.single("<Img><ImageHere></Img> q1"))
    assert ids == [H3, HUMAN, IMG, PAD, PAD, END_IMG, Q1, H3, ASSIST] and at == 3
    assert labels == [I] * 9 and attention == [1] * 9


def test_stage4_template_and_question_first_image(tok):
    style = STAGE4.replace(image_after_question=True)
    question = style.place_image("[vqa] q1")
    assert question == "[vqa] q1 <Img><ImageHere></Img>"
    ids, labels, _, at = layout(tok, style, Dialogue.single(question, "red"))
    assert ids == [E, INST, VQA, Q1, IMG, PAD, PAD, END_IMG, END_INST, RED, H3] and at == 5
    assert labels == [I] * 9 + [RED, H3]


def test_no_instruction_is_the_visual_tokens_alone(tok):
    # TinyGPT-V stages 1-2: BOS + visual tokens + caption + end_sym, no <Img> text around them.
    ids, labels, attention, at = layout(tok, NO_TEMPLATE, Dialogue.single(None, "red circle"))
    assert ids == [E, PAD, PAD, RED, CIRCLE, H3] and at == 1
    assert labels == [I, I, I, RED, CIRCLE, H3] and attention == [1] * 6
    assert sample_dialogues({"image": None, "answer": ["red circle"]}) == [Dialogue.single(None, "red circle")]


def test_multi_turn_layout_is_tokenize_conversation(tok):
    d = split_sample("<Img><ImageHere></Img> q1!@#q2", "a1!@#a2", "!@#")
    assert d.multi_turn and d.turns == (("<Img><ImageHere></Img> q1", "a1"), ("q2", "a2"))
    ids, labels, attention, at = layout(tok, STAGE4, d)
    assert ids == [E, INST, IMG, PAD, PAD, END_IMG, Q1, END_INST, A1, H3, E, INST, Q2, END_INST, A2, H3]
    assert labels == [I] * 8 + [A1, H3] + [I] * 4 + [A2, H3]
    # attention = ids != pad in the tail: the BOS text in front of q2 is not attended to.
    assert attention == [1] * 10 + [0, 1, 1, 1] + [1, 1]
    assert at == 3
    assert STAGE3.render(Dialogue((("q1", "a1"), ("q2", "a2")), multi_turn=True), "<|endoftext|>") == \
        "###Human: q1 ###Assistant: a1###<|endoftext|>###Human: q2 ###Assistant: a2###"


def test_multi_turn_tail_is_cut_at_max_txt_len(tok):
    d = split_sample("<Img><ImageHere></Img> q1!@#q2", "a1!@#a2", "!@#")
    ids, labels, _, _ = layout(tok, STAGE4.replace(max_txt_len=5), d)
    assert ids[8:] == [A1, H3, E, INST, Q2] and labels[8:] == [A1, H3, I, I, I]


def test_single_turn_target_is_cut_and_pad_tokens_are_not_labelled(tok):
    style = STAGE4.replace(end_sym="<|endoftext|>", max_txt_len=2)
    ids, labels, attention, _ = layout(tok, style, Dialogue.single("<Img><ImageHere></Img> q1", "red circle"))
    assert ids[-2:] == [RED, CIRCLE] and labels[-2:] == [RED, CIRCLE]  # end marker cut by max_txt_len
    ids, labels, attention, _ = layout(tok, style.replace(max_txt_len=8),
                                       Dialogue.single("<Img><ImageHere></Img> q1", "red"))
    # An end marker equal to the pad id is never supervised (why stage 4 ends with "###").
    assert ids[-2:] == [RED, PAD] and labels[-2:] == [RED, I] and attention[-2:] == [1, 1]


def test_chat_generation_layout_equals_training_without_bos_and_answer(tok):
    from tinygpt.conversation.history import Conversation

    conv = Conversation(STAGE4, has_image=True)
    conv.add_question("q1")
    conv.set_answer("a1")
    conv.add_question("q2")
    gen = encode(STAGE4, tok, conv.dialogue(), N_QUERY)
    conv.set_answer("a2")
    train = encode(STAGE4, tok, conv.dialogue(), N_QUERY)
    n = len(gen)
    assert train.ids[0] == E and train.ids[1:1 + n] == gen.ids
    assert train.attention[1:1 + n] == gen.attention and train.labels[1:1 + n] == gen.labels
    assert train.image_at == gen.image_at + 1
    assert gen.ids == [INST, IMG, PAD, PAD, END_IMG, Q1, END_INST, A1, H3, E, INST, Q2, END_INST]
    assert gen.attention == [1] * 9 + [0, 1, 1, 1]


def test_text_only_and_candidate_ranking_layouts(tok):
    ids, labels, _, at = layout(tok, STAGE4, Dialogue.single("q1", "a1", has_image=False), n_query=0)
    assert ids == [E, INST, Q1, END_INST, A1, H3] and labels == [I] * 4 + [A1, H3] and at == -1
    # Ranking a candidate = the training sequence of (instruction, candidate), as TinyGPT-V's multi_select.
    rows = [encode(STAGE4, tok, Dialogue.single("<Img><ImageHere></Img> q1", c), N_QUERY) for c in ("red", "red circle")]
    ids, labels, attention, starts = pad_rows(rows, PAD, left=False)
    assert ids[0] == [E, INST, IMG, PAD, PAD, END_IMG, Q1, END_INST, RED, H3, PAD]
    assert labels[0][-3:] == [RED, H3, I] and attention[0][-1] == 0 and starts == [3, 3]


def test_generation_rows_are_left_padded(tok):
    rows = [encode(STAGE4, tok, Dialogue.single(p), N_QUERY)
            for p in ("<Img><ImageHere></Img> q1", "<Img><ImageHere></Img> q1 red circle")]
    ids, _, attention, starts = pad_rows(rows, PAD, left=True)
    assert ids[0] == [PAD, PAD, INST, IMG, PAD, PAD, END_IMG, Q1, END_INST]
    assert attention[0] == [0, 0] + [1] * 7 and starts == [4, 2]


def test_bad_dialogues_are_refused_with_a_clear_message(tok):
    with pytest.raises(ValueError, match="must contain <ImageHere>"):
        encode(STAGE4, tok, Dialogue.single("q1", "a1"), N_QUERY)
    with pytest.raises(ValueError, match="several <ImageHere>"):
        encode(STAGE4, tok, Dialogue.single("<ImageHere> <ImageHere>", "a1"), N_QUERY)
    with pytest.raises(ValueError, match="2 questions but 1 answers"):
        split_sample("q1!@#q2", "a1", "!@#")
    with pytest.raises(ValueError, match="only the last turn"):
        Dialogue((("q1", None), ("q2", "a2")))
    with pytest.raises(ValueError, match="exactly one"):
        PromptStyle(template="{} and {}")


def test_style_records_round_trip_and_answers_are_cut_at_the_marker():
    style = STAGE4.replace(image_after_question=True, image_size=448)
    fields = PromptStyle.read_record(style.record(), "x.safetensors")
    assert fields == {"template": "[INST] {} [/INST]", "end_sym": "###", "image": "<Img><ImageHere></Img>",
                      "image_after_question": True, "image_size": 448}
    assert STAGE4.clean_answer(" red###Human: more") == "red"
    assert STAGE3.clean_answer("Assistant: red###") == "red"
    assert place_image("what is it?") == "<Img><ImageHere></Img> what is it?"
    with pytest.raises(ValueError, match="prompt_style metadata"):
        PromptStyle.read_record('{"colour": 1}', "x.safetensors")


def test_protocol_modules_do_not_import_torch():
    import subprocess
    import sys

    code = ("import sys; import tinygpt.conversation.protocol, tinygpt.conversation.boxes, "
            "tinygpt.conversation.history; print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
