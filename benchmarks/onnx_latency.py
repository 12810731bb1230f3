"""onnxruntime vs torch on the CPU: one greedy answer about one image, the same model both ways.

    bash quickstart.sh                      # (data/synthetic/tokenizer; trained weights optional)
    python -m benchmarks.onnx_latency [--cfg-path eval_configs/tiny.yaml] [--options model.ckpt=[]]

Exports the config's model with `tinygpt.export.export_onnx` to a temporary directory, then answers
the same question `--repeats` times with each runtime, interleaved (torch, onnx, torch, ...), and
prints the median seconds per answer and their ratio, with the machine record.  Both decode greedily
for `--max-new-tokens` tokens (the end marker is suppressed so every answer has the same length).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import torch
from PIL import Image, ImageDraw

from . import _common as C


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cfg-path", default="eval_configs/tiny.yaml")
    p.add_argument("--options", nargs="*", default=["model.ckpt=[]", "run.device=cpu"])
    p.add_argument("--max-new-tokens", type=int, default=16)
    p.add_argument("--repeats", type=int, default=15)
    C.add_output_args(p)
    args = p.parse_args(argv)
    import tinygpt
    from tinygpt.export import export_onnx
    from tinygpt.onnx_runtime import OnnxModel
    from tinygpt.processors.build import eval_processor

    cfg = tinygpt.load_config(args.cfg_path, args.options)
    torch.manual_seed(0)
    model = tinygpt.build_model(cfg, "cpu", training=False)
    with torch.no_grad():  # every answer runs to max_new_tokens in both runtimes
        eos, end = model.tokenizer.eos_token, model.style.end_sym
        for token, i in model.tokenizer.get_vocab().items():
            if token == eos or (end and end[0] in token):
                model.llm.lm_head.bias[i] -= 100.0
    directory = tempfile.mkdtemp(prefix="onnx-bench-")
    weights = os.path.join(directory, "weights.safetensors")
    from tinygpt.common.checkpoint import save_weights

    save_weights(dict(model.state_dict()), weights)
    cfg.model.ckpt = [weights]
    export_onnx(cfg, os.path.join(directory, "onnx"))
    onnx = OnnxModel(os.path.join(directory, "onnx"), threads=torch.get_num_threads())
    image = Image.new("RGB", (96, 64), "white")
    ImageDraw.Draw(image).ellipse([8, 8, 40, 40], fill="red")
    question = "[vqa] what colour is the circle?"
    pixels = eval_processor(cfg.model)(image)[None]
    prompt = model.style.place_image(question)

    def run_torch():
        return model.generate(pixels, [prompt], max_new_tokens=args.max_new_tokens, min_new_tokens=args.max_new_tokens)

    def run_onnx():
        return onnx.greedy_ids(image, question, args.max_new_tokens)

    times = {"torch": [], "onnxruntime": []}
    run_torch(), run_onnx()  # warm-up
    for _ in range(args.repeats):
        for name, fn in (("torch", run_torch), ("onnxruntime", run_onnx)):
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    med = {k: statistics.median(v) for k, v in times.items()}
    result = {"machine": C.machine(), "config": args.cfg_path, "max_new_tokens": args.max_new_tokens,
              "repeats": args.repeats, "median_s": {k: round(v, 4) for k, v in med.items()},
              "onnx_speedup": round(med["torch"] / med["onnxruntime"], 2)}
    print(json.dumps(result, indent=2))
    C.write_json(C.result_path(args, "onnx_latency.json"), result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
