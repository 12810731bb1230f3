"""What a recipe may ask of any backbone: gradient checkpointing (same loss and gradients), 8-bit
LLM loading for inference, and the tokenizer's own chat template as the prompt style, recorded in the
checkpoint and read back by an inference build with no style in its config."""
from __future__ import annotations

import pytest
import torch

from backbones import save_llm, save_tower
from chat.test_chat_template_style import phi3
from tiny import mean_loss, tiny_model_config
from tinygpt.models.build import build_model
from tinygpt.models.weights import save_trainable

IMG = "<Img><ImageHere></Img>"


def qwen_siglip(root, tmp, **llm):
    """A tiny SigLIP + MLP + Qwen2 config over HF directories saved under `tmp`."""
    cfg = tiny_model_config(root)
    if not (tmp / "qwen").exists():
        save_llm("qwen2", tmp / "qwen", vocab_size=512)
        save_tower("siglip", tmp / "siglip")
    cfg.llm.family, cfg.llm.hf_config, cfg.llm.weights = "auto", str(tmp / "qwen"), str(tmp / "qwen")
    cfg.vision.kind, cfg.vision.hf_config, cfg.vision.weights = "siglip", str(tmp / "siglip"), str(tmp / "siglip")
    cfg.vision.ln_vision, cfg.connector.kind = False, "mlp"
    cfg.llm.lora.dropout = 0.0
    for key, value in llm.items():
        setattr(cfg.llm, key, value)
    return cfg


def samples():
    g = torch.Generator().manual_seed(1)
    return {"image": torch.randn(2, 3, 28, 28, generator=g), "answer": ["red", "two squares"],
            "instruction_input": [f"{IMG} colour?", f"{IMG} count?"]}


def loss_and_grads(cfg):
    torch.manual_seed(0)
    model = build_model(cfg, "cpu").train()
    loss = mean_loss(model, samples())
    loss.backward()
    return loss.detach(), {n: p.grad for n, p in model.named_parameters() if p.grad is not None}


def test_gradient_checkpointing_of_any_llm_gives_the_same_loss_and_gradients(tiny_root, tmp_path):
    plain_loss, plain = loss_and_grads(qwen_siglip(tiny_root, tmp_path))
    ckpt_loss, ckpt = loss_and_grads(qwen_siglip(tiny_root, tmp_path, grad_checkpointing=True))
    torch.testing.assert_close(ckpt_loss, plain_loss)
    assert plain.keys() == ckpt.keys() and any("lora_" in k for k in plain)
    for name in plain:
        torch.testing.assert_close(ckpt[name], plain[name], rtol=1e-4, atol=1e-6, msg=name)


def test_any_llm_loads_in_8_bit_for_inference(tiny_root, tmp_path):
    pytest.importorskip("bitsandbytes")
    import bitsandbytes as bnb

    torch.manual_seed(0)  # the connector is not in any file: the same init for both
    full = build_model(qwen_siglip(tiny_root, tmp_path), "cpu", training=False)
    torch.manual_seed(0)
    eight = build_model(qwen_siglip(tiny_root, tmp_path, load_in_8bit=True), "cpu", training=False)
    linears = [m for n, m in eight.llm.named_modules() if isinstance(m, bnb.nn.Linear8bitLt)]
    assert len(linears) == 2 * 7  # q, k, v, o, gate, up, down per layer; lm_head (tied) kept
    ids = full.tokenizer(["###Human: what colour is the circle? ###Assistant: red###"], return_tensors="pt").input_ids
    with torch.no_grad():
        want, got = (m.llm(input_ids=ids).logits for m in (full, eight))
    assert torch.nn.functional.cosine_similarity(got.flatten(), want.flatten(), dim=0) > 0.999  # close, not equal


def test_the_tokenizers_chat_template_is_the_style_and_travels_with_the_weights(tiny_root, tmp_path):
    tok_dir = tmp_path / "phi3-tokenizer"
    phi3().save_pretrained(tok_dir)
    cfg = qwen_siglip(tiny_root, tmp_path, tokenizer=str(tok_dir))
    cfg.prompt_template = "chat_template"
    model = build_model(cfg, "cpu")
    # Phi-3's BOS is left to the protocol, which puts BOS in front of every training sequence itself.
    assert model.style.template == "<|user|>\n{}<|end|>\n<|assistant|>\n"
    assert model.style.end_sym == "<|end|>"  # Phi-3's end of turn, not its EOS
    save_trainable(model, str(tmp_path / "trained.safetensors"))

    served = qwen_siglip(tiny_root, tmp_path, tokenizer=str(tok_dir))
    served.prompt_template = served.end_sym = None
    served.ckpt = [str(tmp_path / "trained.safetensors")]
    infer = build_model(served, "cpu", training=False)
    assert (infer.style.template, infer.style.end_sym) == (model.style.template, "<|end|>")
