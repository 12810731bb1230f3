"""`python -m tinygpt.export`: a trained model as one self-contained directory (the Hugging Face
convention) that `tinygpt.from_pretrained(DIR)`, `demo.py --model DIR` and
`eval_scripts/evaluate.py --model DIR` load with no YAML and no other weight file.

    python -m tinygpt.export --cfg-path eval_configs/tiny.yaml --out exported/tiny [--keep-lora]

DIR/config.yaml       the model config (prompt style included, resolved), paths relative to DIR
DIR/llm_config.json   the language model's Hugging Face config
DIR/model.safetensors every weight of the inference model (LoRA merged, or kept with --keep-lora)
DIR/tokenizer*.json   the tokenizer
DIR/README.md         a model card: the config, the prompt style, parameter counts, and the
                      evaluation table of `evaluation.output_dir/results.md` when there is one

Int8 (`model.{llm,vision}.quantize: int8`): int8 packed weights are objects of the torch process
(fbgemm/oneDNN), which neither safetensors nor the ONNX graphs can hold, so both formats export the
float weights.  The directory keeps `quantize: int8` in its config.yaml: loading it quantizes again
(the same weights give the same int8 model).  The ONNX graphs compute in fp32.

With `--format onnx` the directory is for onnxruntime instead (`tinygpt/onnx_runtime.py`, no torch):
vision.onnx (images -> visual tokens), llm_step.onnx (the language model with its KV cache as
tensors: one graph for the prefill and each decode step), embed_tokens.npy, the tokenizer, onnx.json.
"""
from __future__ import annotations

import argparse
import copy
import os
import shutil
import sys
from typing import Optional

import torch
from omegaconf import OmegaConf

from .common import atomic
from .common.checkpoint import save_weights
from .common.config import Config, ConfigError, ModelConfig, load_config, to_yaml
from .common.errors import entry_point
from .conversation.protocol import STYLE_KEY

CONFIG, LLM_CONFIG, WEIGHTS = "config.yaml", "llm_config.json", "model.safetensors"
FORMAT = "tinygpt-full"


def export(cfg: Config, out: str, keep_lora: bool = False) -> str:
    """Write `out` (created; an existing export there is replaced file by file) and return it."""
    import tinygpt

    built = _float(cfg)
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


def _float(cfg: Config) -> Config:
    """`cfg` with int8 quantization off: what an export writes (see the module docstring)."""
    out = copy.deepcopy(cfg)
    out.model.llm.quantize = out.model.vision.quantize = "none"
    return out


