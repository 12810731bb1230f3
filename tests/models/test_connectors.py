"""Connectors (models/connectors.py): shapes, visual-token counts, gradients to every parameter and to
the features, and full-size parameter counts on the meta device computed by hand."""
from __future__ import annotations

import pytest
import torch

from tinygpt.common.config import ConfigError, ConnectorConfig
from tinygpt.models.connectors import build_connector

D_VISION, D_LLM, N = 24, 32, 9
CONNECTORS = {
    "mlp": ConnectorConfig(kind="mlp"),
    "linear": ConnectorConfig(kind="linear"),
    "resampler": ConnectorConfig(kind="resampler", num_queries=4, depth=2, heads=4),
}


@pytest.mark.parametrize("kind", CONNECTORS)
def test_shape_token_count_and_gradients(kind):
    torch.manual_seed(0)
    connector = build_connector(CONNECTORS[kind], D_VISION, D_LLM)
    feats = torch.randn(2, N, D_VISION, requires_grad=True)
    out = connector(feats)
    n_tokens = connector.n_visual_tokens(N)
    assert n_tokens == (4 if kind == "resampler" else N)
    assert out.shape == (2, n_tokens, D_LLM)
    out.square().mean().backward()
    assert feats.grad is not None and feats.grad.abs().sum() > 0
    for name, p in connector.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_each_image_is_resampled_on_its_own():
    torch.manual_seed(0)
    connector = build_connector(CONNECTORS["resampler"], D_VISION, D_LLM).eval()
    feats = torch.randn(2, N, D_VISION)
    with torch.no_grad():
        both = connector(feats)
        torch.testing.assert_close(both[1:], connector(feats[1:]))
        assert not torch.allclose(both[0], both[1])  # the queries read the image


def test_heads_must_divide_the_llm_width_and_qformer_is_the_models_own():
    with pytest.raises(ConfigError, match="stage1.yaml: key 'model.connector.heads' is 5"):
        build_connector(ConnectorConfig(kind="resampler", heads=5), D_VISION, D_LLM, "stage1.yaml")
    with pytest.raises(ValueError, match="'qformer' is not built by build_connector"):
        build_connector(ConnectorConfig(), D_VISION, D_LLM)


# ----------------------------------------------------------------------------- full size
def count(cfg: ConnectorConfig, d_vision: int, d_llm: int) -> int:
    with torch.device("meta"):
        return sum(p.numel() for p in build_connector(cfg, d_vision, d_llm).parameters())


def test_siglip_so400m_to_qwen2_5_0_5b_counted_by_hand():
    siglip, qwen = 1152, 896
    mlp = (1152 * 896 + 896) + (896 * 896 + 896)  # 1,032,192 + 896 + 802,816 + 896
    assert mlp == 1_836_800
    assert count(ConnectorConfig(kind="mlp"), siglip, qwen) == mlp
    assert count(ConnectorConfig(kind="linear"), siglip, qwen) == 1152 * 896 + 896  # 1,033,088
    # Resampler, 64 queries, 2 layers of 8 heads, all at 896 wide:
    queries = 64 * 896  # 57,344
    kv_proj = 1152 * 896 + 896  # 1,033,088
    layer = (3 * 2 * 896  # three LayerNorms: 5,376
             + 3 * 896 * 896 + 3 * 896  # attention in-projection (q, k, v): 2,411,136
             + 896 * 896 + 896  # attention out-projection: 803,712
             + 896 * 3584 + 3584 + 3584 * 896 + 896)  # 4x MLP: 6,427,008
    assert layer == 9_647_232
    resampler = queries + kv_proj + 2 * layer + 2 * 896 + (896 * 896 + 896)  # + final LayerNorm, output Linear
    assert resampler == 21_190_400
    assert count(ConnectorConfig(kind="resampler", num_queries=64, depth=2, heads=8), siglip, qwen) == resampler


# ----------------------------------------------------------------------------- in the model
@pytest.mark.parametrize("kind", ["qformer", "mlp", "linear", "resampler"])
def test_every_connector_joins_a_tower_and_an_llm_of_other_widths(kind, tiny_root, tmp_path):
    """A DINOv2 tower of width 24 (1 CLS + 4 registers + 2 x 2 patches), the tiny Phi of width 64, a
    Q-Former of width 32: visual tokens of the LLM's width, gradients to every connector weight."""
    from backbones import save_tower
    from tiny import mean_loss, tiny_model_config
    from tinygpt.models.build import build_model

    save_tower("dinov2", tmp_path / "dinov2", hidden_size=24, num_register_tokens=4)
    cfg = tiny_model_config(tiny_root)
    v = cfg.vision
    v.kind, v.hf_config, v.ln_vision, v.keep_cls = "hf", str(tmp_path / "dinov2"), False, kind != "mlp"
    cfg.connector.kind, cfg.connector.num_queries, cfg.connector.heads = kind, 3, 4
    torch.manual_seed(0)
    model = build_model(cfg, "cpu", load_weights=False).train()
    assert (model.visual_encoder.config.hidden_size, model.llm.config.hidden_size) == (24, 64)
    visual = model.encode_images(torch.randn(2, 3, 28, 28))
    tokens = {"qformer": 4, "mlp": 4, "linear": 5 + 4, "resampler": 3}[kind]  # mlp: patches only
    assert visual.shape == (2, tokens, 64) == (2, model.n_visual_tokens, 64)
    mean_loss(model, {"image": torch.randn(2, 3, 28, 28), "answer": ["red", "blue"],
                      "instruction_input": ["<Img><ImageHere></Img> colour?"] * 2}).backward()
    connector = [model.projector] + ([model.qformer] if kind == "qformer" else [])
    for part in connector:
        for name, p in part.named_parameters():
            if p.requires_grad:
                assert p.grad is not None and p.grad.abs().sum() > 0, name
