"""Text-only batches and MiniGPT-v2-style multi-turn samples ("!@#"-joined turns)."""
import torch

from tiny import mean_loss, step_loss, tiny_model_config
from tinygpt.models.build import build_model
from tinygpt.conversation.protocol import IGNORE, Dialogue, sample_dialogues


def tokens(m, text):
    return m.tokenizer(text, add_special_tokens=False).input_ids


def model(tiny_root):
    torch.manual_seed(0)
    return build_model(tiny_model_config(tiny_root), "cpu")


def test_text_only_batch_has_no_visual_tokens_and_a_loss(tiny_root):
    m = model(tiny_root)
    out = step_loss(m, {"instruction_input": ["describe a circle"], "answer": ["round"]})
    assert torch.isfinite(out.total) and out.answer_tokens > 0
    dialogues = sample_dialogues({"instruction_input": ["x"], "answer": ["y"]})
    assert dialogues == [Dialogue.single("x", "y", has_image=False)]
    _, _, labels = m.embed_inputs(dialogues, torch.zeros(1, 0, m.llm.config.hidden_size))
    n_answer = len(tokens(m, "y" + m.cfg.end_sym))
    assert (labels != IGNORE).sum() == n_answer


def test_multi_turn_sample_labels_every_answer_and_only_the_answers(tiny_root):
    m = model(tiny_root)
    sample = {"instruction_input": ["<Img><ImageHere></Img> q one!@#q two"], "answer": ["red!@#blue"],
              "connect_sym": ["!@#"], "image": torch.zeros(1, 3, 28, 28)}
    dialogues = sample_dialogues(sample)
    assert dialogues == [Dialogue((("<Img><ImageHere></Img> q one", "red"), ("q two", "blue")), multi_turn=True)]
    _, mask, labels = m.embed_inputs(dialogues, m.encode_images(sample["image"]))
    labelled = labels[labels != IGNORE].tolist()
    assert labelled == tokens(m, "red" + m.cfg.end_sym) + tokens(m, "blue" + m.cfg.end_sym)
    # The BOS text in front of the second question is masked out of attention (pad = BOS).
    second = tokens(m, m.tokenizer.bos_token + m.wrap("q two"))
    assert second[0] == m.tokenizer.bos_token_id
    assert mask[0].tolist().count(0) == second.count(m.tokenizer.pad_token_id)
    assert torch.isfinite(mean_loss(m, sample))
