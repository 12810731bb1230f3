"""Prompt assembly, loss mask and generation of TinyGPTV on a tiny random model."""
from __future__ import annotations

import pytest
import torch

import tinygpt.models.tinygpt_v  # noqa: F401  (registers the "tinygpt_v" arch)
from tiny import bigram_llm, mean_loss, step_loss, tiny_model_config
from tinygpt.models.build import build_model
from tinygpt.conversation.protocol import IGNORE, Dialogue

IMG = "<Img><ImageHere></Img>"


@pytest.fixture(scope="module")
def model(tiny_root):
    torch.manual_seed(0)
    m = build_model(tiny_model_config(tiny_root), "cpu", load_weights=False).eval()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for _, p in sorted(m.named_parameters()):
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)  # LoRA B and norms off their init too
    return m


def ids(model, text):
    return model.tokenizer(text, add_special_tokens=False).input_ids


def test_loss_mask_labels_only_the_answer_and_end_marker(model):
    n_query, width = model.cfg.qformer.num_query_tokens, model.llm.config.hidden_size
    visual = torch.randn(2, n_query, width)
    instructions = [f"{IMG} what colour is the circle?", f"{IMG} [vqa] how many squares are there?"]
    answers = ["red", "2"]
    prompts = [model.wrap(t) for t in instructions]
    embeds, mask, labels = model.embed_inputs([Dialogue.single(t, a) for t, a in zip(instructions, answers)], visual)

    bos = model.tokenizer.bos_token_id
    rows = []
    for prompt, answer in zip(prompts, answers):
        before, after = prompt.split("<ImageHere>")
        prompt_len = 1 + len(ids(model, before)) + n_query + len(ids(model, after))
        target = ids(model, answer + model.cfg.end_sym)
        rows.append((prompt_len, target, len(ids(model, before))))
    total = max(p + len(t) for p, t, _ in rows)
    assert labels.shape == mask.shape == (2, total) and embeds.shape == (2, total, width)
    table = model.llm.get_input_embeddings().weight
    for i, (prompt_len, target, n_before) in enumerate(rows):
        length = prompt_len + len(target)
        # BOS, prompt text and image slots: not labelled; answer + end marker: labelled; padding: not.
        assert labels[i, :prompt_len].eq(IGNORE).all()
        assert labels[i, prompt_len:length].tolist() == target
        assert labels[i, length:].eq(IGNORE).all()
        assert mask[i, :length].eq(1).all() and mask[i, length:].eq(0).all()  # right padding for training
        # the image sits right after BOS + the text before <ImageHere>
        slot = 1 + n_before
        torch.testing.assert_close(embeds[i, slot:slot + n_query], visual[i])
        torch.testing.assert_close(embeds[i, 0], table[bos])
        torch.testing.assert_close(embeds[i, prompt_len:length], table[target])
    # "###" is the answer's last labelled token
    assert model.tokenizer.decode(labels[0][labels[0] != IGNORE]).endswith(model.cfg.end_sym)


def two_samples(model, answers: list[str]) -> dict:
    """A training batch of two cached-feature samples with these answers."""
    feats = torch.randn(2, model.cfg.qformer.num_query_tokens, model.cfg.qformer.width)
    return {"query_features": feats, "answer": answers,
            "instruction_input": [f"{IMG} what colour?", f"{IMG} describe"]}


def test_forward_loss_is_the_mean_nll_of_answer_tokens(model):
    samples = two_samples(model, ["red", "a blue square"])
    feats = samples["query_features"]
    with torch.no_grad():
        out = step_loss(model, samples)
        visual = model.project_queries(feats)
        embeds, mask, labels = model.embed_inputs(
            [Dialogue.single(t, a) for t, a in zip(samples["instruction_input"], samples["answer"])], visual)
        logits = model.llm(inputs_embeds=embeds, attention_mask=mask).logits
    want = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]),
                                             labels[:, 1:].reshape(-1), ignore_index=IGNORE)
    torch.testing.assert_close(out.total / out.units, want)
    assert out.answer_tokens == out.units == (labels[:, 1:] != IGNORE).sum()


