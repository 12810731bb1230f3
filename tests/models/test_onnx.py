"""`python -m tinygpt.export --format onnx` on tiny models of every LLM family of tests/backbones.py
(and TinyGPT-V's own Phi-2): onnxruntime answers a question about an image without torch, with torch's
visual tokens and logits (< 1e-4, fp32) and greedy tokens (tinygpt/export/onnx_check.py); the step
graph's KV cache takes the family's layout from its config (GQA's k/v heads, Gemma's head_dim, sliding
windows); a cache it cannot hold is refused up front."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

import tinygpt
from backbones import FAMILIES, save_llm
from exports import layout_config, trained_checkpoint
from tinygpt.export import export_onnx
from tinygpt.export import main as export_main
from tinygpt.common.errors import UserError
from tinygpt.export.onnx_check import TOLERANCE, onnx_parity
from tinygpt.export.onnx_graphs import kv_layout
from tinygpt.onnx_runtime import OnnxModel

QUESTION = "what colour is the circle?"
OURS = "tinygptv_phi"  # TinyGPT-V's Phi-2 subclass (the quickstart's and the full-size recipes' LM)
# A few families in the fast suite (MHA with TinyGPT-V's norms; GQA with a tied head; Gemma-2's explicit
# head_dim, sliding window and soft-capping), the others in the slow one.
FAST = (OURS, "qwen2", "gemma2")
PARAMS = [pytest.param(f, marks=() if f in FAST else pytest.mark.slow) for f in (OURS, *sorted(FAMILIES))]


@pytest.fixture(scope="module")
def image_path(tmp_path_factory):
    image = Image.new("RGB", (60, 40), "white")
    ImageDraw.Draw(image).ellipse([5, 5, 30, 30], fill="red")
    path = tmp_path_factory.mktemp("image") / "image.png"
    image.save(path)
    return path


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_root):
    """family -> (config, ONNX directory) of a trained-looking tiny model whose LM is of that family
    (the full-size layout's EVA tower and Q-Former, scaled down), exported once per module."""
    done = {}

    def export(family: str):
        if family not in done:
            work = tmp_path_factory.mktemp(f"onnx-{family}")
            cfg = layout_config("full", tiny_root)
            if family != OURS:
                save_llm(family, work / family, vocab_size=512, max_position_embeddings=256)
                cfg.model.llm.family, cfg.model.llm.hf_config = "auto", str(work / family)
            cfg = trained_checkpoint(cfg, work, talkative=True)  # answers of all 12 tokens
            done[family] = cfg, export_onnx(cfg, str(work / "onnx"))
        return done[family]

    return export


def expected_layout(config) -> dict:
    """The KV layout the family's config fields describe."""
    heads = config.num_attention_heads
    return {"layers": config.num_hidden_layers, "heads": getattr(config, "num_key_value_heads", None) or heads,
            "key_dim": getattr(config, "head_dim", None) or config.hidden_size // heads,
            "value_dim": getattr(config, "head_dim", None) or config.hidden_size // heads}


@pytest.mark.parametrize("family", PARAMS)
def test_onnxruntime_matches_torch(exported, image_path, family):
    from tinygpt.processors.build import eval_processor

    cfg, out = exported(family)
    reference = tinygpt.build_model(cfg, "cpu", training=False)
    onnx = OnnxModel(out)
    image = Image.open(image_path)
    np.testing.assert_allclose(onnx.preprocess(image), eval_processor(cfg.model)(image).numpy(), atol=1e-6)
    assert onnx.manifest["kv_cache"] == expected_layout(reference.llm.config)
    assert onnx.manifest["model_type"] == reference.llm.config.model_type
    parity = onnx_parity(reference, out, image, QUESTION, max_new_tokens=12)
    assert parity.visual_diff < TOLERANCE and parity.logits_diff < TOLERANCE, parity.summary()
    # The same 12 greedy tokens (each decode step through the graph's cache), so the same answer.
    assert parity.onnx_tokens == parity.torch_tokens and len(parity.onnx_tokens) == 12, parity.summary()
    assert parity.ok and parity.onnx_answer == parity.torch_answer


def test_the_generate_loop_imports_no_torch(exported, image_path):
    _, out = exported("qwen2")
    code = (f"import sys; from PIL import Image; from tinygpt.onnx_runtime import OnnxModel; "
            f"print(OnnxModel({str(out)!r}).answer(Image.open({str(image_path)!r}), {QUESTION!r}, 8)); "
            f"print('torch' in sys.modules)")
    lines = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.splitlines()
    assert lines[-1] == "False" and len(lines) == 2  # an answer line (possibly blank), then: no torch


def test_a_cache_the_step_graph_cannot_hold_is_refused_up_front(tmp_path, tiny_root, capsys):
    """RWKV keeps a recurrent state, no key/value pair per layer: one line naming the model type and
    why, exit 2, nothing written."""
    from transformers import CONFIG_MAPPING, AutoModelForCausalLM

    from benchmarks.backbones import tiny_config

    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(tiny_config(CONFIG_MAPPING["rwkv"])).save_pretrained(tmp_path / "rwkv")
    cfg = layout_config("full", tiny_root)
    llm = cfg.model.llm
    llm.family, llm.hf_config, llm.weights = "auto", str(tmp_path / "rwkv"), str(tmp_path / "rwkv")
    (tmp_path / "cfg.yaml").write_text(tinygpt.common.config.to_yaml(cfg))
    capsys.readouterr()  # save_pretrained's progress bar
    code = export_main(["--format", "onnx", "--cfg-path", str(tmp_path / "cfg.yaml"), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert "model type 'rwkv'" in err[0] and "one key and one value tensor per layer" in err[0], err
    assert not (tmp_path / "out").exists()


def test_layers_without_a_key_value_cache_are_read_from_the_config():
    """LFM2's short-convolution layers (its config's layer_types) are refused before the model runs."""
    from transformers import Lfm2Config, Lfm2ForCausalLM

    config = Lfm2Config(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, layer_types=["conv", "full_attention"])
    with pytest.raises(UserError, match="model type 'lfm2': its conv layers keep a state"):
        kv_layout(Lfm2ForCausalLM(config))


def test_the_manifest_records_the_cache_layout(exported):
    _, out = exported("qwen2")
    with open(f"{out}/onnx.json", encoding="utf-8") as f:
        manifest = json.load(f)
    # GQA: the cache holds the 2 k/v heads, not the 4 query heads.
    assert manifest["kv_cache"] == {"layers": 2, "heads": 2, "key_dim": 8, "value_dim": 8}
    assert OnnxModel(out).empty_cache(3)[0].shape == (2, 3, 2, 0, 8)


def test_a_graph_torch_cannot_trace_is_one_line_and_leaves_out_as_it_was(tmp_path, tiny_root, capsys, monkeypatch):
    """The vision graph is written, then the step graph fails: one line with torch's cause, exit 2,
    `--out`'s earlier content untouched and no file of the failed export in it."""
    export = torch.onnx.export

    def fail_on_step(module, example, path, **kwargs):
        if path.endswith("llm_step.onnx"):
            raise torch.onnx.errors.OnnxExporterError(
                "Failed to export the model with torch.export.\n\n## Exception summary\n\n"
                "<class 'RuntimeError'>: Sizes of tensors must match\n\n(Refer to the full stack trace)")
        return export(module, example, path, **kwargs)

    monkeypatch.setattr(torch.onnx, "export", fail_on_step)
    cfg = layout_config("full", tiny_root)
    (tmp_path / "cfg.yaml").write_text(tinygpt.common.config.to_yaml(cfg))
    out = tmp_path / "out"
    out.mkdir()
    (out / "onnx.json").write_text("{}")  # an earlier export's
    code = export_main(["--format", "onnx", "--cfg-path", str(tmp_path / "cfg.yaml"), "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].endswith("model type 'phi': torch.onnx.export cannot trace its llm_step.onnx graph "
                           "(RuntimeError: Sizes of tensors must match); use --format safetensors or hf"), err
    assert sorted(p.name for p in out.iterdir()) == ["onnx.json"] and (out / "onnx.json").read_text() == "{}"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


def test_verify_refuses_a_graph_that_disagrees_with_torch(tmp_path, tiny_root, capsys, monkeypatch):
    """--verify (on by default) runs the written graphs with onnxruntime on verify.py's probes: a step
    graph whose logits are off by 1e-3 is refused in one line and nothing is written."""
    from tinygpt.export import onnx_graphs

    forward = onnx_graphs._LLMStep.forward

    def off(self, embeds, mask, past_k, past_v):  # torch.export reads the argument names
        logits, keys, values = forward(self, embeds, mask, past_k, past_v)
        return logits + 1e-3, keys, values

    monkeypatch.setattr(onnx_graphs._LLMStep, "forward", off)
    cfg = layout_config("full", tiny_root)
    (tmp_path / "cfg.yaml").write_text(tinygpt.common.config.to_yaml(cfg))
    code = export_main(["--format", "onnx", "--cfg-path", str(tmp_path / "cfg.yaml"), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert "model type 'phi': onnxruntime's graph disagrees with the torch model" in err[0] and "1.0e-03" in err[0], err
    assert not (tmp_path / "out").exists()
    assert export_main(["--format", "onnx", "--no-verify", "--cfg-path", str(tmp_path / "cfg.yaml"),
                        "--out", str(tmp_path / "out")]) == 0  # unchecked, as asked


def test_a_directory_of_an_older_export_is_named_with_what_to_do(tmp_path):
    (tmp_path / "onnx.json").write_text(json.dumps({"layers": 2, "heads": 4, "head_dim": 8}))
    with pytest.raises(UserError, match=r"onnx.json: no 'kv_cache' .* export the model again"):
        OnnxModel(str(tmp_path))
