"""`python -m tinygpt.export --format onnx` on a tiny model: onnxruntime answers a question about an
image without torch, with torch's visual tokens (< 1e-4), logits (< 1e-3) and greedy answer."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

import tinygpt
from tiny import tiny_config
from tinygpt.export import export_onnx
from tinygpt.models.weights import save_trainable
from tinygpt.onnx_runtime import OnnxModel

QUESTION = "what colour is the circle?"


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_root):
    work = tmp_path_factory.mktemp("onnx")
    cfg = tiny_config(tiny_root)
    cfg.model.prompt_template, cfg.model.end_sym = "[INST] {} [/INST]", "###"
    cfg.model.llm.train = cfg.model.vision.train = cfg.model.qformer.train = True
    torch.manual_seed(0)
    model = tinygpt.build_model(cfg, "cpu", load_weights=False)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
        for token, i in model.tokenizer.get_vocab().items():  # a random model would often stop at once
            if "#" in token or token == model.tokenizer.eos_token:
                model.llm.lm_head.bias[i] -= 100.0
    save_trainable(model, str(work / "checkpoint_final.safetensors"))
    cfg.model.prompt_template = cfg.model.end_sym = None
    cfg.model.ckpt = [str(work / "checkpoint_final.safetensors")]
    image = Image.new("RGB", (60, 40), "white")
    ImageDraw.Draw(image).ellipse([5, 5, 30, 30], fill="red")
    image.save(work / "image.png")
    return cfg, export_onnx(cfg, str(work / "onnx")), work / "image.png"


def test_onnxruntime_matches_torch(exported):
    from tinygpt.processors.build import eval_processor

    cfg, out, image_path = exported
    reference = tinygpt.build_model(cfg, "cpu", training=False)
    onnx = OnnxModel(out)
    image = Image.open(image_path)
    pixels = onnx.preprocess(image)
    torch_pixels = eval_processor(cfg.model)(image)
    np.testing.assert_allclose(pixels, torch_pixels.numpy(), atol=1e-6)
    with torch.no_grad():
        visual = reference.encode_images(torch_pixels[None])
        embeds, mask, _ = reference.embed_inputs([reference.style.place_image(QUESTION)], visual)
        logits = reference.llm(inputs_embeds=embeds, attention_mask=mask).logits
        generated = []
        generate = reference.llm.generate
        reference.llm.generate = lambda *a, **k: generated.append(generate(*a, **k)) or generated[-1]
        want = reference.generate(torch_pixels[None], [reference.style.place_image(QUESTION)], max_new_tokens=12)[0]
    onnx_visual = onnx.visual_tokens(pixels[None])
    assert np.abs(onnx_visual - visual.numpy()).max() < 1e-4
    e, m = onnx.prompt(onnx_visual, QUESTION)
    np.testing.assert_array_equal(m, mask.numpy())
    empty = np.zeros((onnx.manifest["layers"], 1, onnx.manifest["heads"], 0, onnx.manifest["head_dim"]), np.float32)
    onnx_logits, _ = onnx.logits(e, m, (empty, empty))
    assert np.abs(onnx_logits - logits.numpy()).max() < 1e-3
    # The same greedy tokens, and so the same answer.
    assert onnx.greedy_ids(image, QUESTION, max_new_tokens=12) == generated[0][0].tolist()
    assert onnx.answer(image, QUESTION, max_new_tokens=12) == want


def test_the_generate_loop_imports_no_torch(exported):
    _, out, image_path = exported
    code = (f"import sys; from PIL import Image; from tinygpt.onnx_runtime import OnnxModel; "
            f"print(OnnxModel({str(out)!r}).answer(Image.open({str(image_path)!r}), {QUESTION!r}, 8)); "
            f"print('torch' in sys.modules)")
    lines = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.splitlines()
    assert lines[-1] == "False" and len(lines) == 2  # an answer line (possibly blank), then: no torch
