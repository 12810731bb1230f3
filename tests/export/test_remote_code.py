"""`python -m tinygpt.export --format hf` on TinyGPT-V's own layout (full-size layout scaled down, and the
quickstart's tiny recipe): a trust_remote_code directory that stock transformers loads in a process that
never imports tinygpt, with tinygpt's logits (< 1e-4, fp32) and greedy answers."""
from __future__ import annotations

import json
import re

import pytest

import tinygpt
from exports import layout_config, trained_checkpoint
from tinygpt.conversation.chat_template import style_chat_template
from tinygpt.export import main as export_main
from tinygpt.export.hf import build_inference_model
from tinygpt.export.targets import REMOTE, ExportError, Target
from tinygpt.export.verify import TOLERANCE, verify_directory


@pytest.fixture(scope="module", params=["full", "quickstart"])
def exported(request, tmp_path_factory, tiny_root):
    work = tmp_path_factory.mktemp("remote")
    cfg = trained_checkpoint(layout_config(request.param, tiny_root), work, talkative=True)
    source = work / "cfg.yaml"
    source.write_text(tinygpt.common.config.to_yaml(cfg))
    assert export_main(["--format", "hf", "--cfg-path", str(source), "--out", str(work / "hf")]) == 0
    return cfg, work / "hf"


@pytest.mark.slow
def test_the_directory_ships_the_projects_own_source_and_no_tinygpt_import(exported):
    _, out = exported
    config = json.loads((out / "config.json").read_text())
    assert config["auto_map"]["AutoModelForImageTextToText"] == "hf_tinygptv.TinyGPTVForConditionalGeneration"
    assert json.loads((out / "processor_config.json").read_text())["auto_map"]["AutoProcessor"] == \
        "hf_tinygptv.TinyGPTVProcessor"
    root = tinygpt.__file__.rsplit("/", 1)[0]
    for name in ("hf_tinygptv.py", "phi.py", "norms.py", "projector.py"):  # copies of the source, not rewrites
        assert (out / name).read_text() == open(f"{root}/models/{name}").read()
        assert not re.search(r"^\s*(from|import)\s+tinygpt", (out / name).read_text(), flags=re.M)


@pytest.mark.slow
def test_model_card_records_target_version_and_parity(exported):
    import transformers

    card = (exported[1] / "README.md").read_text()
    assert "Target: **remote-code**" in card and f"transformers {transformers.__version__}" in card
    diff = float(re.search(r"max \|logits difference\| .*: ([0-9.e+-]+)", card).group(1))
    assert diff < TOLERANCE
    assert "(fp32, 2 images," in card  # two pictures and questions, in one stock process
    answer = re.search(r"the same greedy answer: '(.*)' \((\d+) tokens; all 2 answers equal\)", card)
    assert answer.group(1) and int(answer.group(2)) > 1  # a real answer, several tokens long


@pytest.mark.slow
def test_verify_catches_a_processor_that_places_the_image_elsewhere(exported, tmp_path):
    """The check bites: the same weights with the image on the other side of the question differ.
    (verify_directory runs stock_check.py in a fresh process, asserting tinygpt is not imported there.)"""
    import shutil

    cfg, out = exported
    model = build_inference_model(cfg)
    broken = tmp_path / "broken"
    shutil.copytree(out, broken)
    swapped = model.style.replace(image_after_question=not model.style.image_after_question)
    (broken / "chat_template.jinja").write_text(style_chat_template(swapped, "<image>"))
    with pytest.raises(ExportError, match="logits differ|answers"):
        verify_directory(model, str(broken), Target(REMOTE, ""))


@pytest.mark.slow
def test_an_export_that_fails_verification_writes_nothing(exported, tmp_path, monkeypatch, capsys):
    from tinygpt.export import verify

    cfg, _ = exported
    source = tmp_path / "cfg.yaml"
    source.write_text(tinygpt.common.config.to_yaml(cfg))
    monkeypatch.setattr(verify, "TOLERANCE", -1.0)  # no difference passes
    assert export_main(["--format", "hf", "--cfg-path", str(source), "--out", str(tmp_path / "out")]) == 2
    assert "logits differ from tinygpt's" in capsys.readouterr().err
    assert not (tmp_path / "out").exists() and [p.name for p in tmp_path.iterdir()] == ["cfg.yaml"]
