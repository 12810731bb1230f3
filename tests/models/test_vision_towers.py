"""CLIP and SigLIP towers (models/vision.py, weights/hf_vision.py): tiny towers saved with
save_pretrained (full model and vision-only), built from their config.json, loaded with a key report;
the features are transformers' own hidden states at the chosen layer, CLS kept or dropped; full-size
towers counted on the meta device."""
from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn
from transformers import (
    CLIPConfig,
    CLIPModel,
    CLIPVisionConfig,
    CLIPVisionModel,
    SiglipConfig,
    SiglipModel,
    SiglipVisionConfig,
    SiglipVisionModel,
)

from tinygpt.common.config import _CHOICES, ConfigError, VisionConfig
from tinygpt.models import vision
from tinygpt.models.weights import WeightLoadError, load_hf_vision
from tinygpt.processors.image import CLIP_MEAN, CLIP_STD, IMAGE_STATS

# width 32, 2 blocks of 4 heads, 28 px images in 14 px patches: a 2 x 2 grid.
TOWER = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=28,
             patch_size=14)
TEXT = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4, vocab_size=64,
            bos_token_id=1, eos_token_id=2, pad_token_id=0)
KINDS = {
    "clip": (CLIPVisionConfig, CLIPVisionModel, lambda: CLIPModel(CLIPConfig(vision_config=TOWER, text_config=TEXT,
                                                                             projection_dim=16))),
    "siglip": (SiglipVisionConfig, SiglipVisionModel, lambda: SiglipModel(SiglipConfig(vision_config=TOWER,
                                                                                       text_config=TEXT))),
}


class Holder(nn.Module):
    def __init__(self, tower: nn.Module):
        super().__init__()
        self.visual_encoder = tower


def perturbed(model: nn.Module) -> nn.Module:
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


def saved(kind: str, full: bool, directory):
    """(the reference tower, the directory): a full CLIPModel / SiglipModel or a vision-only model."""
    config_class, model_class, full_model = KINDS[kind]
    torch.manual_seed(0)
    model = perturbed(full_model() if full else model_class(config_class(**TOWER)))
    model.save_pretrained(directory)
    return (model.vision_model if full else model), directory


def vision_cfg(kind: str, directory, **changes) -> VisionConfig:
    return dataclasses.replace(VisionConfig(kind=kind, hf_config=str(directory), image_size=28, patch_size=14),
                               **changes)


def loaded(cfg: VisionConfig):
    torch.manual_seed(1)
    holder = Holder(vision.build_vision_tower(cfg)).eval()
    return holder, load_hf_vision(holder, cfg.hf_config)


PIXELS = torch.randn(2, 3, 28, 28)


@pytest.mark.parametrize("full", [True, False], ids=["full-model", "vision-only"])
@pytest.mark.parametrize("kind", KINDS)
def test_tower_loads_with_a_report_and_gives_transformers_hidden_states(kind, full, tmp_path):
    ref, directory = saved(kind, full, tmp_path)
    holder, report = loaded(vision_cfg(kind, directory))
    assert report.ok and set(report.loaded) == {n for n, _ in holder.named_parameters()}, report.summary()
    ignored = set(report.ignored.values())
    assert any("final norm" in why for why in ignored)  # post_layernorm: features are taken before it
    assert (kind == "siglip") == any("pooling head" in why for why in ignored)
    assert full == any("not the vision tower" in why for why in ignored)  # text model, projections, logits
    with torch.no_grad():
        hidden = ref(pixel_values=PIXELS, output_hidden_states=True).hidden_states
        assert len(hidden) == 3  # the embeddings and 2 blocks
        for layer in (-1, -2):
            for keep_cls in (True, False):
                cfg = vision_cfg(kind, directory, feature_layer=layer, keep_cls=keep_cls)
                feats = vision.tower_features(holder.visual_encoder, cfg, PIXELS)
                n = vision.n_patch_tokens(kind, 28, 14, keep_cls)
                assert feats.shape == (2, n, 32)
                # CLIP: 4 patches + CLS (dropped on request); SigLIP: 4 patches, no CLS to drop.
                assert n == (5 if kind == "clip" and keep_cls else 4)
                torch.testing.assert_close(feats, hidden[layer][:, -n:])


def test_hidden_states_are_needed_for_any_layer_but_the_last(tmp_path):
    _, directory = saved("clip", False, tmp_path)
    holder, _ = loaded(vision_cfg("clip", directory))
    outputs = holder.visual_encoder(pixel_values=PIXELS)
    with pytest.raises(ValueError, match="output_hidden_states=True"):
        vision.select_features(outputs, -2, keep_cls=True)
    with pytest.raises(ConfigError, match="model.vision.feature_layer' is 5.*3 hidden states"):
        vision.tower_features(holder.visual_encoder, vision_cfg("clip", directory, feature_layer=5), PIXELS)


