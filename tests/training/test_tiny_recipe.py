"""The quickstart's tiny recipe end to end, shrunk to seconds: the four stage YAMLs under
train_configs/tiny/ train in order on a few dozen generated scenes, each stage starts from the
checkpoints its `model.ckpt` names (the previous stage's checkpoint_final.safetensors, and stage 2's
for the towers that stages 3-4 freeze), and eval_configs/tiny.yaml scores the result.

Only paths and step counts are overridden (`--options`, as a user would); everything else (model
sizes, templates, datasets, what trains) is the committed recipe.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import tinygpt
from tinygpt import training
from tinygpt.datasets.synthetic import generate
from tinygpt.models import weights
from tinygpt.models.weights.plan import resolve

REPO = Path(__file__).resolve().parents[2]
STAGES = [REPO / f"train_configs/tiny/stage{n}.yaml" for n in (1, 2, 3, 4)]
EVAL = REPO / "eval_configs/tiny.yaml"
DATA = "data/synthetic"
TOWERS = ("visual_encoder.", "ln_vision.", "qformer.", "query_tokens")  # the prefix every data path in the committed configs starts with


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synthetic")
    cfg = tinygpt.load_config(STAGES[0])
    generate(str(out), train_images=24, eval_images=4, image_size=cfg.model.vision.image_size,
             shard_size=8, questions_per_image=2)
    return out


def data_options(cfg_path: Path, corpus: Path) -> list[str]:
    """`--options` that move every data path of a config from data/synthetic to `corpus`."""
    cfg = tinygpt.load_config(cfg_path)
    opts = [f"model.llm.tokenizer={corpus / 'tokenizer'}"]

    def moved(path: str) -> str:
        assert path.startswith(DATA), f"{cfg_path}: {path} is not under {DATA}"
        return str(corpus) + path[len(DATA):]

    for name, ds in cfg.datasets.items():
        opts.append(f"datasets.{name}.storage=[{','.join(moved(p) for p in ds.storage)}]")
        if ds.image_root:
            opts.append(f"datasets.{name}.image_root={moved(ds.image_root)}")
    for name, bench in cfg.evaluation.benchmarks.items():
        for key in ("questions", "annotations", "image_root"):
            if getattr(bench, key):
                opts.append(f"evaluation.benchmarks.{name}.{key}={moved(getattr(bench, key))}")
    return opts


@pytest.mark.slow
def test_four_tiny_stages_chain_their_checkpoints_and_the_eval_config_scores_stage_4(
        corpus, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(REPO)  # the configs name train_configs/tiny/phi-tiny.json and prompt files relative to it
    loads = []
    real_load = weights.load_checkpoint

    def spy(model, path):
        report = real_load(model, path)
        # What the file holds is now in the model, exactly (LoRA-wrapped layers included).
        params = dict(model.named_parameters())
        for key, value in load_file(path).items():
            assert torch.equal(params[resolve(key, params)].detach().cpu(), value), key
        loads.append((path, report))
        return report

    monkeypatch.setattr(weights, "load_checkpoint", spy)
    stage_outputs = {}
    def moved(ckpts: list[str]) -> list[str]:  # output/tiny/stageN/... -> this test's stageN
        return [str(tmp_path / p.removeprefix("output/tiny/")) for p in ckpts]

    for n, cfg_path in enumerate(STAGES, 1):
        cfg = tinygpt.load_config(cfg_path)
        # Each stage starts from the one before; stages 3-4 freeze the towers, whose weights only
        # stage 2's checkpoint holds.
        chain = [f"output/tiny/stage{k}/checkpoint_final.safetensors" for k in ((), (1,), (2,), (2, 3))[n - 1]]
        assert cfg.model.ckpt == chain, f"stage {n}"
        assert cfg.run.output_dir == f"output/tiny/stage{n}"
        out = tmp_path / f"stage{n}"
        previous = moved(cfg.model.ckpt)
        options = data_options(cfg_path, corpus) + [
            f"run.output_dir={out}", "run.iters_per_epoch=2", "run.warmup_steps=1", "run.log_every=1",
            "run.batch_size_train=2", "run.num_workers=0", f"model.ckpt=[{','.join(previous)}]",
        ]
        options += [f"datasets.{name}.batch_size=null" for name in cfg.datasets]
        loads.clear()
        assert training.main(["--cfg-path", str(cfg_path), "--options", *options]) == 0, f"stage {n}"
        final = out / "checkpoint_final.safetensors"
        for name in ("checkpoint_final.safetensors", "metrics.jsonl", "metrics.csv", "loss_curve.png", "config.yaml"):
            assert (out / name).is_file(), f"stage {n}: {name} missing"
        rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        assert [r["step"] for r in rows] == [1, 2] and all(r["loss"] == r["loss"] for r in rows)  # not NaN
        assert [p for p, _ in loads] == previous, f"stage {n} did not load {previous}"
        for path, report in loads:
            assert report.ok and len(report.loaded) == len(load_file(path)), path
        # checkpoint_final holds what the stage trained, less the training aids; stages 1-2 train
        # everything, 3-4 everything but the towers.
        saved = load_file(str(final))
        built = tinygpt.build_model(tinygpt.load_config(cfg_path, data_options(cfg_path, corpus)
                                                        + ["model.ckpt=[]"]), "cpu")
        names = {name for name, p in built.named_parameters() if p.requires_grad}
        aids = {name for name in names if name.startswith(built.training_aid_prefixes)}
        towers = {name for name, _ in built.named_parameters() if name.startswith(TOWERS)}
        assert bool(aids) == (n == 1), f"stage {n}: only stage 1 trains the Q-Former cell head"
        assert towers and towers & names == (towers if n <= 2 else set()), f"stage {n}: towers"
        assert set(saved) == names - aids, f"stage {n}: checkpoint is not the trained weights (less the aids)"
        stage_outputs[n] = str(final)

    monkeypatch.setattr(weights, "load_checkpoint", real_load)
    from tinygpt.evaluation.cli import main as evaluate

    eval_out = tmp_path / "eval"
    eval_ckpts = moved(tinygpt.load_config(EVAL).model.ckpt)
    assert eval_ckpts == [stage_outputs[2], stage_outputs[4]]  # the towers of stage 2, the rest of stage 4
    options = data_options(EVAL, corpus) + [
        f"model.ckpt=[{','.join(eval_ckpts)}]", f"evaluation.output_dir={eval_out}",
        "evaluation.benchmarks.vqav2.max_samples=4", "evaluation.benchmarks.refcoco.max_samples=4",
    ]
    # Captions need Java (pycocoevalcap); the VQA and grounding scorers are pure Python.
    assert evaluate(["--cfg-path", str(EVAL), "--benchmarks", "vqav2,refcoco", "--no-progress",
                     "--options", *options]) == 0
    results = json.loads((eval_out / "results.json").read_text())["results"]
    assert {r["benchmark"] for r in results.values()} == {"vqav2", "refcoco"}
    assert all(r["n"] == 4 for r in results.values())
    assert os.path.exists(eval_out / "results.md")


def test_the_tiny_phi_activation_is_phi2s_gelu_new_as_one_kernel():
    # phi-tiny.json names the fused tanh GELU for speed; it must be the function Phi-2's gelu_new is.
    from transformers.activations import ACT2FN

    act = json.loads((REPO / "train_configs/tiny/phi-tiny.json").read_text())["hidden_act"]
    assert act == "gelu_pytorch_tanh"
    x = torch.linspace(-8, 8, 20001)
    torch.testing.assert_close(ACT2FN[act](x), ACT2FN["gelu_new"](x), rtol=0, atol=1e-6)
