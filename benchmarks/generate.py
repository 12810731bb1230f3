"""Inference benchmark, MindIE style: batch sweep, one image per prompt, a fixed number of new tokens.

    python -m benchmarks.generate                               # small preset, batch 1 2 4 8, 256 tokens
    python -m benchmarks.generate --preset tiny --new-tokens 32
    python -m benchmarks.generate --cfg-path train_configs/tinygptv_stage4.yaml --image-size 224 ...
    python -m benchmarks.generate --full-size --dtype bf16 --batches 1 2 --new-tokens 16

Random weights (`build_model(..., load_weights=False, training=False)`: the inference build, LoRA
merged, every tensor but the norms in `--dtype`; `--training-build` measures the training-mode
build instead, fp32 Q-Former/projector/LoRA); no tokenizer is needed: prompts are random
token ids and the 32 visual tokens from `model.encode_images` are spliced after BOS, then
`model.llm.generate(inputs_embeds=..., min_new_tokens=N, max_new_tokens=N)` runs greedy decoding
with the KV cache.  A logits processor stamps the time of every decoding step, so one run gives
  ttft          image encode + prefill + first token (s)
  decode tok/s  tokens after the first, all rows, per second of decoding
  total tok/s   B * N / (encode + prefill + decode)
  peak memory   allocator peak on accelerators, peak RSS (whole process, weights included) on CPU
                (`rss_after_build_bytes` in the JSON: the resident size, anon/files, before any generation)
  best ms/step  the fastest single decode step (the least disturbed one on a shared host)
`--threads 1` pins torch to one intra-op thread: slower on a quiet machine, far steadier on a shared one.
`--full-size` also measures copy bandwidth in the same process and reports the batch-1 decode time
against the memory-bandwidth floor (LLM weight bytes streamed per token / bandwidth).
"""
from __future__ import annotations

import argparse
import sys
import time

import torch
from transformers import LogitsProcessor, LogitsProcessorList

from . import _common as C
from . import memory

FULL_SIZE_CFG = "train_configs/tinygptv_stage4.yaml"
EIGHT_GB = 8 * 10 ** 9  # TinyGPT-V's "8G GPU" inference claim


class _Stamps(LogitsProcessor):
    """Records the wall time of every decoding step (called once per step, after the forward)."""

    def __init__(self, device):
        self.device, self.times = device, []

    def __call__(self, input_ids, scores):
        C.synchronize(self.device)
        self.times.append(time.perf_counter())
        return scores


def build(args, device):
    import tinygpt

    work = C.workdir("generate")
    if args.full_size or args.cfg_path:
        cfg = tinygpt.load_config(args.cfg_path or FULL_SIZE_CFG)
        C.with_bench_tokenizer(cfg, work)
        model_cfg = cfg.model
        if args.image_size:
            model_cfg.vision.image_size = args.image_size
        label = args.cfg_path or FULL_SIZE_CFG
    else:
        model_cfg = C.preset(args.preset, work)
        label = f"preset:{args.preset}"
    if args.dtype:
        model_cfg.llm.dtype = model_cfg.vision.dtype = args.dtype
    model_cfg.compute_dtype = args.compute_dtype
    model_cfg.llm.quantize = model_cfg.vision.quantize = getattr(args, "quantize", "none")
    t = time.perf_counter()
    model = tinygpt.build_model(model_cfg, device, load_weights=False, training=args.training_build).eval()
    return model, model_cfg, label, time.perf_counter() - t


