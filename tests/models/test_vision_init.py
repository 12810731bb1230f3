"""The from-scratch tower's position-embedding init (model.vision.pos_embed_std)."""
import torch

from tinygpt.common.config import VisionConfig
from tinygpt.models.vision import build_vision_tower


def tower(std: float):
    torch.manual_seed(0)
    return build_vision_tower(VisionConfig(image_size=48, patch_size=16, width=64, depth=1, heads=2, mlp_dim=128,
                                           pos_embed_std=std))


def test_position_embedding_starts_at_the_configured_scale():
    default, content_scale = tower(0.02), tower(1.0)
    pe_default = default.embeddings.position_embedding
    pe_big = content_scale.embeddings.position_embedding
    assert pe_default.shape == pe_big.shape == (1, 10, 64)  # CLS + 3 x 3 patches
    assert 0.015 < pe_default.std().item() < 0.025 and pe_default.abs().max().item() <= 0.04
    assert 0.75 < pe_big.std().item() < 1.0 and pe_big.abs().max().item() <= 2.0  # truncated at 2 std

