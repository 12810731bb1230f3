"""`--format hf` on a CLIP / SigLIP tower + LLaVA's mlp2x_gelu + a stock causal LM (the quickstart's
second tiny recipe, and LLaVA-1.5's CLIP layout): a LlavaForConditionalGeneration directory with a
stock LlavaProcessor, LoRA merged, that stock transformers loads with tinygpt's logits (< 1e-4) and
greedy answers."""
from __future__ import annotations

import json

import pytest

import tinygpt
from backbones import save_llm, save_tower
from exports import ROOT, trained_checkpoint
from tinygpt.export import main as export_main
from tinygpt.export.verify import TOLERANCE


def llava_config(tiny_root, tmp_path, tower: str):
    cfg = tinygpt.load_config(ROOT / "eval_configs/tiny_llava.yaml",
                              [f"model.llm.tokenizer={tiny_root / 'tokenizer'}", "model.ckpt=[]", "run.device=cpu",
                               "model.llm.lora.r=4"])  # LoRA on top of the trained LM: merged by the export
    model = cfg.model
    model.prompt_template, model.end_sym = "USER: {} ASSISTANT: ", "###"
    model.image_after_question = True  # as train_configs/tiny_llava/stage2.yaml
    if tower == "siglip":  # the quickstart's train_configs/tiny_llava/ model
        model.llm.hf_config = str(ROOT / model.llm.hf_config)
        model.vision.hf_config = str(ROOT / model.vision.hf_config)
    else:  # LLaVA-1.5's layout: CLIP without its CLS token, the penultimate layer; a Llama-family LM
        save_tower("clip", tmp_path / "clip")
        save_llm("llama", tmp_path / "llama", vocab_size=512, max_position_embeddings=256)
        model.vision.kind, model.vision.hf_config = "clip", str(tmp_path / "clip")
        model.vision.image_size, model.vision.patch_size = 28, 14
        model.vision.keep_cls, model.vision.feature_layer = False, -2
        model.llm.hf_config = str(tmp_path / "llama")
    return trained_checkpoint(cfg, tmp_path, talkative=True)


@pytest.mark.slow
@pytest.mark.parametrize("tower, strategy, tokens", [("siglip", "full", 9), ("clip", "default", 4)])
def test_llava_layouts_export_as_llava(tmp_path, tiny_root, tower, strategy, tokens):
    from transformers import AutoProcessor

    cfg = llava_config(tiny_root, tmp_path, tower)
    source = tmp_path / "cfg.yaml"
    source.write_text(tinygpt.common.config.to_yaml(cfg))
    assert export_main(["--format", "hf", "--cfg-path", str(source), "--out", str(tmp_path / "hf")]) == 0
    out = tmp_path / "hf"
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["LlavaForConditionalGeneration"] and "auto_map" not in config
    assert (config["vision_feature_select_strategy"], config["vision_feature_layer"], config["image_seq_length"]) == \
        (strategy, cfg.model.vision.feature_layer, tokens)
    assert not list(out.glob("*.py"))
    processor = AutoProcessor.from_pretrained(out)
    assert type(processor).__name__ == "LlavaProcessor"
    prompt = processor.apply_chat_template([{"role": "user", "content": [{"type": "image"},
                                                                         {"type": "text", "text": "what?"}]}],
                                           add_generation_prompt=True)
    assert prompt == "USER: what? <Img><image></Img> ASSISTANT: "  # the recipe's question-first order
    assert list(processor.image_processor.image_mean) == ([0.5] * 3 if tower == "siglip" else
                                                    [0.48145466, 0.4578275, 0.40821073])
    card = (out / "README.md").read_text()
    assert "Target: **llava**" in card and "LoRA: merged" in card
    assert float(card.split("max |logits difference|")[1].split(": ")[1].split()[0]) < TOLERANCE
    assert "the same greedy answer: ''" not in card
