"""A stage-4 checkpoint trained with `###` answers, served with no prompt settings in the serving
config: the prompt style comes from the checkpoint, generation stops at `###`, and the answer the
user sees holds no marker -- in the Chat (demo, terminal, API) and in `generate` (evaluation)."""
from __future__ import annotations

import logging

import torch

from tiny import bigram_llm, tiny_model_config
from tinygpt.conversation import Chat, GenerationOptions
from tinygpt.models.build import build_model
from tinygpt.models.weights import recorded_style, save_trainable


def test_stage4_checkpoint_is_served_with_its_end_marker(tmp_path, tiny_root, caplog):
    train_cfg = tiny_model_config(tiny_root)
    train_cfg.prompt_template, train_cfg.end_sym = "[INST] {} [/INST]", "###"
    train_cfg.llm.train = True  # the whole LLM is in the checkpoint (the tiny recipe's stage 4)
    torch.manual_seed(0)
    trained = build_model(train_cfg, "cpu", load_weights=False)
    tok = trained.tokenizer
    prompt_end = tok(trained.wrap("<Img><ImageHere></Img> what colour?"), add_special_tokens=False).input_ids[-1]
    answer = tok("red###", add_special_tokens=False).input_ids
    bigram_llm(trained, [prompt_end] + answer + answer)  # "red###red###...": only the marker stops it
    ckpt = tmp_path / "checkpoint_final.safetensors"
    save_trainable(trained, str(ckpt))
    assert recorded_style(str(ckpt))["end_sym"] == "###"

    serve_cfg = tiny_model_config(tiny_root)  # prompt_template / end_sym left unset, as eval configs do
    serve_cfg.llm.train = True
    serve_cfg.ckpt = [str(ckpt)]
    with caplog.at_level(logging.DEBUG, logger="tinygpt.models.build"):
        model = build_model(serve_cfg, "cpu", training=False)
    assert (model.style.template, model.style.end_sym) == ("[INST] {} [/INST]", "###")
    assert f"prompt style from {ckpt}" in caplog.text

    size = model.cfg.vision.image_size
    image = torch.zeros(1, 3, size, size)
    assert model.generate(image, ["<Img><ImageHere></Img> what colour?"], max_new_tokens=20) == ["red"]

    from PIL import Image

    chat = Chat(model, lambda im: torch.zeros(3, size, size), "cpu", defaults=GenerationOptions(max_new_tokens=20))
    chat.upload_image(Image.new("RGB", (size, size)))
    chat.ask("what colour?")
    assert chat.answer() == "red"
    chat.ask("what colour?")
    assert "".join(chat.stream()) == chat.history[-1][1]
    assert all("#" not in a for _, a in chat.history)


def test_an_override_that_disagrees_with_the_checkpoint_is_a_warning(tmp_path, tiny_root, caplog):
    cfg = tiny_model_config(tiny_root)
    cfg.end_sym = "###"
    torch.manual_seed(0)
    ckpt = tmp_path / "stage4.safetensors"
    save_trainable(build_model(cfg, "cpu", load_weights=False), str(ckpt))

    override = tiny_model_config(tiny_root)
    override.end_sym, override.ckpt = "<|endoftext|>", [str(ckpt)]
    with caplog.at_level(logging.WARNING, logger="tinygpt.models.build"):
        model = build_model(override, "cpu", training=False)
    assert model.style.end_sym == "<|endoftext|>"  # the explicit value is used ...
    assert "model.end_sym is '<|endoftext|>'" in caplog.text and "trained with '###'" in caplog.text  # ... loudly
