import torch

from tiny import mean_loss, tiny_model_config
from tinygpt.models.build import build_model


def loss_and_grads(root, checkpointing: bool):
    cfg = tiny_model_config(root)
    cfg.llm.lora.dropout = 0.0
    cfg.vision.train = True
    cfg.llm.grad_checkpointing = cfg.vision.grad_checkpointing = checkpointing
    torch.manual_seed(0)
    model = build_model(cfg, "cpu").train()
    torch.manual_seed(1)
    samples = {"image": torch.randn(2, 3, 28, 28), "answer": ["red", "two"],
               "instruction_input": ["<Img><ImageHere></Img> colour?", "<Img><ImageHere></Img> count?"]}
    loss = mean_loss(model, samples)
    loss.backward()
    return loss.detach(), {n: p.grad for n, p in model.named_parameters() if p.grad is not None}


def test_gradient_checkpointing_gives_the_same_loss_and_gradients(tiny_root):
    plain_loss, plain = loss_and_grads(tiny_root, False)
    ckpt_loss, ckpt = loss_and_grads(tiny_root, True)
    torch.testing.assert_close(ckpt_loss, plain_loss)
    assert plain.keys() == ckpt.keys() and any(k.startswith("visual_encoder") for k in plain)
    for name in plain:
        torch.testing.assert_close(ckpt[name], plain[name], rtol=1e-4, atol=1e-6, msg=name)
