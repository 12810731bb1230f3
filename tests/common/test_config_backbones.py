"""The backbone keys (model.vision.kind / hf_config / feature_layer / keep_cls / ln_vision,
model.connector.*, prompt_template: chat_template): defaults that leave every shipped YAML as it
was, choices and ranges checked at start-up naming the key."""
import glob

import pytest

from tinygpt.common.config import ConfigError, ConnectorConfig, VisionConfig, load_config


def write(tmp_path, model_text):
    path = tmp_path / "cfg.yaml"
    path.write_text("model:\n  llm: {hf_config: x.json}\n" + model_text)
    return str(path)


TINYGPTV_YAMLS = sorted(p for p in glob.glob("train_configs/**/*.yaml", recursive=True) + glob.glob("eval_configs/*.yaml")
                        if "llava" not in p)  # the other-backbone recipes (docs/backbones.md) say theirs


@pytest.mark.parametrize("path", TINYGPTV_YAMLS)
def test_every_tinygptv_yaml_keeps_the_tinygptv_backbone(path):
    model = load_config(path).model
    assert model.connector == ConnectorConfig(kind="qformer")
    vision = model.vision
    assert (vision.kind, vision.hf_config, vision.feature_layer, vision.keep_cls, vision.ln_vision) == \
        ("eva_vit_g", None, -1, True, True)


@pytest.mark.parametrize("text, message", [
    ("  vision: {kind: dinov2}\n", "key 'model.vision.kind' is 'dinov2'; expected one of eva_vit_g, clip, siglip"),
    ("  connector: {kind: perceiver}\n", "key 'model.connector.kind' is 'perceiver'; expected one of qformer, mlp"),
    ("  connector: {kind: resampler, num_queries: 0}\n", "key 'model.connector.num_queries' is 0; it must be >= 1"),
    ("  vision: {keep_cls: maybe}\n", "key 'model.vision.keep_cls'"),
    ("  vision: {kind: hf}\n", "key 'model.vision.normalization' must be set for model.vision.kind hf"),
    ("  vision: {normalization: inception}\n", "key 'model.vision.normalization' is 'inception'; expected one of "
                                               "eva_vit_g, clip, siglip, imagenet"),
])
def test_bad_backbone_keys_name_file_and_key(tmp_path, text, message):
    with pytest.raises(ConfigError, match="cfg.yaml: " + message):
        load_config(write(tmp_path, text))


def test_a_siglip_mlp_recipe_and_the_tokenizers_chat_template_are_accepted(tmp_path):
    cfg = load_config(write(tmp_path, "  prompt_template: chat_template\n"
                                      "  vision: {kind: siglip, hf_config: s.json, image_size: 384, ln_vision: false}\n"
                                      "  connector: {kind: mlp}\n"))
    assert cfg.model.prompt_template == "chat_template"
    assert cfg.model.vision == VisionConfig(kind="siglip", hf_config="s.json", image_size=384, ln_vision=False)
    assert cfg.model.connector.kind == "mlp"


def test_the_image_statistics_key_chooses_every_processors_mean_and_std(tmp_path):
    from tinygpt.processors.build import eval_processor
    from tinygpt.processors.image import IMAGE_STATS

    model = load_config(write(tmp_path, "  vision: {kind: hf, normalization: siglip}\n")).model
    assert (eval_processor(model).mean, eval_processor(model).std) == IMAGE_STATS["siglip"]
    model.vision.kind, model.vision.normalization = "siglip", None  # unset: the kind's own
    assert (eval_processor(model).mean, eval_processor(model).std) == IMAGE_STATS["siglip"]
