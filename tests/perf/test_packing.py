"""Sequence packing (`run.pack_length`): several samples per row with a block-diagonal causal mask
and restarting position ids give the same per-sample answer NLL and the same gradients as one
padded row per sample -- on TinyGPT-V's Phi subclass (sdpa and eager, fused QKV, partial rotary)
and on stock transformers LLMs -- and the layout is what conversation/packing.py promises."""
from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, PhiConfig, PhiForCausalLM

from tiny import tiny_model_config
from tinygpt.common.config import Config
from tinygpt.common.errors import UserError
from tinygpt.conversation.packing import pack_rows, place
from tinygpt.conversation.protocol import CONNECT_SYM, IGNORE, Layout
from tinygpt.models import sequences
from tinygpt.models.build import build_model
from tinygpt.tasks.image_text import ImageTextTask

IMG = "<Img><ImageHere></Img>"


def _layout(n: int, answer: int, image_at: int = -1, masked_at: int = -1) -> Layout:
    ids = [(7 * k + n) % 50 + 1 for k in range(n)]
    labels = [IGNORE] * (n - answer) + ids[n - answer:]
    attention = [0 if k == masked_at else 1 for k in range(n)]
    return Layout(ids, labels, attention, image_at)


def test_layout_positions_segments_and_capacity():
    rows = [_layout(5, 2, image_at=1), _layout(9, 3), _layout(3, 1, image_at=0), _layout(4, 2)]
    packed = pack_rows(rows, pad_id=0, capacity=10)
    assert place([5, 9, 3, 4], 10) == [[1], [0, 3], [2]]  # first fit, longest first
    assert packed.segments == [[1] * 9, [0] * 5 + [3] * 4, [2] * 3 + [2] * 6]  # pads join the last
    assert packed.positions[1] == [0, 1, 2, 3, 4, 0, 1, 2, 3]  # restart per sample
    assert packed.positions[2] == list(range(9))  # pads continue the row's last sample
    assert packed.image_at == [(1, 1), (-1, -1), (2, 0), (-1, -1)]
    assert packed.attention[2] == [1, 1, 1] + [0] * 6 and packed.labels[2][3:] == [IGNORE] * 6
    assert packed.ids[1][5:9] == rows[3].ids and not packed.one_per_row
    # A sample longer than the capacity gets a row of its own; capacity 0 = one per row (padded).
    assert place([12, 3], 10) == [[0], [1]]
    assert pack_rows(rows, 0, 0).one_per_row and pack_rows(rows, 0, 0).segments[0] == [0] * 9


def _tiny(root, attn: str):
    cfg = tiny_model_config(root)
    cfg.llm.lora.dropout = 0.0  # deterministic forward
    cfg.llm.attn_implementation = attn
    cfg.max_txt_len = 64
    torch.manual_seed(0)
    return build_model(cfg, "cpu", load_weights=False).train()


def _samples(model):
    """Lengths spread widely, a text-only-free batch with one multi-turn sample, whose later
    question starts with an unattended BOS (attention 0 inside the sample)."""
    g = torch.Generator().manual_seed(3)
    size = model.cfg.vision.image_size
    return {
        "image": torch.randn(5, 3, size, size, generator=g),
        "instruction_input": [f"{IMG} [vqa] what colour is the circle?", f"{IMG} describe",
                              f"{IMG} [refer] the blue square{CONNECT_SYM}and the red one?",
                              f"{IMG} how many squares are there? 0 1 2 3 4 5 6 7 8 9", f"{IMG} hi"],
        "answer": ["red", "a red circle left of a green triangle. how many squares are there?",
                   f"{{<10><20><30><40>}}{CONNECT_SYM}{{<1><2><3><4>}}", "2", "blue square"],
        "connect_sym": [None, None, CONNECT_SYM, None, None],
    }


def _per_sample_and_grads(model, samples, pack_length: int):
    model.zero_grad(set_to_none=True)
    out = model(samples, pack_length=pack_length)
    (out["answer_nll"].sum() / out["answer_tokens"].sum()).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return out["answer_nll"].detach(), out["answer_tokens"], grads


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_equals_unpacked_on_tinygptv_phi(tiny_root, attn):
    model = _tiny(tiny_root, attn)
    samples = _samples(model)
    nll, count, grads = _per_sample_and_grads(model, samples, 0)
    packed_nll, packed_count, packed_grads = _per_sample_and_grads(model, samples, 96)
    assert torch.equal(count, packed_count) and (count > 0).all()
    torch.testing.assert_close(packed_nll, nll, rtol=1e-5, atol=1e-5)
    assert packed_grads.keys() == grads.keys() and any("lora_A" in n for n in grads)
    for name, g in grads.items():
        torch.testing.assert_close(packed_grads[name], g, rtol=1e-4, atol=1e-6, msg=name)


