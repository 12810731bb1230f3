"""build_model(training=False): LoRA merged, nothing trainable, half precision everywhere but the
norms, and the same answers as the training-mode model."""
from __future__ import annotations

import torch
from peft.tuners.lora import LoraLayer

from tiny import tiny_model_config
from tinygpt.models.build import build_model
from tinygpt.models.norms import FloatLayerNorm, FloatRMSNorm
from tinygpt.models.weights import save_trainable

PROMPTS = ["<Img><ImageHere></Img> [vqa] what colour is the circle?", "<Img><ImageHere></Img> describe it"]


def trained_checkpoint(cfg, path):
    """A training-mode model (seed 0) whose trainable weights (LoRA B included, zero at init, so
    the merge matters) moved away from their init, saved as our trainable-weights file."""
    torch.manual_seed(0)
    model = build_model(cfg, "cpu", load_weights=False)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for _, p in sorted(model.named_parameters()):
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=gen) * 0.2)
    save_trainable(model, str(path))


def test_inference_mode_generates_what_training_mode_does(tiny_root, tmp_path):
    cfg = tiny_model_config(tiny_root)
    cfg.llm.lora.dropout = 0.0
    trained_checkpoint(cfg, tmp_path / "stage.safetensors")
    cfg.ckpt = [str(tmp_path / "stage.safetensors")]
    models = {}
    for training in (True, False):
        torch.manual_seed(0)  # same random frozen towers in both builds
        models[training] = build_model(cfg, "cpu", training=training).eval()
    train, infer = models[True], models[False]

    assert any(isinstance(m, LoraLayer) for m in train.llm.modules())
    assert not any(isinstance(m, LoraLayer) for m in infer.llm.modules())
    assert not any("lora_" in name for name in infer.state_dict())
    assert not any(p.requires_grad for p in infer.parameters())
    assert not infer.training

    images = torch.randn(2, 3, 28, 28, generator=torch.Generator().manual_seed(2))
    options = dict(max_new_tokens=8, min_new_tokens=8)
    assert infer.generate(images, PROMPTS, **options) == train.generate(images, PROMPTS, **options)
    answers = ["red", "a red circle"]
    torch.testing.assert_close(infer.answer_losses(images, PROMPTS, answers),
                               train.answer_losses(images, PROMPTS, answers), rtol=1e-4, atol=1e-5)


def test_inference_mode_is_half_precision_except_the_norms(tiny_root):
    cfg = tiny_model_config(tiny_root)
    cfg.llm.dtype = cfg.vision.dtype = "bf16"
    # As stored, whatever this CPU computes in (the boundary modules of a component computed in fp32
    # are held in fp32: tests/models/test_compute_dtype.py).
    cfg.compute_dtype = "storage"
    torch.manual_seed(0)
    model = build_model(cfg, "cpu", load_weights=False, training=False)
    norms = {f"{name}.{p}" for name, m in model.named_modules() if isinstance(m, (FloatLayerNorm, FloatRMSNorm))
             for p, _ in m.named_parameters()}
    for name, p in model.named_parameters():
        assert p.dtype == (torch.float32 if name in norms else torch.bfloat16), name
    # Training mode keeps Q-Former, projector and trainable tensors in fp32 (the 8.13 GB full size).
    train = build_model(cfg, "cpu", load_weights=False)
    assert train.projector.fc1.weight.dtype == torch.float32
    out = model.generate(torch.randn(2, 3, 28, 28), PROMPTS, max_new_tokens=3, min_new_tokens=3)
    assert len(out) == 2


def test_lm_head_sees_a_contiguous_input_when_generating_a_batch(tiny_root):
    # transformers slices the last position (a non-contiguous view for B > 1); on CPU in bf16 torch's
    # linear would then copy the [vocab, H] weight once per row (+262 MB per row at Phi-2 size).
    torch.manual_seed(0)
    model = build_model(tiny_model_config(tiny_root), "cpu", load_weights=False, training=False)
    seen = []
    model.llm.lm_head.register_forward_hook(lambda m, args, out: seen.append(args[0].is_contiguous()))
    model.generate(torch.randn(2, 3, 28, 28), PROMPTS, max_new_tokens=2, min_new_tokens=2)
    assert seen and all(seen)