def test_config_mistakes_name_their_key(tmp_path):
    _, directory = saved("siglip", True, tmp_path)
    with pytest.raises(ConfigError, match="model.vision.image_size' is 224 but .* has 28"):
        vision.build_vision_tower(vision_cfg("siglip", directory, image_size=224), "stage1.yaml")
    with pytest.raises(ConfigError, match="stage1.yaml: key 'model.vision.hf_config': .*'siglip' model, not a clip"):
        vision.build_vision_tower(vision_cfg("clip", directory), "stage1.yaml")
    with pytest.raises(ConfigError, match="stage1.yaml: key 'model.vision.hf_config' is not set"):
        vision.build_vision_tower(VisionConfig(kind="clip"), "stage1.yaml")


def test_a_tower_of_another_shape_refuses_to_load(tmp_path):
    _, directory = saved("clip", True, tmp_path / "clip")
    other = tmp_path / "wide"
    CLIPVisionConfig(**{**TOWER, "hidden_size": 64}).save_pretrained(other)
    holder = Holder(vision.build_vision_tower(vision_cfg("clip", other)))
    with pytest.raises(WeightLoadError, match="shape mismatch"):
        load_hf_vision(holder, str(directory))


def test_every_kind_has_its_normalisation_and_token_count():
    # `hf` towers take the statistics a dataset's vis_processor.normalization names (docs/backbones.md).
    assert set(vision.TOWERS) == set(_CHOICES["model.vision.kind"]) - {vision.AUTO_KIND}
    assert set(vision.TOWERS) <= set(IMAGE_STATS)  # + "imagenet", which only a `normalization` names
    assert IMAGE_STATS["clip"] == IMAGE_STATS["eva_vit_g"] == (CLIP_MEAN, CLIP_STD)
    assert IMAGE_STATS["siglip"] == ((0.5,) * 3, (0.5,) * 3)
    assert vision.n_patch_tokens("eva_vit_g", 224, 14) == 257  # BLIP-2's 16 x 16 + CLS
    assert vision.n_patch_tokens("clip", 336, 14, keep_cls=False) == 576  # LLaVA-1.5's "patch" features
    assert vision.n_patch_tokens("siglip", 384, 14, keep_cls=True) == 729  # 27 x 27 (384 // 14), no CLS


def test_eva_stays_the_default_tower():
    cfg = VisionConfig(width=32, depth=2, heads=2, mlp_dim=64, image_size=28)
    assert cfg.kind == "eva_vit_g" and cfg.feature_layer == -1 and cfg.keep_cls and cfg.ln_vision
    torch.manual_seed(0)
    tower = vision.build_vision_tower(cfg)
    torch.manual_seed(0)
    eva = vision.build_eva_vit(cfg)
    assert type(tower).__name__ == "Blip2VisionModel" and isinstance(tower.post_layernorm, nn.Identity)
    assert all(torch.equal(a, b) for a, b in zip(tower.state_dict().values(), eva.state_dict().values()))
    feats = vision.tower_features(tower, cfg, PIXELS)
    torch.testing.assert_close(feats, tower(pixel_values=PIXELS).last_hidden_state)
    assert feats.shape == (2, vision.n_patch_tokens("eva_vit_g", 28, 14), 32)


# ----------------------------------------------------------------------------- full size
def test_siglip_so400m_on_meta_counted_by_hand():
    cfg = VisionConfig(kind="siglip", hf_config="train_configs/vision/siglip-so400m-patch14-384.json",
                       image_size=384, patch_size=14)
    width, mlp = 1152, 4304
    patch_embed = 3 * 14 * 14 * width + width  # 678,528 (a conv with bias)
    positions = 27 * 27 * width  # 839,808
    attention = 4 * (width * width + width)  # q, k, v, out: 5,313,024
    ffn = width * mlp + mlp + mlp * width + width  # 9,921,872
    block = attention + ffn + 2 * 2 * width  # + two LayerNorms: 15,239,504
    ours = patch_embed + positions + 27 * block
    assert ours == 412_984_944
    # The published tower adds its final LayerNorm and attention-pooling head, which we do not build.
    head = width + (3 * width * width + 3 * width) + (width * width + width) + 2 * width + ffn  # probe, MHA, LN, MLP
    assert ours + 2 * width + head == 428_225_600
    with torch.device("meta"):
        tower = vision.build_vision_tower(cfg)
        published = SiglipVisionModel(vision.load_tower_config("siglip", cfg.hf_config))
    assert sum(p.numel() for p in tower.parameters()) == ours
    assert sum(p.numel() for p in published.parameters()) == 428_225_600
    assert tower.config.hidden_size == width


def test_clip_vit_l_14_336_on_meta_counted_by_hand():
    cfg = VisionConfig(kind="clip", hf_config="train_configs/vision/clip-vit-large-patch14-336.json",
                       image_size=336, patch_size=14)
    width, mlp = 1024, 4096
    embeddings = width + 3 * 14 * 14 * width + (24 * 24 + 1) * width  # CLS, bias-free conv, 577 positions
    block = 4 * (width * width + width) + (width * mlp + mlp + mlp * width + width) + 2 * 2 * width  # 12,596,224
    ours = embeddings + 2 * width + 24 * block  # + pre_layrnorm
    assert ours == 303_505_408  # the published 303,507,456 less post_layernorm (2,048)
    with torch.device("meta"):
        tower = vision.build_vision_tower(cfg)
    assert sum(p.numel() for p in tower.parameters()) == ours
