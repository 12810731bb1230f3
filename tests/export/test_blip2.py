"""`--format hf` on EVA ViT-g + Q-Former + a stock causal LM: a Blip2ForConditionalGeneration directory
that stock transformers loads (no remote code), with tinygpt's logits (< 1e-4) and greedy answers."""
from __future__ import annotations

import json

import pytest
import torch

import tinygpt
from backbones import save_llm
from exports import layout_config, trained_checkpoint
from tinygpt.export import main as export_main
from tinygpt.export.blip2 import fold_projector
from tinygpt.export.verify import TOLERANCE
from tinygpt.models.projector import Projector


def test_the_two_projections_fold_into_one_linear():
    torch.manual_seed(0)
    projector = Projector(8, 16, 6)
    weight, bias = fold_projector(projector.fc1, projector.fc2)
    x = torch.randn(3, 5, 8)
    torch.testing.assert_close(torch.nn.functional.linear(x, weight, bias), projector(x), rtol=0, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("family", ["phi", "qwen2"])
def test_qformer_and_a_stock_lm_export_as_blip2(tmp_path, tiny_root, family):
    from transformers import Blip2ForConditionalGeneration

    cfg = layout_config("full", tiny_root)
    cfg.model.llm.family = "auto"
    if family == "qwen2":  # tied embeddings, and no room for the image token: the vocabulary grows by one
        save_llm("qwen2", tmp_path / "qwen2", vocab_size=400, max_position_embeddings=256)
        cfg.model.llm.hf_config = str(tmp_path / "qwen2")
    cfg = trained_checkpoint(cfg, tmp_path, talkative=family == "phi")
    source = tmp_path / "cfg.yaml"
    source.write_text(tinygpt.common.config.to_yaml(cfg))
    assert export_main(["--format", "hf", "--cfg-path", str(source), "--out", str(tmp_path / "hf")]) == 0
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["architectures"] == ["Blip2ForConditionalGeneration"] and "auto_map" not in config
    assert not list((tmp_path / "hf").glob("*.py"))  # stock classes only
    card = (tmp_path / "hf" / "README.md").read_text()
    assert "Target: **blip2**" in card
    diff = float(card.split("max |logits difference|")[1].split(": ")[1].split()[0])
    assert diff < TOLERANCE
    exported = Blip2ForConditionalGeneration.from_pretrained(tmp_path / "hf")
    vocab = exported.language_model.get_input_embeddings().weight.shape[0]
    assert vocab == (401 if family == "qwen2" else 512)