@torch.no_grad()
def run_one(model, device, batch: int, new_tokens: int, prompt_tokens: int, seed: int = 0) -> dict:
    from tinygpt.models.llm import embedding_dtype

    g = torch.Generator().manual_seed(seed)
    size = model.cfg.vision.image_size
    images = torch.randn(batch, 3, size, size, generator=g).to(device)
    vocab = len(model.tokenizer)
    ids = torch.randint(2, vocab, (batch, prompt_tokens), generator=g).to(device)
    embed = model.llm.get_input_embeddings()
    bos = torch.zeros(batch, 1, dtype=torch.long, device=device)
    stamps = _Stamps(device)
    memory.reset_peak_memory(device)
    C.synchronize(device)
    t0 = time.perf_counter()
    visual = model.encode_images(images)  # [B, Q, D_llm]
    C.synchronize(device)
    t_visual = time.perf_counter()
    embeds = torch.cat([embed(bos), visual.to(embedding_dtype(model.llm)), embed(ids)], dim=1)
    mask = torch.ones(embeds.shape[:2], dtype=torch.long, device=device)
    out = model.llm.generate(inputs_embeds=embeds, attention_mask=mask, do_sample=False, num_beams=1,
                             min_new_tokens=new_tokens, max_new_tokens=new_tokens, pad_token_id=0,
                             eos_token_id=0, logits_processor=LogitsProcessorList([stamps]))
    C.synchronize(device)
    t_end = time.perf_counter()
    assert out.shape == (batch, new_tokens), out.shape
    ttft = stamps.times[0] - t0
    decode_s = stamps.times[-1] - stamps.times[0]
    steps_ms = sorted(1000 * (b - a) for a, b in zip(stamps.times, stamps.times[1:]))
    return {
        "batch": batch,
        "new_tokens": new_tokens,
        "context_tokens": embeds.shape[1],
        "ttft_s": ttft,
        "encode_s": t_visual - t0,  # of the TTFT: vision tower + Q-Former + projector
        "decode_tok_s": batch * (new_tokens - 1) / decode_s if new_tokens > 1 else None,
        "ms_per_step": 1000 * decode_s / max(new_tokens - 1, 1),
        # On a shared host the fastest step is the least disturbed one: reported beside the mean.
        "best_ms_per_step": steps_ms[0] if steps_ms else None,
        "median_ms_per_step": steps_ms[len(steps_ms) // 2] if steps_ms else None,
        "total_s": t_end - t0,
        "total_tok_s": batch * new_tokens / (t_end - t0),
        "peak_mem_gb": memory.peak_memory_bytes(device) / 1e9,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cfg-path", default=None, help="a stage YAML (weights are not loaded)")
    parser.add_argument("--preset", default="small", choices=["tiny", "small"])
    parser.add_argument("--full-size", action="store_true", help=f"{FULL_SIZE_CFG} at --image-size (default 224)")
    parser.add_argument("--image-size", type=int, default=None)
    parser.add_argument("--dtype", choices=list(C.DTYPES), default=None, help="model.llm.dtype and model.vision.dtype")
    parser.add_argument("--batches", type=int, nargs="+", default=None, help="default 1 2 4 8 (full size: 1 2)")
    parser.add_argument("--new-tokens", type=int, default=None, help="default 256 (full size: 16)")
    parser.add_argument("--prompt-tokens", type=int, default=32, help="text tokens after the image")
    parser.add_argument("--compute-dtype", default="auto", choices=["auto", "storage", "fp32"],
                        help="model.compute_dtype (auto: the device's policy; storage: the weights' dtype)")
    parser.add_argument("--training-build", action="store_true",
                        help="build as for training (fp32 Q-Former/projector/LoRA, LoRA unmerged): the 'before'")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (default: torch's, one per core); 1 resists a shared host")
    parser.add_argument("--device", default="auto")
    C.add_output_args(parser)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.full_size and args.image_size is None:
        args.image_size = 224
    batches = args.batches or ([1, 2] if args.full_size else [1, 2, 4, 8])
    new_tokens = args.new_tokens or (16 if args.full_size else 256)

    device = C.resolve(args.device)
    info = C.machine()
    bandwidth = C.copy_bandwidth(device) if args.full_size else None
    probe = C.linear_probe(device, C.DTYPES[args.dtype or "fp32"]) if args.full_size else None
    model, model_cfg, label, build_s = build(args, device)
    llm_bytes = C.param_bytes(model.llm)
    embed_bytes = C.param_bytes(model.llm.get_input_embeddings())
    streamed = llm_bytes - embed_bytes  # the embedding table is gathered, not streamed, per token
    weights_gb = C.param_bytes(model) / 1e9
    rss_after_build = memory.memory_summary(device).get("rss")
    rss_kinds = C.rss_breakdown() if device.type == "cpu" else None
    print(f"{label}: built in {build_s:.1f} s ({'training' if args.training_build else 'inference'} build), "
          f"weights {weights_gb:.2f} GB (LLM streamed per token {streamed / 1e9:.2f} GB)"
          + (f", RSS {rss_after_build / 1e9:.2f} GB" if rss_after_build else "")
          + (f" (anon {rss_kinds.get('RssAnon', 0) / 1e9:.2f}, files {rss_kinds.get('RssFile', 0) / 1e9:.2f})"
             if rss_kinds else "") + f", device {device}", flush=True)

    t = time.perf_counter()
    for b in (1, max(batches)):  # warm-up: allocator, kernel selection, generate() set-up paths
        run_one(model, device, b, 8, args.prompt_tokens)
    warmup_s = time.perf_counter() - t
    rows = []
    for b in batches:
        rows.append(run_one(model, device, b, new_tokens, args.prompt_tokens))
        print(f"  batch {b}: {rows[-1]['total_tok_s']:.1f} tok/s", flush=True)
    base = rows[0]["total_tok_s"] if rows and rows[0]["batch"] == 1 else None
    for r in rows:
        r["speedup_vs_b1"] = r["total_tok_s"] / base if base else None

    result = {
        "benchmark": "generate", "label": label, "machine": info, "device": str(device),
        "dtype": {"llm": str(model.llm.lm_head.weight.dtype), "vision":
                  str(model.visual_encoder.embeddings.patch_embedding.weight.dtype)},
        "torch": torch.__version__,
        "config": {"vision": vars(model_cfg.vision), "qformer": vars(model_cfg.qformer),
                   "llm_hidden": model.llm.config.hidden_size, "llm_layers": model.llm.config.num_hidden_layers,
                   "lora_r": model_cfg.llm.lora.r, "prompt_tokens": args.prompt_tokens, "new_tokens": new_tokens},
        "build": "training" if args.training_build else "inference",
        "build_s": build_s, "warmup_s": warmup_s, "weights_gb": weights_gb, "llm_streamed_gb": streamed / 1e9,
        "rss_after_build_gb": rss_after_build / 1e9 if rss_after_build else None,
        "rss_after_build_bytes": rss_kinds, "rss_after_run_bytes": C.rss_breakdown() if rss_kinds else None,
        "rows": rows,
    }
    print(C.table(rows, [("batch", "batch", "d"), ("context_tokens", "ctx", "d"), ("ttft_s", "TTFT s", ".3f"),
                         ("decode_tok_s", "decode tok/s", ".1f"), ("ms_per_step", "ms/step", ".1f"),
                         ("best_ms_per_step", "best ms/step", ".1f"),
                         ("total_tok_s", "total tok/s", ".1f"), ("speedup_vs_b1", "x b1", ".2f"),
                         ("peak_mem_gb", "peak GB", ".2f")]))
    if bandwidth:
        b1 = next((r for r in rows if r["batch"] == 1), None)
        floor_ms = 1000 * streamed / bandwidth
        result["bandwidth_gb_s"] = bandwidth / 1e9
        result["linear_probe"] = probe
        print("linear [M,2560]x[2560,10240]: " + ", ".join(
            f"M={p['m']} {p['ms']:.1f} ms ({p['weight_gb_s']:.1f} GB/s)" for p in probe))
        result["decode_floor_ms"] = floor_ms
        if b1:
            result["decode_vs_floor"] = b1["ms_per_step"] / floor_ms
            result["best_step_vs_floor"] = b1["best_ms_per_step"] / floor_ms if b1["best_ms_per_step"] else None
        peak = max(r["peak_mem_gb"] for r in rows)
        result["peak_mem_under_8gb"] = peak * 1e9 < EIGHT_GB
        result["peak_mem_gib"] = peak * 1e9 / C.GIB
        result["peak_mem_under_8gib"] = peak * 1e9 < 8 * C.GIB
        print(f"copy bandwidth {bandwidth / 1e9:.1f} GB/s -> batch-1 floor {floor_ms:.0f} ms/token; "
              f"measured {b1['ms_per_step'] if b1 else float('nan'):.0f} ms/token "
              f"({result.get('decode_vs_floor', float('nan')):.2f}x floor, best step "
              f"{result.get('best_step_vs_floor') or float('nan'):.2f}x); peak {peak:.2f} GB = "
              f"{peak * 1e9 / C.GIB:.2f} GiB vs 8 GB (10^9) / 8 GiB (2^30)")
    slug = "full_" + (args.dtype or "auto") if args.full_size else (args.preset if not args.cfg_path else "cfg")
    slug += ("_trainbuild" if args.training_build else "") + (f"_{args.threads}thread" if args.threads else "")
    out = C.write_json(C.result_path(args, f"generate_{slug}.json"), result)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