def test_sample_reduction_weighs_every_sample_the_same(model):
    samples = two_samples(model, ["red", "a blue square on the left of a red circle"])
    with torch.no_grad():
        by_token = step_loss(model, samples)
        model.cfg.loss_reduction = "sample"
        try:
            by_sample = step_loss(model, samples)
            per_sample = torch.stack([mean_loss(model, {k: v[i:i + 1] for k, v in samples.items()}) for i in range(2)])
        finally:
            model.cfg.loss_reduction = "token"
    torch.testing.assert_close(by_sample.total / by_sample.units, per_sample.mean())
    assert by_sample.units == 2 and by_sample.answer_tokens == by_token.answer_tokens == by_token.units
    # the long answer no longer dominates
    assert not torch.isclose(by_sample.total / by_sample.units, by_token.total / by_token.units)


def test_batched_generation_equals_one_by_one(model):
    size = model.cfg.vision.image_size
    images = torch.randn(3, 3, size, size, generator=torch.Generator().manual_seed(3))
    prompts = [f"{IMG} what colour is the circle?", f"{IMG} [refer] the blue square",
               f"{IMG} [identify] [grounding] [detection] [caption] describe this image in detail."]
    batched = model.generate(images, prompts, max_new_tokens=8)
    single = [model.generate(images[i:i + 1], [p], max_new_tokens=8)[0] for i, p in enumerate(prompts)]
    assert batched == single

    # And the first-step logits agree under left padding (positions and masks right).
    with torch.no_grad():
        visual = model.encode_images(images)
        embeds, mask, _ = model.embed_inputs(prompts, visual)
        last = model.llm(inputs_embeds=embeds, attention_mask=mask).logits[:, -1]
        for i, p in enumerate(prompts):
            e, m, _ = model.embed_inputs([p], visual[i:i + 1])
            torch.testing.assert_close(last[i], model.llm(inputs_embeds=e, attention_mask=m).logits[0, -1],
                                       atol=1e-4, rtol=1e-4)


def test_generation_stops_at_the_end_marker(tiny_root):
    torch.manual_seed(0)
    m = build_model(tiny_model_config(tiny_root), "cpu", load_weights=False).eval()
    prompt_end = ids(m, m.wrap(f"{IMG} what colour?"))[-1]
    answer = ids(m, "red" + m.cfg.end_sym)  # 're', 'd', '###'
    # After "###" the table would go on ("red###red###..."): only the stop string ends it.
    bigram_llm(m, [prompt_end] + answer + answer)

    lengths = []
    generate = m.llm.generate

    def spy(*args, **kwargs):
        out = generate(*args, **kwargs)
        lengths.append(out.shape[1])
        return out

    m.llm.generate = spy
    size = m.cfg.vision.image_size
    assert m.generate(torch.zeros(1, 3, size, size), [f"{IMG} what colour?"], max_new_tokens=20) == ["red"]
    assert lengths == [len(answer)]  # stopped right after the marker, not at max_new_tokens


def test_stage1_loss_is_bos_visual_caption_end_by_hand(tiny_root):
    """TinyGPT-V stages 1-2: no instruction; the LLM reads BOS + visual tokens + caption + "\\n"."""
    cfg = tiny_model_config(tiny_root)
    cfg.prompt_template, cfg.end_sym, cfg.llm.lora.r = "", "\n", 0
    torch.manual_seed(0)
    m = build_model(cfg, "cpu", load_weights=False).eval()
    feats = torch.randn(2, cfg.qformer.num_query_tokens, cfg.qformer.width)
    captions = ["a red circle", "two blue squares on the left"]
    with torch.no_grad():
        loss = mean_loss(m, {"query_features": feats, "answer": captions})
        visual = m.project_queries(feats)
        table = m.llm.get_input_embeddings()
        total, count = 0.0, 0
        for i, caption in enumerate(captions):
            target = torch.tensor(ids(m, caption + "\n"))
            embeds = torch.cat([table(torch.tensor([m.tokenizer.bos_token_id])), visual[i], table(target)])[None]
            logits = m.llm(inputs_embeds=embeds).logits[0]
            n = len(target)
            total += torch.nn.functional.cross_entropy(logits[-n - 1:-1], target, reduction="sum")
            count += n
    torch.testing.assert_close(loss, total / count, atol=1e-6, rtol=0)