def test_packing_really_packs_and_the_mask_matters(tiny_root, monkeypatch):
    """The rows hold several samples, the rotary embedding gets the restarted positions, and the
    equality above is not vacuous: with a plain causal mask over the row (samples seeing their
    row neighbours) the losses differ.  (RoPE scores depend on position differences only, so
    restarting matters for exact numbers and absolute-position LLMs; the mask is what isolates.)"""
    model = _tiny(tiny_root, "sdpa")
    samples = _samples(model)
    seen = {}
    real = sequences.attention_inputs

    def spy(llm, packed, device, dtype):
        seen["rows"], seen["positions"] = len(packed.ids), packed.positions
        return real(llm, packed, device, dtype)

    def record(module, args, kwargs, out):
        seen["rotary"] = kwargs["position_ids"]

    hook = model.llm.model.rotary_emb.register_forward_hook(record, with_kwargs=True)
    monkeypatch.setattr(sequences, "attention_inputs", spy)
    with torch.no_grad():
        packed = model(samples, pack_length=96)["answer_nll"]
    hook.remove()
    assert seen["rows"] < 5  # 5 samples in fewer rows
    assert seen["rotary"].tolist() == seen["positions"] and 0 in seen["positions"][0][1:]

    def row_causal(llm, packed, device, dtype):
        kwargs = real(llm, packed, device, dtype)
        width = len(packed.ids[0])
        kwargs["attention_mask"] = torch.ones(width, width, dtype=torch.bool).tril()[None, None].expand(
            len(packed.ids), 1, -1, -1)
        return kwargs

    monkeypatch.setattr(sequences, "attention_inputs", row_causal)
    with torch.no_grad():
        wrong = model(samples, pack_length=96)["answer_nll"]
    assert not torch.allclose(wrong, packed, rtol=1e-3, atol=1e-3)


def test_task_packs_with_run_pack_length(tiny_root):
    model = _tiny(tiny_root, "sdpa")
    samples = _samples(model)
    losses = []
    for pack_length in (0, 96):
        cfg = Config(model=model.cfg)
        cfg.run.pack_length = pack_length
        with torch.no_grad():
            step = ImageTextTask(cfg).train_step(model, samples)
        losses.append(step.total / step.units)
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-6, atol=1e-6)


def _stock(kind: str):
    shape = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, max_position_embeddings=128)
    torch.manual_seed(0)
    if kind == "phi":
        config = PhiConfig(**shape, partial_rotary_factor=0.5, resid_pdrop=0.0, embd_pdrop=0.0)
        return PhiForCausalLM._from_config(config, attn_implementation="sdpa")
    return LlamaForCausalLM._from_config(LlamaConfig(**shape), attn_implementation="sdpa")


@pytest.mark.parametrize("kind", ["phi", "llama"])
def test_packed_equals_unpacked_on_stock_llms(kind):
    llm = _stock(kind).train()
    rows = [_layout(11, 3, image_at=2), _layout(4, 1), _layout(17, 6, image_at=1, masked_at=9), _layout(6, 2)]
    visual = torch.randn(4, 3, 32)  # image slots of samples 0 and 2 (rows 1 and 3 have none)
    results = []
    for capacity in (0, 24):
        llm.zero_grad(set_to_none=True)
        nll, count = sequences.answer_nll(llm, pack_rows(rows, 0, capacity), visual, len(rows))
        nll.sum().backward()
        results.append((nll.detach(), count, {n: p.grad.clone() for n, p in llm.named_parameters()
                                              if p.grad is not None}))
    (nll, count, grads), (packed_nll, packed_count, packed_grads) = results
    assert count.tolist() == [3, 1, 6, 2] and torch.equal(count, packed_count)
    torch.testing.assert_close(packed_nll, nll, rtol=1e-5, atol=1e-5)
    for name, g in grads.items():
        torch.testing.assert_close(packed_grads[name], g, rtol=1e-4, atol=1e-6, msg=name)


def test_kernels_without_a_dense_mask_are_refused():
    llm = _stock("llama")
    llm.config._attn_implementation = "flash_attention_2"
    packed = pack_rows([_layout(5, 2), _layout(4, 1)], 0, 16)
    with pytest.raises(UserError, match="run.pack_length"):
        sequences.attention_inputs(llm, packed, torch.device("cpu"), torch.float32)