class _Vision(torch.nn.Module):
    """images [B, 3, S, S] -> visual tokens [B, Q, D]."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, images):
        return self.model.encode_images(images)


class _LLMStep(torch.nn.Module):
    """(inputs_embeds [B, T, D], attention_mask [B, P + T], past keys / values [L, B, H, P, d]) ->
    (logits [B, T, V], keys / values [L, B, H, P + T, d]): the prefill (P = 0) and every decode
    step, with positions from the attention mask as `generate` computes them."""

    def __init__(self, llm):
        super().__init__()
        self.llm = llm
        self.layers = llm.config.num_hidden_layers

    def forward(self, embeds, mask, past_k, past_v):
        from transformers import DynamicCache

        cache = DynamicCache()
        for i in range(self.layers):
            cache.update(past_k[i], past_v[i], i)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, -embeds.shape[1]:]
        out = self.llm(inputs_embeds=embeds, attention_mask=mask, past_key_values=cache, position_ids=positions,
                       use_cache=True)
        layers = out.past_key_values.layers
        return (out.logits, torch.stack([layers[i].keys for i in range(self.layers)]),
                torch.stack([layers[i].values for i in range(self.layers)]))


def export_onnx(cfg: Config, out: str) -> str:
    """The onnxruntime directory (see the module docstring); parity is tested in tests/models/test_onnx.py."""
    import json

    import numpy as np
    from torch.export import Dim

    import tinygpt

    from .processors.image import IMAGE_STATS

    model = tinygpt.build_model(_float(cfg), "cpu", training=False)
    model.float().eval()
    os.makedirs(out, exist_ok=True)
    size, config = cfg.model.vision.image_size, model.llm.config
    layers, heads = config.num_hidden_layers, config.num_attention_heads
    head_dim = config.hidden_size // heads
    batch = Dim("batch", max=64)
    with torch.no_grad():
        with atomic.atomic_path(os.path.join(out, "vision.onnx"), ".onnx") as tmp:
            torch.onnx.export(_Vision(model), (torch.zeros(2, 3, size, size),), tmp, input_names=["images"],
                              output_names=["visual"], dynamic_shapes=({0: batch},), dynamo=True, external_data=False)
        # Traced with a non-empty cache of 2 positions; every length (0 for the prefill) is dynamic.
        example = (torch.zeros(1, 3, config.hidden_size), torch.ones(1, 5, dtype=torch.long),
                   torch.zeros(layers, 1, heads, 2, head_dim), torch.zeros(layers, 1, heads, 2, head_dim))
        step = Dim("step", max=4096)
        with atomic.atomic_path(os.path.join(out, "llm_step.onnx"), ".onnx") as tmp:
            torch.onnx.export(_LLMStep(model.llm), example, tmp, input_names=["embeds", "mask", "past_k", "past_v"],
                              output_names=["logits", "keys", "values"],
                              dynamic_shapes=({0: batch, 1: step}, {0: batch, 1: Dim.DYNAMIC},
                                              {1: batch, 3: Dim.DYNAMIC}, {1: batch, 3: Dim.DYNAMIC}),
                              dynamo=True, external_data=False)
        np.save(os.path.join(out, "embed_tokens.npy"), model.llm.get_input_embeddings().weight.float().numpy())
    tok = model.tokenizer
    model.tokenizer.save_pretrained(out)
    style = model.style
    mean, std = IMAGE_STATS[cfg.model.vision.kind]
    manifest = {"image_size": size, "mean": list(mean), "std": list(std),
                "style": {**json.loads(style.record()), "max_txt_len": style.max_txt_len,
                          "max_context_len": style.max_context_len},
                "bos_token": tok.bos_token, "eos_token": tok.eos_token, "pad_token": tok.pad_token,
                "layers": layers, "heads": heads, "head_dim": head_dim}
    atomic.write_json(os.path.join(out, "onnx.json"), manifest)
    return out


def model_card(cfg: Config, model, keep_lora: bool) -> str:
    from .inspect import count_parameters

    rows = count_parameters(model)
    lines = [f"# tinygpt model (exported from `{cfg.source}`)", "",
             f"Prompt style: {model.style.describe()}.", "",
             f"LoRA: {'kept as adapters' if keep_lora else 'merged into the base weights'}.", "",
             "| component | parameters |", "|---|---:|"]
    lines += [f"| {name} | {row['total']:,} |" for name, row in rows.items()]
    results = os.path.join(cfg.evaluation.output_dir, "results.md")
    if os.path.isfile(results):
        with open(results, encoding="utf-8") as f:
            lines += ["", "## Evaluation", "", f.read().strip()]
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


def from_pretrained(directory: str, device: Optional[str] = None):
    """An inference model (LoRA merged, frozen, eval mode) from an exported directory."""
    import tinygpt

    return tinygpt.build_model(load_exported_config(directory), device, training=False)


@entry_point("python -m tinygpt.export")
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tinygpt.export", description=__doc__.splitlines()[0])
    parser.add_argument("--cfg-path", required=True, help="the config that loads the trained model (eval_configs/...)")
    parser.add_argument("--options", nargs="*", default=[])
    parser.add_argument("--out", required=True, help="the directory to write")
    parser.add_argument("--keep-lora", action="store_true", help="keep LoRA adapters instead of merging them")
    parser.add_argument("--format", choices=("safetensors", "onnx"), default="safetensors",
                        help="onnx: graphs for onnxruntime (tinygpt/onnx_runtime.py) instead")
    args = parser.parse_args(argv)
    import tinygpt

    cfg = tinygpt.load_config(args.cfg_path, args.options)
    out = export_onnx(cfg, args.out) if args.format == "onnx" else export(cfg, args.out, keep_lora=args.keep_lora)
    print(f"exported: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
