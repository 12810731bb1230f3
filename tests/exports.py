"""Tiny trained-looking models for the export tests: the layouts a user exports, scaled down, with
every parameter moved off its init and saved as a checkpoint the config loads."""
from __future__ import annotations

from pathlib import Path

import torch

import tinygpt
from tiny import tiny_config
from tinygpt.models.weights import save_trainable

ROOT = Path(__file__).resolve().parents[1]


def layout_config(layout: str, tiny_root: Path):
    """ "full": the full-size architecture's layout, scaled down (tests/tiny.py); "quickstart": the
    quickstart's tiny recipe (train_configs/tiny/stage4.yaml's model) with the tests' tokenizer."""
    if layout == "full":
        cfg = tiny_config(tiny_root)
        cfg.model.prompt_template, cfg.model.end_sym = "[INST] {} [/INST]", "###"
        return cfg
    tiny_config(tiny_root)  # writes the tokenizer
    cfg = tinygpt.load_config(ROOT / "train_configs/tiny/stage4.yaml",
                              [f"model.llm.tokenizer={tiny_root / 'tokenizer'}", "model.ckpt=[]", "run.device=cpu"])
    cfg.model.llm.hf_config = str(ROOT / cfg.model.llm.hf_config)
    return cfg


def trained_checkpoint(cfg, work: Path, talkative: bool = False):
    """Every weight of `cfg`'s model perturbed and saved to work/checkpoint_final.safetensors, which
    `cfg.model.ckpt` then names (the prompt style read back from it).  `talkative`: the LM never
    predicts the end marker, EOS or ids the tokenizer cannot decode, so greedy answers are long."""
    cfg.model.llm.train = cfg.model.vision.train = True
    if cfg.model.connector.kind == "qformer":
        cfg.model.qformer.train = True
    torch.manual_seed(0)
    model = tinygpt.build_model(cfg, "cpu", load_weights=False)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
        if talkative:
            head = model.llm.get_output_embeddings()
            vocab = model.tokenizer.get_vocab()
            quiet = [i for t, i in vocab.items() if "#" in t or t == model.tokenizer.eos_token]
            quiet += range(len(vocab), head.weight.shape[0])
            if head.bias is not None:
                head.bias[quiet] -= 100.0
            else:
                head.weight[quiet] = 0.0
    path = work / "checkpoint_final.safetensors"
    save_trainable(model, str(path))
    cfg.model.prompt_template = cfg.model.end_sym = None
    cfg.model.ckpt = [str(path)]
    return cfg
