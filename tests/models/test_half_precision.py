import torch

from tiny import tiny_model_config
from tinygpt.models.build import build_model


def test_bf16_llm_generates_without_autocast_with_fp32_norms(tiny_root):
    cfg = tiny_model_config(tiny_root)
    cfg.llm.dtype = cfg.vision.dtype = "bf16"
    cfg.compute_dtype = "storage"  # bf16 compute too, whatever this CPU's bf16 speed (test_compute_dtype.py)
    torch.manual_seed(0)
    model = build_model(cfg, "cpu").eval()
    norm = model.llm.model.layers[0].input_layernorm
    assert norm.weight.dtype == norm.bias.dtype == torch.float32
    assert model.llm.model.layers[0].mlp.fc1.weight.dtype == torch.bfloat16
    assert model.visual_encoder.embeddings.patch_embedding.weight.dtype == torch.bfloat16
    out = model.generate(torch.randn(2, 3, 28, 28), ["<Img><ImageHere></Img> what?"] * 2,
                         max_new_tokens=3, min_new_tokens=3)
    assert len(out) == 2
