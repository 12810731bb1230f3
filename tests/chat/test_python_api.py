"""The one-line API (`tinygpt.from_pretrained(...).answer(image, question)`): the demo's answers, the
image placed as the model was trained, from a YAML or a training output folder."""
from __future__ import annotations

import pytest
import torch

import tinygpt
from tiny import tiny_config
from tinygpt.common.config import to_yaml
from tinygpt.common.errors import UserError
from tinygpt.conversation import GenerationOptions
from tinygpt.models.weights import save_trainable

QUESTION = "[vqa] what colour is the circle?"


@pytest.fixture(scope="module")
def trained(tiny_root, tmp_path_factory):
    """A stage folder as train.py leaves it (config.yaml + checkpoint_final), question-first style."""
    stage = tmp_path_factory.mktemp("api") / "stage4"
    stage.mkdir()
    cfg = tiny_config(tiny_root)
    cfg.model.prompt_template, cfg.model.end_sym = "[INST] {} [/INST]", "###"
    cfg.model.image_after_question = True
    cfg.model.llm.train = cfg.model.vision.train = cfg.model.qformer.train = True  # every weight in the file
    torch.manual_seed(0)
    model = tinygpt.build_model(cfg, "cpu", load_weights=False)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    save_trainable(model, str(stage / "checkpoint_final.safetensors"))
    (stage / "config.yaml").write_text(to_yaml(cfg))  # what the runner writes: the ckpt list it started from
    yaml_cfg = cfg
    yaml_cfg.model.ckpt = [str(stage / "checkpoint_final.safetensors")]
    (stage.parent / "eval.yaml").write_text(to_yaml(yaml_cfg))
    return stage


def test_answer_equals_the_demo_and_places_the_image_as_trained(trained, image_file):
    from tinygpt.serve.main import load_chat

    options = {"max_new_tokens": 6}
    model = tinygpt.from_pretrained(str(trained), "cpu")
    got = model.answer(str(image_file), QUESTION, **options)
    demo = load_chat(str(trained.parent / "eval.yaml"), ["run.device=cpu"], GenerationOptions(**options))
    from PIL import Image

    demo.upload_image(Image.open(image_file).convert("RGB"))
    demo.ask(QUESTION)
    assert got == demo.answer() and isinstance(got, str)
    session = model.chat()
    session.upload_image(Image.open(image_file))
    session.ask(QUESTION)
    assert session.prompt().index("what colour") < session.prompt().index("<ImageHere>")  # question first
    from_yaml = tinygpt.from_pretrained(str(trained.parent / "eval.yaml"), "cpu")
    assert from_yaml.answer(Image.open(image_file), QUESTION, **options) == got


def test_a_batch_gives_the_answers_one_by_one(trained, image_file, image):
    model = tinygpt.from_pretrained(str(trained), "cpu")
    one = [model.answer(im, q, max_new_tokens=5) for im, q in ((str(image_file), QUESTION), (image, "[vqa] how many?"))]
    assert model.answer([str(image_file), image], [QUESTION, "[vqa] how many?"], max_new_tokens=5) == one


def test_bad_input_is_one_clear_error(trained, tmp_path):
    model = tinygpt.from_pretrained(str(trained), "cpu")
    with pytest.raises(UserError, match="cannot read image"):
        model.answer(str(tmp_path / "missing.png"), QUESTION)
    with pytest.raises(UserError, match="2 questions need as many images"):
        model.answer(str(tmp_path / "a.png"), [QUESTION, QUESTION])
    with pytest.raises(UserError, match="neither an exported directory"):
        tinygpt.from_pretrained(str(tmp_path / "nothing"))


def test_an_answer_prints_no_library_warning(trained, image_file, recwarn):
    model = tinygpt.from_pretrained(str(trained), "cpu")
    recwarn.clear()
    model.answer(str(image_file), QUESTION, max_new_tokens=4)  # repetition_penalty 1.05, TinyGPT-V's default
    assert [str(w.message) for w in recwarn if "repetition_penalty" in str(w.message)] == []


def test_the_repetition_penalty_does_not_depend_on_the_batch(trained, image):
    # A left-padded row must be penalised over all its generated tokens, as when it runs alone.
    model = tinygpt.from_pretrained(str(trained), "cpu").model
    size = model.cfg.vision.image_size
    images = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(3))
    prompts = ["<Img><ImageHere></Img> [vqa] a much longer question about the picture here?", "[vqa] hi <Img><ImageHere></Img>"]
    opts = dict(max_new_tokens=8, repetition_penalty=3.0)
    together = model.generate(images, prompts, **opts)
    alone = [model.generate(images[i:i + 1], prompts[i:i + 1], **opts)[0] for i in range(2)]
    assert together == alone


def test_a_model_load_logs_one_line(trained, caplog):
    import logging

    with caplog.at_level(logging.INFO, logger="tinygpt"):
        tinygpt.from_pretrained(str(trained), "cpu")
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    assert len(lines) == 1, lines
    assert lines[0].startswith("model on cpu: ") and "LoRA layers merged" in lines[0] and "[INST] {} [/INST]" in lines[0]
