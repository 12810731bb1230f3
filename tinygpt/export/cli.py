"""The command line of `python -m tinygpt.export` (see the package docstring for the formats)."""
from __future__ import annotations

import argparse

from ..common.errors import UserError, entry_point


@entry_point("python -m tinygpt.export")
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tinygpt.export",
                                     description="Export a trained model: tinygpt's directory, ONNX, or Hugging Face.")
    parser.add_argument("--cfg-path", required=True, help="the config that loads the trained model (eval_configs/...)")
    parser.add_argument("--options", nargs="*", default=[])
    parser.add_argument("--out", required=True, help="the directory to write")
    parser.add_argument("--format", choices=("safetensors", "onnx", "hf"), default="safetensors",
                        help="safetensors: tinygpt's own directory; onnx: graphs for onnxruntime "
                             "(tinygpt/onnx_runtime.py); hf: a directory stock transformers loads (the target "
                             "is chosen from the model's parts: LLaVA, BLIP-2 or TinyGPT-V remote code)")
    parser.add_argument("--keep-lora", action="store_true",
                        help="safetensors only: keep LoRA adapters instead of merging them")
    parser.add_argument("--verify", action=argparse.BooleanOptionalAction, default=True,
                        help="hf: reload the directory with stock transformers in a process without tinygpt and "
                             "check logits and greedy answer against tinygpt's; onnx: run it with onnxruntime and "
                             "check logits at every decode step and the greedy tokens (default: on)")
    args = parser.parse_args(argv)
    if args.keep_lora and args.format != "safetensors":
        raise UserError("--keep-lora is for --format safetensors (the other formats merge LoRA)")
    import tinygpt
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a bar per shard of a tiny file is noise; the result line says what was written
    cfg = tinygpt.load_config(args.cfg_path, args.options)
    if args.format == "onnx":
        from .onnx_graphs import export_onnx

        out = export_onnx(cfg, args.out, verify=args.verify)
    elif args.format == "hf":
        from .hf import export_hf

        export_hf(cfg, args.out, verify=args.verify)
        out = args.out
    else:
        from .directory import export

        out = export(cfg, args.out, keep_lora=args.keep_lora)
    print(f"exported: {out}")
    return 0
