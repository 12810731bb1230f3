"""LoRA folded into the base weight in the training forward (models/lora.py FoldedLoraLinear): where
the base LLM trains beside LoRA, `(W + s B A) x` gives peft's `W x + s B (A x)` loss and gradients;
everywhere else peft's own forward runs."""
from __future__ import annotations

import pytest
import torch
from peft.tuners.lora import Linear as PeftLoraLinear

import tinygpt.models.tinygpt_v  # noqa: F401  (registers the "tinygpt_v" arch)
from tiny import tiny_model_config
from tinygpt.models.build import build_model
from tinygpt.models.lora import FoldedLoraLinear


def _llm(root, train_base=True, dropout=0.0):
    cfg = tiny_model_config(root, lora_r=4)
    cfg.llm.train, cfg.llm.lora.dropout = train_base, dropout
    torch.manual_seed(0)
    llm = build_model(cfg, "cpu", load_weights=False).llm
    with torch.no_grad():  # peft starts B at zero: give the adapters something to add
        for name, p in llm.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.2)
    return llm.train()


def _loss_and_grads(llm, ids):
    llm.zero_grad(set_to_none=True)
    loss = llm(input_ids=ids, labels=ids).loss
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in llm.named_parameters() if p.grad is not None}


@pytest.fixture
def folds(monkeypatch):
    """Records what each FoldedLoraLinear forward decided: the adapter it folded, or None."""
    seen = []
    decide = FoldedLoraLinear._folding_adapter

    def spy(self, args, kwargs):
        seen.append(decide(self, args, kwargs))
        return seen[-1]

    monkeypatch.setattr(FoldedLoraLinear, "_folding_adapter", spy)
    return seen


def _peft_forward(monkeypatch):
    monkeypatch.setattr(FoldedLoraLinear, "forward", PeftLoraLinear.forward)


def test_folded_forward_gives_pefts_loss_and_gradients(tiny_root, folds, monkeypatch):
    llm = _llm(tiny_root)
    ids = torch.randint(0, 400, (3, 12))
    loss, grads = _loss_and_grads(llm, ids)
    n_adapters = sum(isinstance(m, FoldedLoraLinear) for m in llm.modules())
    assert n_adapters == 4 and folds == ["default"] * n_adapters  # qkv + dense in both layers folded
    _peft_forward(monkeypatch)
    ref_loss, ref_grads = _loss_and_grads(llm, ids)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-6, atol=1e-6)
    assert grads.keys() == ref_grads.keys() and any("lora_A" in n for n in grads)
    assert any(n.endswith("query_key_value.base_layer.weight") for n in grads)  # the base trains too
    for name, grad in grads.items():
        torch.testing.assert_close(grad, ref_grads[name], rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("case", ["frozen base", "adapter dropout", "eval", "no grad"])
def test_pefts_forward_runs_where_folding_does_not_pay_or_differs(tiny_root, folds, case):
    llm = _llm(tiny_root, train_base=case != "frozen base", dropout=0.1 if case == "adapter dropout" else 0.0)
    if case == "eval":
        llm.eval()
    ids = torch.randint(0, 400, (2, 8))
    with torch.set_grad_enabled(case != "no grad"):
        llm(input_ids=ids)
    assert folds and all(f is None for f in folds)


def test_folded_layers_merge_for_inference(tiny_root):
    llm = _llm(tiny_root)
    ids = torch.randint(0, 400, (2, 8))
    llm.eval()
    with torch.no_grad():
        before = llm(input_ids=ids).logits
        from tinygpt.models.lora import merge_lora
        assert merge_lora(llm) == 4
        after = llm(input_ids=ids).logits
    assert not any(isinstance(m, PeftLoraLinear) for m in llm.modules())
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)
