"""`--format hf` picks the most widely loadable target the model's parts allow, says why, and refuses,
naming the config key, a part no target holds (exit 2, one line, nothing written)."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

import tinygpt
from exports import ROOT, layout_config
from tinygpt.export import main as export_main
from tinygpt.export.targets import BLIP2, LLAVA, REMOTE, ExportError, choose_target


def llm(model_type="qwen2", bias=False):
    head = torch.nn.Linear(4, 8, bias=bias)
    return SimpleNamespace(config=SimpleNamespace(model_type=model_type), get_output_embeddings=lambda: head)


def tiny_llava(tiny_root):
    cfg = tinygpt.load_config(ROOT / "eval_configs/tiny_llava.yaml",
                              [f"model.llm.tokenizer={tiny_root / 'tokenizer'}", "model.ckpt=[]", "run.device=cpu"])
    return cfg.model


def test_tinygptv_layouts_take_the_remote_code_target(tiny_root):
    models = [layout_config(layout, tiny_root).model for layout in ("full", "quickstart")]
    models.append(tinygpt.load_config(ROOT / "eval_configs/tinygptv_stage4.yaml").model)  # the full-size recipe
    for model in models:
        target = choose_target(model, llm("phi", bias=True))
        assert target.name == REMOTE and "no stock transformers class" in target.reason


def test_the_llava_recipes_take_llava(tiny_root):
    target = choose_target(tiny_llava(tiny_root), llm())
    assert target.name == LLAVA and "siglip tower" in target.reason and "vLLM" in target.reason
    recipe = tinygpt.load_config(ROOT / "train_configs/llava_siglip_qwen2.5/stage2.yaml").model
    assert choose_target(recipe, llm()).name == LLAVA


def test_qformer_with_a_stock_lm_takes_blip2(tiny_root):
    model = layout_config("full", tiny_root).model
    model.llm.family = "auto"
    target = choose_target(model, llm("phi", bias=True))
    assert target.name == BLIP2 and "fold" in target.reason


@pytest.mark.parametrize("change, key", [
    (lambda m: setattr(m.connector, "kind", "resampler"), "model.connector.kind"),
    (lambda m: setattr(m.vision, "kind", "clip"), "model.vision.kind"),
    (lambda m: setattr(m.vision, "feature_layer", -2), "model.vision.feature_layer"),
    (lambda m: (setattr(m.llm, "family", "auto"), setattr(m.vision, "ln_vision", False)), "model.vision.ln_vision"),
])
def test_parts_no_target_holds_are_refused_by_key(tiny_root, change, key):
    model = layout_config("full", tiny_root).model
    change(model)
    with pytest.raises(ExportError, match=key.replace(".", r"\.")):
        choose_target(model, llm("phi", bias=True), "x.yaml")


def test_llava_refuses_tinygptv_phi_and_a_biased_head(tiny_root):
    model = tiny_llava(tiny_root)
    with pytest.raises(ExportError, match="model.llm.hf_config.*bias"):
        choose_target(model, llm("phi", bias=True))
    model.llm.family = "tinygptv_phi"
    with pytest.raises(ExportError, match="model.llm.family"):
        choose_target(model, llm("phi", bias=True))


def test_cli_refusal_is_one_line_and_writes_nothing(tiny_root, tmp_path, capsys):
    cfg = layout_config("full", tiny_root)
    cfg.model.connector.kind = "linear"
    source = tmp_path / "cfg.yaml"
    source.write_text(tinygpt.common.config.to_yaml(cfg))
    assert export_main(["--format", "hf", "--cfg-path", str(source), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "model.connector.kind" in err and "'linear'" in err
    assert not (tmp_path / "out").exists()
    assert export_main(["--format", "hf", "--keep-lora", "--cfg-path", str(source), "--out", str(tmp_path / "o")]) == 2
