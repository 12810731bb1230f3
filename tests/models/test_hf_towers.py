"""`model.vision.kind: hf` (models/vision.py build_auto_tower): any transformers vision model from its
config.json, features = its hidden states with the prefix tokens (CLS, distillation, registers)
counted on the meta device and dropped on request, weights from save_pretrained directories (older
key names renamed as transformers does), and clear errors for configs that are not such towers."""
from __future__ import annotations

import pytest
import torch
import transformers as tf

from backbones import TOWER, perturbed
from models.test_llm_families import Holder
from tinygpt.common.config import ConfigError, VisionConfig
from tinygpt.models import vision
from tinygpt.models.weights import load_hf_vision

# config, tokens in front of the 2 x 2 patch grid
TOWERS = {"vit": (tf.ViTConfig(**TOWER), 1), "deit": (tf.DeiTConfig(**TOWER), 2),
          "dinov2_registers": (tf.Dinov2WithRegistersConfig(**TOWER, num_register_tokens=4), 5)}


def saved(name, directory):
    torch.manual_seed(0)
    model = perturbed(tf.AutoModel.from_config(TOWERS[name][0]))
    model.save_pretrained(directory)
    return model


def cfg(directory, **kw) -> VisionConfig:
    return VisionConfig(kind="hf", hf_config=str(directory), weights=str(directory), image_size=28, patch_size=14,
                        ln_vision=False, **kw)


@pytest.mark.parametrize("name", TOWERS)
@pytest.mark.parametrize("keep_cls,layer", [(False, -2), (True, -1)])
def test_features_are_the_towers_hidden_states(name, keep_cls, layer, tmp_path):
    ref = saved(name, tmp_path)
    vcfg = cfg(tmp_path, keep_cls=keep_cls, feature_layer=layer)
    torch.manual_seed(1)  # another init: only the file can make them equal
    holder = Holder(None)
    holder.visual_encoder = vision.build_vision_tower(vcfg)
    report = load_hf_vision(holder, str(tmp_path))
    assert report.ok and not report.ignored and not report.missing, report.summary()
    tower = holder.visual_encoder.eval()
    prefix = TOWERS[name][1]
    assert vision.prefix_tokens(tower, "hf") == prefix
    images = torch.randn(2, 3, 28, 28)
    with torch.no_grad():
        ours = vision.tower_features(tower, vcfg, images)
        theirs = ref(pixel_values=images, output_hidden_states=True).hidden_states[layer]
    expected = theirs if keep_cls else theirs[:, prefix:]
    assert ours.shape == (2, vision.n_patch_tokens("hf", 28, 14, keep_cls, prefix), 32)
    torch.testing.assert_close(ours, expected)


def test_a_full_models_vision_config_is_taken_and_sizes_must_agree(tmp_path):
    tf.CLIPConfig(vision_config={**TOWER}, text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                                           num_attention_heads=4)).save_pretrained(tmp_path)
    tower = vision.build_vision_tower(cfg(tmp_path))
    assert tower.config.model_type == "clip_vision_model" and vision.prefix_tokens(tower, "hf") == 1
    with pytest.raises(ConfigError, match="s.yaml: key 'model.vision.image_size' is 56 but the hf tower .* has 28; "
                                          "set model.vision.image_size: 28"):
        vision.build_vision_tower(VisionConfig(kind="hf", hf_config=str(tmp_path), image_size=56, patch_size=14),
                                  "s.yaml")


@pytest.mark.parametrize("config,why", [
    (tf.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4),
     "does not take images as pixel_values"),
    (tf.ConvNextConfig(hidden_sizes=[8, 16], depths=[1, 1], num_stages=2, image_size=28, patch_size=14),
     r"does not return hidden states \[B, N, D\]"),
])
def test_a_config_that_is_no_vit_style_tower_is_a_config_error(config, why, tmp_path):
    config.save_pretrained(tmp_path)
    with pytest.raises(ConfigError, match=f"s.yaml: key 'model.vision.hf_config': the .* {why}"):
        vision.build_vision_tower(cfg(tmp_path), "s.yaml")
