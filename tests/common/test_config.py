"""Config layering and the start-up errors a user sees (file and key named, no stack trace)."""
import pytest

import tinygpt
from tinygpt.common.config import ConfigError, from_yaml, load_config, to_yaml

STAGE2 = "train_configs/tinygptv_stage2.yaml"


def write(tmp_path, text):
    path = tmp_path / "cfg.yaml"
    path.write_text(text if text.startswith("model") else "model:\n  llm: {hf_config: x.json}\n" + text)
    return str(path)


def test_layering_defaults_then_yaml_then_options():
    cfg = load_config(STAGE2, ["run.max_epoch=7", "model.ckpt=[a.safetensors, b.pth]"])
    assert cfg.run.max_epoch == 7  # option beats the YAML's 4
    assert cfg.run.init_lr == 1e-4  # from the YAML
    assert cfg.run.accum_grad_iters == 1  # dataclass default
    assert cfg.model.ckpt == ["a.safetensors", "b.pth"]
    assert cfg.datasets["laion"].builder == "laion" and cfg.datasets["laion"].sample_ratio == 115


@pytest.mark.parametrize("text, message", [
    ("model:\n  bogus: 1\n", "cfg.yaml: key 'model.bogus'"),
    ("run:\n  max_epoch: lots\n", "key 'run.max_epoch'"),
    ("run:\n  device: tpu\n", "key 'run.device' is 'tpu'"),
    ("model:\n  llm: {hf_config: phi.json}\n  loss_reduction: mean\n", "key 'model.loss_reduction' is 'mean'"),
    ("datasets:\n  laion:\n    sample_ratio: [1]\n", "datasets.laion.sample_ratio"),
    ("model: [\n", "not valid YAML"),
    ("model:\n  arch: tinygpt_v\n", "key 'model.llm.hf_config'"),
])
def test_bad_yaml_names_file_and_key(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(")):
        load_config(write(tmp_path, text))


def test_bad_options_and_missing_file():
    with pytest.raises(ConfigError, match="--options run.nope"):
        load_config(STAGE2, ["run.nope=1"])
    with pytest.raises(ConfigError, match="expected key=value"):
        load_config(STAGE2, ["run.max_epoch"])
    with pytest.raises(ConfigError, match="config file not found"):
        load_config("no/such.yaml")


def test_missing_weight_file_is_reported_with_its_key_at_build_time(tmp_path):
    cfg = load_config(STAGE2, ["run.device=cpu"])
    cfg.model.llm.hf_config = str(tmp_path / "absent.json")
    with pytest.raises(ConfigError, match="model.llm.hf_config.*absent.json"):
        tinygpt.build_model(cfg, "meta")


def test_resolved_config_round_trips_through_yaml():
    cfg = load_config(STAGE2, ["run.seed=3"])
    again = from_yaml(to_yaml(cfg))
    assert again.model == cfg.model and again.run == cfg.run and again.datasets == cfg.datasets
