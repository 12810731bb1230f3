"""Any small backbone, end to end through the public entry points: for each LLM family, vision tower
and connector, a tiny random model saved as the user would bring it (save_pretrained), named by a
tinygpt config, loads with every key placed, trains (the loss falls), resumes exactly, and answers
through `model.generate` with the prompt style its checkpoint records."""
from __future__ import annotations

import json
import os

import pytest
import torch
from safetensors import safe_open

import tinygpt
from backbones import save_llm, save_tower
from fakes import fake_dataset_config
from tiny import tiny_config
from tinygpt.common import dist
from tinygpt.models import weights
from tinygpt.runners.iter_runner import IterRunner
from tinygpt.tasks.image_text import ImageTextTask

CPU = torch.device("cpu")
ONE = dist.DistInfo(rank=0, local_rank=0, world_size=1, is_main=True)
VOCAB = 512  # the tests' tokenizer has 400 tokens

# (LLM family, tower, connector): every family, tower and connector at least once.
COMBOS = [
    ("qwen2", "siglip", "mlp"),
    ("llama", "clip", "linear"),
    ("phi3", "siglip", "resampler"),
    ("gemma2", "clip", "mlp"),
    ("stablelm", "eva_vit_g", "qformer"),
    ("phi", "eva_vit_g", "mlp"),
    # An `hf` tower (DINOv2 with registers, width 24) into a Llama of width 48 through a resampler.
    ("llama", "dinov2", "resampler"),
]
HF_TOWERS = {"dinov2": dict(hidden_size=24, num_register_tokens=4)}  # tower -> its shape; kind `hf`
WIDER_LLM = dict(hidden_size=48)  # the LLM's width beside an `hf` tower: every width differs
FAST = {COMBOS[0], COMBOS[2]}


def backbone_config(root, tmp, family: str, tower: str, connector: str, out, **run):
    """A tinygpt config over freshly saved HF directories of this family and tower."""
    cfg = tiny_config(root)
    llm_dir, tower_dir = tmp / f"llm-{family}", tmp / f"tower-{tower}"
    if not llm_dir.exists():
        save_llm(family, llm_dir, vocab_size=VOCAB, **(WIDER_LLM if tower in HF_TOWERS else {}))
    m = cfg.model
    m.llm.family, m.llm.hf_config, m.llm.weights = "auto", str(llm_dir), str(llm_dir)
    m.llm.lora.dropout = 0.0  # dropout masks would differ between the runs compared
    m.vision.kind = "hf" if tower in HF_TOWERS else tower
    if tower in HF_TOWERS:
        m.vision.normalization = "clip"
    if tower != "eva_vit_g":
        if not tower_dir.exists():
            save_tower(tower, tower_dir, **HF_TOWERS.get(tower, {}))
        m.vision.hf_config = m.vision.weights = str(tower_dir)
        m.vision.ln_vision, m.vision.keep_cls = False, False  # LLaVA's recipe: patch tokens only
    m.connector.kind = connector
    m.connector.num_queries, m.connector.heads = 3, 4
    m.prompt_template, m.end_sym = "###Human: {} ###Assistant: ", "###"
    cfg.datasets = {"fake": fake_dataset_config()}
    cfg.run.num_workers, cfg.run.output_dir, cfg.run.tensorboard = 0, str(out), False
    cfg.run.init_lr, cfg.run.min_lr, cfg.run.warmup_steps = 3e-3, 1e-3, 1
    cfg.run.max_epoch, cfg.run.iters_per_epoch, cfg.run.batch_size_train = 2, 4, 4
    cfg.run.log_every, cfg.run.save_every = 1, 2
    for key, value in run.items():
        setattr(cfg.run, key, value)
    return cfg


def runner(cfg) -> IterRunner:
    torch.manual_seed(0)
    return IterRunner(cfg, tinygpt.build_model(cfg, CPU), ImageTextTask(cfg), CPU, ONE)


def combos():
    return [pytest.param(*c, marks=() if c in FAST else pytest.mark.slow, id="-".join(c)) for c in COMBOS]


@pytest.mark.parametrize("family,tower,connector", combos())
def test_backbone_loads_trains_resumes_and_answers(tiny_root, tmp_path, family, tower, connector):
    cfg = backbone_config(tiny_root, tmp_path, family, tower, connector, tmp_path / "full")
    full = runner(cfg)
    model = full.model

    # Every key of the user's files placed, nothing missing (the build loaded them the same way).
    for loader, path in ((weights.load_hf_causal_lm, cfg.model.llm.weights),
                         (weights.load_hf_vision, cfg.model.vision.weights)):
        if path:
            report = loader(model, path)
            assert report.ok and not report.missing and not report.unexpected, report.summary()
    assert any("lora_" in n for n, p in model.named_parameters() if p.requires_grad)
    visual = model.encode_images(torch.zeros(1, 3, 28, 28))
    assert visual.shape == (1, model.n_visual_tokens, model.llm.config.hidden_size)

    summary = full.train()
    curve = [float(line.split('"loss": ')[1].split(",")[0])
             for line in open(tmp_path / "full" / "metrics.jsonl")]
    assert curve[-1] < curve[0], curve
    # Both checkpoint kinds record which Linears carry LoRA (models/lora.py).
    with safe_open(summary["checkpoint"], "pt") as f:
        assert json.loads(f.metadata()["lora_targets"]) == list(model.lora_targets.modules)
    step = torch.load(tmp_path / "full" / "checkpoint_step0000008.pt", weights_only=True)
    assert step["lora_targets"] == json.dumps(list(model.lora_targets.modules))

    # Killed after step 5 (mid-epoch), resumed from step 4's checkpoint: the same final weights.
    part = runner(backbone_config(tiny_root, tmp_path, family, tower, connector, tmp_path / "part"))
    part.total_steps = 5
    part.train()
    resume = os.path.join(tmp_path / "part", "checkpoint_step0000004.pt")
    resumed = runner(backbone_config(tiny_root, tmp_path, family, tower, connector, tmp_path / "part",
                                     resume_ckpt_path=resume))
    resumed.train()
    got = dict(resumed.model.named_parameters())
    for name, p in model.named_parameters():
        if p.requires_grad:
            torch.testing.assert_close(got[name], p, rtol=1e-5, atol=1e-6, msg=name)

    # Inference from the final checkpoint, with no prompt style in the config: the checkpoint's.
    infer_cfg = backbone_config(tiny_root, tmp_path, family, tower, connector, tmp_path / "infer")
    infer_cfg.model.prompt_template = infer_cfg.model.end_sym = None
    infer_cfg.model.ckpt = [summary["checkpoint"]]
    infer = tinygpt.build_model(infer_cfg, CPU, training=False)
    assert infer.style.end_sym == "###" and infer.style.template == "###Human: {} ###Assistant: "
    answers = infer.generate(torch.zeros(2, 3, 28, 28), ["<Img><ImageHere></Img> [vqa] question 1?"] * 2,
                             max_new_tokens=4)
    assert len(answers) == 2 and all(isinstance(a, str) for a in answers)
