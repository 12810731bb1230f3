"""The `safetensors` target: a trained model as one self-contained directory (the Hugging Face
convention) that `tinygpt.from_pretrained(DIR)`, `demo.py --model DIR` and
`eval_scripts/evaluate.py --model DIR` load with no YAML and no other weight file.

    python -m tinygpt.export --cfg-path eval_configs/tiny.yaml --out exported/tiny [--keep-lora]

DIR/config.yaml       the model config (prompt style included, resolved), paths relative to DIR
DIR/llm_config.json   the language model's Hugging Face config
DIR/model.safetensors every weight of the inference model (LoRA merged, or kept with --keep-lora)
DIR/tokenizer*.json   the tokenizer
DIR/README.md         a model card: the config, the prompt style, parameter counts, and the
                      evaluation table of `evaluation.output_dir/results.md` when there is one

Its parity check: tests/models/test_export.py (the round trip gives identical visual tokens and logits).

Int8 (`model.{llm,vision}.quantize: int8`): int8 packed weights are objects of the torch process
(fbgemm/oneDNN), which no file format here holds, so every target exports the float weights
(`float_config`).  This directory keeps `quantize: int8` in its config.yaml: loading it quantizes
again (the same weights give the same int8 model); the ONNX and hf targets compute in float.
"""
from __future__ import annotations

import copy
import os
import shutil
from typing import Optional

from omegaconf import OmegaConf

from ..common import atomic
from ..common.checkpoint import save_weights
from ..common.config import Config, ConfigError, ModelConfig, load_config, to_yaml
from ..conversation.protocol import STYLE_KEY

CONFIG, LLM_CONFIG, WEIGHTS = "config.yaml", "llm_config.json", "model.safetensors"
FORMAT = "tinygpt-full"


def float_config(cfg: Config) -> Config:
    """`cfg` with int8 quantization off: what every export target builds (see the module docstring)."""
    out = copy.deepcopy(cfg)
    out.model.llm.quantize = out.model.vision.quantize = "none"
    return out


def export(cfg: Config, out: str, keep_lora: bool = False) -> str:
    """Write `out` (created; an existing export there is replaced file by file) and return it."""
    import tinygpt

    built = float_config(cfg)
    model = tinygpt.build_model(built, "cpu", training=keep_lora)  # training=False merges LoRA
    model.eval()
    # A deep copy of the model config build_model resolved (the prompt style included), with the
    # int8 choice the float weights are exported for.
    exported: ModelConfig = OmegaConf.to_object(OmegaConf.structured(built.model))
    exported.llm.quantize, exported.vision.quantize = cfg.model.llm.quantize, cfg.model.vision.quantize
    exported.llm.hf_config, exported.llm.tokenizer, exported.llm.weights = LLM_CONFIG, ".", None
    exported.vision.weights = exported.qformer.weights = None
    exported.ckpt, exported.feature_cache = [WEIGHTS], None
    if not keep_lora:
        exported.llm.lora.r = 0  # merged into the base weights
    os.makedirs(out, exist_ok=True)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith(model.training_aid_prefixes)}
    save_weights(state, os.path.join(out, WEIGHTS), FORMAT, metadata={STYLE_KEY: model.style.record()})
    source = cfg.model.llm.hf_config
    shutil.copyfile(os.path.join(source, "config.json") if os.path.isdir(source) else source,
                    os.path.join(out, LLM_CONFIG))
    model.tokenizer.save_pretrained(out)
    atomic.write_text(os.path.join(out, CONFIG), to_yaml(Config(model=exported)))
    atomic.write_text(os.path.join(out, "README.md"), model_card(cfg, model, keep_lora))
    return out


def parameter_rows(model) -> list[str]:
    """The model card's table of parameters per component (markdown lines)."""
    from ..inspect import count_parameters

    rows = count_parameters(model)
    return (["| component | parameters |", "|---|---:|"]
            + [f"| {name} | {row['total']:,} |" for name, row in rows.items()])


def evaluation_section(cfg: Config) -> list[str]:
    """The evaluation table of `evaluation.output_dir/results.md` (markdown lines), if there is one."""
    results = os.path.join(cfg.evaluation.output_dir, "results.md")
    if not os.path.isfile(results):
        return []
    with open(results, encoding="utf-8") as f:
        return ["", "## Evaluation (tinygpt's, before the export)", "", f.read().strip()]


def model_card(cfg: Config, model, keep_lora: bool) -> str:
    lines = [f"# tinygpt model (exported from `{cfg.source}`)", "",
             f"Prompt style: {model.style.describe()}.", "",
             f"LoRA: {'kept as adapters' if keep_lora else 'merged into the base weights'}.", ""]
    lines += parameter_rows(model) + evaluation_section(cfg)
    lines += ["", "## Config", "", "```yaml", OmegaConf.to_yaml(OmegaConf.structured(cfg.model)).strip(), "```"]
    return "\n".join(lines) + "\n"


def load_exported_config(directory: str, options: Optional[list[str]] = None) -> Config:
    """The config of an exported directory (`--options` applied), its file paths made absolute."""
    path = os.path.join(directory, CONFIG)
    if not os.path.isfile(path):
        raise ConfigError(f"{directory}: not an exported tinygpt model (no {CONFIG}; make one with "
                          "`python -m tinygpt.export`)")
    cfg = load_config(path, options)
    model = cfg.model
    model.llm.hf_config = os.path.join(directory, model.llm.hf_config)
    model.llm.tokenizer = os.path.join(directory, model.llm.tokenizer)
    model.ckpt = [os.path.join(directory, p) for p in model.ckpt]
    return cfg
