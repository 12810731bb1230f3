"""`python -m tinygpt.export`: one self-contained directory; from_pretrained, demo.py --model and
evaluate.py --model load it with no YAML; the round trip gives identical visual tokens and logits."""
from __future__ import annotations

import pytest
import torch
import yaml

import tinygpt
from exports import layout_config, trained_checkpoint
from tinygpt.export import export, main as export_main

PROMPT = "<Img><ImageHere></Img> what colour is the circle?"


@pytest.fixture(scope="module", params=["full", "quickstart"])
def trained(request, tmp_path_factory, tiny_root):
    """A tiny config whose model.ckpt holds trained-looking weights (LoRA B off zero)."""
    work = tmp_path_factory.mktemp("export")
    return trained_checkpoint(layout_config(request.param, tiny_root), work), work


def outputs(model):
    size = model.cfg.vision.image_size
    images = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        visual = model.encode_images(images)
        embeds, mask, _ = model.embed_inputs([PROMPT, PROMPT], visual)
        return visual, model.llm(inputs_embeds=embeds, attention_mask=mask).logits.float()


@pytest.mark.parametrize("keep_lora", [False, True])
def test_round_trip_gives_identical_outputs(trained, tmp_path, keep_lora):
    cfg, _ = trained
    out = export(cfg, str(tmp_path / "exported"), keep_lora=keep_lora)
    names = {p.name for p in (tmp_path / "exported").iterdir()}
    assert {"config.yaml", "llm_config.json", "model.safetensors", "tokenizer.json", "README.md"} <= names
    saved = yaml.safe_load((tmp_path / "exported" / "config.yaml").read_text())["model"]
    assert (saved["prompt_template"], saved["end_sym"]) == ("[INST] {} [/INST]", "###")  # the style travels
    assert saved["llm"]["lora"]["r"] == (cfg.model.llm.lora.r if keep_lora else 0)
    assert "Prompt style: template '[INST] {} [/INST]'" in (tmp_path / "exported" / "README.md").read_text()

    reference = tinygpt.build_model(cfg, "cpu", training=False)
    loaded = tinygpt.from_pretrained(out, "cpu").model
    (v1, l1), (v2, l2) = outputs(reference), outputs(loaded)
    torch.testing.assert_close(v2, v1, rtol=0, atol=1e-6)
    torch.testing.assert_close(l2, l1, rtol=0, atol=1e-5)
    assert loaded.style == reference.style


def test_an_int8_config_exports_float_weights_that_load_as_int8(trained, tmp_path):
    from tinygpt.models.quantize import Int8Linear

    cfg, _ = trained
    cfg = tinygpt.common.config.from_yaml(tinygpt.common.config.to_yaml(cfg))  # the fixture's stays float
    cfg.model.llm.quantize = cfg.model.vision.quantize = "int8"
    out = export(cfg, str(tmp_path / "int8"))
    saved = yaml.safe_load((tmp_path / "int8" / "config.yaml").read_text())["model"]
    assert (saved["llm"]["quantize"], saved["vision"]["quantize"]) == ("int8", "int8")
    loaded = tinygpt.from_pretrained(out, "cpu").model
    assert isinstance(loaded.llm.model.layers[0].mlp.fc1, Int8Linear)
    reference = tinygpt.build_model(cfg, "cpu", training=False)  # quantized straight from the checkpoint
    (v1, l1), (v2, l2) = outputs(reference), outputs(loaded)
    torch.testing.assert_close(v2, v1, rtol=0, atol=1e-6)  # the vision tower has no LoRA: the same int8 values
    # The checkpoint's build merges LoRA into int8 layers (one more rounding); the export's float
    # weights were merged before quantizing: the same int8 values to within one step.
    pairs = zip(*([m for m in model.modules() if isinstance(m, Int8Linear)] for model in (reference, loaded)))
    assert max((a.int8_weight().int() - b.int8_weight().int()).abs().max().item() for a, b in pairs) <= 1
    assert torch.nn.functional.cosine_similarity(l2, l1, dim=-1).min() > 0.999


def test_demo_and_cli_load_an_exported_directory(trained, tmp_path, capsys):
    from tinygpt.conversation import GenerationOptions
    from tinygpt.serve.main import load_chat, main as demo_main

    cfg, work = trained
    source = tmp_path / "cfg.yaml"
    source.write_text(tinygpt.common.config.to_yaml(cfg))
    assert export_main(["--cfg-path", str(source), "--out", str(tmp_path / "exp")]) == 0
    chat = load_chat(None, ["run.device=cpu"], GenerationOptions(max_new_tokens=4, min_new_tokens=1),
                     model_dir=str(tmp_path / "exp"))
    assert chat.style.end_sym == "###"
    assert demo_main(["--model", str(tmp_path / "exp"), "--cfg-path", str(source)]) == 2
    assert "not both" in capsys.readouterr().err
    assert demo_main(["--model", str(work)]) == 2  # not an export: one line naming it
    assert "not an exported tinygpt model" in capsys.readouterr().err
