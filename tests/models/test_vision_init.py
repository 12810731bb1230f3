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



def image_signal(init_std: float) -> float:
    """Across-image spread of the Q-Former outputs relative to their norm, at init."""
    from tinygpt.common.config import QFormerConfig
    from tinygpt.models.qformer import build_qformer

    torch.manual_seed(0)
    qformer, queries = build_qformer(QFormerConfig(num_query_tokens=4, width=64, depth=2, heads=2, mlp_dim=128,
                                                   cross_attention_freq=1, init_std=init_std), encoder_width=64)
    qformer.eval()  # no dropout: only the images may vary
    # ln_vision outputs of 32 images as a from-scratch tower gives them: mostly the same per slot
    # (position embedding, background), a quarter image-dependent.
    feats = torch.nn.functional.layer_norm(torch.randn(1, 10, 64) + 0.25 * torch.randn(32, 10, 64), (64,))
    with torch.no_grad():
        out = qformer(query_embeds=queries.expand(32, -1, -1), encoder_hidden_states=feats).last_hidden_state
    return (out.std(0).norm(dim=-1).mean() / out.norm(dim=-1).mean()).item()


def test_qformer_init_std_sets_how_much_of_the_image_gets_through_at_init():
    bert, scratch = image_signal(0.02), image_signal(0.2)
    assert bert < 0.05 < 0.3 < scratch, (bert, scratch)
