"""Training-step benchmark: samples/s, tokens/s, a step-time breakdown, peak memory and model FLOPs
utilisation against this machine's matmul peak (measured in the same run).

    python -m benchmarks.train --preset tiny
    python -m benchmarks.train --preset small                 # matmul-dominated, ViT-g-proportioned
    python -m benchmarks.train --preset small --feature-cache # + the frozen-feature cache, before/after
    python -m benchmarks.train --preset small --pack --answer-tokens 4:96   # + run.pack_length, before/after
    python -m benchmarks.train --preset small --feature-cache --pack --answer-tokens 4:96   # both, and together
    python -m benchmarks.train --preset small --compile       # + run.compile (torch.compile'd LLM), before/after

One step is what `IterRunner._train_step` does with accum_grad_iters=1, split into timed phases:
  data      training image transform (`blip2_image_train`, PIL -> tensor; decoding excluded) + text
  vision    ViT + ln_vision + Q-Former (frozen: no grad), or the feature cache lookup
  llm_fwd   projector + prompt assembly + Phi forward + loss
  llm_bwd   backward (LoRA, norms, projector)
  optim     gradient scaling, clipping, fused AdamW step, zero_grad
FLOPs are counted by `torch.utils.flop_counter.FlopCounterMode` on one extra step (matmuls and
attention actually executed, forward and backward); MFU = FLOPs / step time / matmul peak, where the
peak is the best [2048 x 2048] @ [2048 x 2048] matmul in the run's compute dtype.
Extra arms (`--feature-cache`, `--pack`, both: `cached+packed`; `--compile`) alternate step by step
with the plain one, so that load from other processes hits every arm alike; each arm draws from its
own copy of one seeded batch stream.  The cached arms' first pass fills the cache and the compiled arm's first steps compile:
reported apart as `cold_step_s`.  Packing only pays when lengths differ: `--answer-tokens A:B` draws
each answer's length uniformly from A..B tokens (a fixed `N` gives equal lengths, where it cannot
help); `--pack-length` defaults to the longest possible sample, so no packed row is wider than the
padded batch.  Besides wall time, each step's process CPU time is recorded (`cpu_step_s`): on a
shared host it is the steadier figure.
"""
from __future__ import annotations

import argparse
import random
import shutil
import statistics
import sys
import time

import torch
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode

from tinygpt.common import device as devices
from tinygpt.common.config import Config, RunConfig
from tinygpt.common.optim import build_optimizer
from tinygpt.conversation.protocol import Dialogue, place_image
from tinygpt.processors.image import Blip2ImageTrainProcessor
from tinygpt.tasks.image_text import ImageTextTask

from . import _common as C
from . import memory

PHASES = ("data", "vision", "llm_fwd", "llm_bwd", "optim")


class Batches:
    """A fixed pool of source images (so a cache can hit from the second pass on) and word answers
    of `answer_tokens` = (low, high) tokens, drawn per sample (the benchmark tokenizer is one token
    per word)."""

    def __init__(self, image_size: int, batch: int, pool: int, answer_tokens: tuple[int, int], seed=0):
        rng = random.Random(seed)
        self.images = [Image.frombytes("RGB", (256, 256), bytes(rng.getrandbits(8) for _ in range(256 * 256 * 3)))
                       for _ in range(pool)]
        # TinyGPT-V's training transform: a whole-image resize, so an image seen again hits the cache.
        self.transform = Blip2ImageTrainProcessor(image_size)
        self.batch, self.answer_tokens, self.rng, self.i = batch, answer_tokens, rng, 0

    def __next__(self) -> dict:
        picks = [self.images[(self.i + k) % len(self.images)] for k in range(self.batch)]
        self.i += self.batch
        images = torch.stack([self.transform(im, self.rng) for im in picks])
        words = lambda n: " ".join(f"w{self.rng.randrange(1000)}" for _ in range(n))  # noqa: E731
        lengths = [self.rng.randint(*self.answer_tokens) for _ in picks]
        return {"image": images, "instruction_input": [place_image(words(16)) for _ in picks],
                "answer": [words(n - 1) for n in lengths]}  # + end marker token(s)


def one_step(model, optimizer, batches, device, amp_dtype, grad_clip: float, cache=None,
             pack_length: int = 0) -> tuple[dict, dict]:
    """One optimizer step, timed per phase (the task's loss: tasks/image_text.py); returns
    (seconds per phase, counts).  `cache`: a FeatureCache standing in for the frozen towers;
    `pack_length`: run.pack_length."""
    task = ImageTextTask(Config(model=model.cfg))
    times = {}
    cpu = time.process_time()
    with C.Timer(device) as t:
        samples = {k: v.to(device) if torch.is_tensor(v) else v for k, v in next(batches).items()}
    times["data"] = t.seconds
    with C.Timer(device) as t, devices.autocast(device, amp_dtype), torch.no_grad():
        if cache is not None:
            feats = cache(samples["image"], model.query_features)
        else:
            feats = model.query_features(samples["image"])
    times["vision"] = t.seconds
    text = {"query_features": feats, "instruction_input": samples["instruction_input"], "answer": samples["answer"]}
    with C.Timer(device) as t, devices.autocast(device, amp_dtype):
        loss = task.reduce(model(text, pack_length=pack_length))
    times["llm_fwd"] = t.seconds
    with C.Timer(device) as t:
        loss.total.backward()
    times["llm_bwd"] = t.seconds
    with C.Timer(device) as t:
        params = [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        torch._foreach_mul_([p.grad for p in params], 1.0 / loss.units.clamp(min=1).float())
        if grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    times["optim"] = t.seconds
    return times, {"samples": len(samples["answer"]), "answer_tokens": int(loss.answer_tokens),
                   "loss": float(loss.total.detach() / loss.units.clamp(min=1)), "cpu_s": time.process_time() - cpu}


def count_flops(model, batches, device, amp_dtype, pack_length: int = 0) -> dict:
    """FLOPs of one step (vision forward, LLM forward + backward), by phase."""
    samples = {k: v.to(device) if torch.is_tensor(v) else v for k, v in next(batches).items()}
    with FlopCounterMode(display=False) as vis, devices.autocast(device, amp_dtype), torch.no_grad():
        feats = model.query_features(samples["image"])
    with FlopCounterMode(display=False) as llm:
        with devices.autocast(device, amp_dtype):
            out = model({"query_features": feats, "instruction_input": samples["instruction_input"],
                         "answer": samples["answer"]}, pack_length=pack_length)
            summed = out["answer_nll"].sum()
        summed.backward()
    model.zero_grad(set_to_none=True)
    return {"vision": vis.get_total_flops(), "llm": llm.get_total_flops()}


def arm_names(args) -> list[str]:
    """The plain arm first, then one per option, and cache + packing together when both are asked."""
    return (["uncached"] + (["cached"] if args.feature_cache else []) + (["packed"] if args.pack else [])
            + (["cached+packed"] if args.feature_cache and args.pack else []) + (["compiled"] if args.compile else []))


def measure(model, device, args, amp_dtype, cache_dir=None) -> dict:
    """The arms interleaved step by step (uncached, cached, packed, ..., uncached, ...) so that load
    from other processes on a shared host hits all alike; each arm has its own optimizer and the
    same images and texts."""
    from tinygpt.tasks import feature_cache
    from tinygpt.runners.iter_runner import compile_llm

    model.train()
    run = RunConfig(init_lr=1e-4)
    names = arm_names(args)
    compiled = None
    if args.compile:
        # What run.compile does (nn.Module.compile, in place); the compiled call is switched per arm
        # through the attribute nn.Module.__call__ dispatches on.
        compile_llm(model)
        compiled, model.llm._compiled_call_impl = model.llm._compiled_call_impl, None
    arms = {}
    for name in names:
        arms[name] = {
            "batches": Batches(model.cfg.vision.image_size, args.batch, args.batch * 2, args.answer_tokens),
            "optimizer": build_optimizer(model, run),
            "cache": feature_cache.FeatureCache(model, cache_dir / name) if name.startswith("cached") else None,
            "pack_length": args.pack_length if name.endswith("packed") else 0,
            "steps": [], "cold": [],
        }

    def step(arm):
        model.llm._compiled_call_impl = compiled if arm is arms.get("compiled") else None
        try:
            return one_step(model, arm["optimizer"], arm["batches"], device, amp_dtype, run.grad_clip, arm["cache"],
                            arm["pack_length"])
        finally:
            model.llm._compiled_call_impl = None

    # Warm-up; the cached arm's first pass over its pool fills the cache, the compiled arm compiles.
    for name, arm in arms.items():
        for _ in range(2 if arm["cache"] is not None or name == "compiled" else 1):
            arm["cold"].append(sum(step(arm)[0].values()))
    memory.reset_peak_memory(device)
    for _ in range(args.steps):
        for arm in arms.values():
            arm["steps"].append(step(arm))
    peak = memory.peak_memory_bytes(device)
    results = {}
    for name, arm in arms.items():
        steps = arm["steps"]
        phase = {p: statistics.median(s[0][p] for s in steps) for p in PHASES}
        step_s = statistics.median(sum(s[0].values()) for s in steps)
        counts = steps[-1][1]
        cpu_s = statistics.median(s[1]["cpu_s"] for s in steps)
        out = {"step_s": step_s, "cpu_step_s": cpu_s, "phases_s": phase, "samples_per_s": args.batch / step_s,
               "samples_per_cpu_s": args.batch / cpu_s,
               "answer_tokens_per_s": counts["answer_tokens"] / step_s, "peak_mem_gb": peak / 1e9,
               "loss_last": counts["loss"], "all_step_s": [sum(s[0].values()) for s in steps]}
        if name != "uncached":
            out["cold_step_s"] = arm["cold"]
        if arm["cache"] is not None:
            out["cache"] = {"hits": arm["cache"].hits, "misses": arm["cache"].misses}
        results[name] = out
    return results


def answer_range(text: str) -> tuple[int, int]:
    """`N` or `A:B` (answer tokens, end marker included) -> (low, high)."""
    low, _, high = text.partition(":")
    low, high = int(low), int(high or low)
    if not 2 <= low <= high:
        raise argparse.ArgumentTypeError(f"need 2 <= A <= B answer tokens, got {text!r}")
    return low, high


def longest_sample(model, answer_tokens: int) -> int:
    """Tokens of the longest sample `Batches` can draw (the padded batch's widest row)."""
    probe = Batches(model.cfg.vision.image_size, 1, 1, (answer_tokens, answer_tokens))
    samples = next(probe)
    dialogue = Dialogue.single(samples["instruction_input"][0], samples["answer"][0])
    return len(model.layouts([dialogue], model.n_visual_tokens)[0][0])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="small", choices=["tiny", "small"])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=4, help="timed steps (median reported)")
    parser.add_argument("--answer-tokens", type=answer_range, default=(48, 48),
                        help="tokens per answer: N, or A:B drawn uniformly per sample")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"], help="autocast dtype")
    parser.add_argument("--feature-cache", action="store_true", help="also measure with the frozen-feature cache")
    parser.add_argument("--pack", action="store_true", help="also measure with sequence packing (run.pack_length)")
    parser.add_argument("--pack-length", type=int, default=None,
                        help="run.pack_length of the packed arms (default: the longest possible sample)")
    parser.add_argument("--compile", action="store_true", help="also measure with run.compile (torch.compile'd LLM)")
    parser.add_argument("--device", default="auto")
    C.add_output_args(parser)
    args = parser.parse_args(argv)

    import tinygpt

    device = C.resolve(args.device)
    amp_dtype = devices.autocast_dtype(device, args.precision)
    info = C.machine()
    peak = C.matmul_peak(device, amp_dtype or torch.float32)
    work = C.workdir("train")
    model_cfg = C.preset(args.preset, work)
    torch.manual_seed(0)
    t = time.perf_counter()
    model = tinygpt.build_model(model_cfg, device, load_weights=False)
    build_s = time.perf_counter() - t
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    print(f"preset {args.preset}: {total / 1e6:.1f}M params ({trainable / 1e6:.2f}M trainable), built in "
          f"{build_s:.1f} s; matmul peak {peak / 1e9:.0f} GFLOP/s ({args.precision})", flush=True)
    if args.pack and args.pack_length is None:
        args.pack_length = longest_sample(model, args.answer_tokens[1])

    def flops_of(pack_length):
        probe = Batches(model_cfg.vision.image_size, args.batch, args.batch, args.answer_tokens)
        return count_flops(model, probe, device, amp_dtype, pack_length)

    flops = {0: flops_of(0), **({args.pack_length: flops_of(args.pack_length)} if args.pack else {})}
    cache_dir = None
    if args.feature_cache:
        cache_dir = work / "feature_cache"
        shutil.rmtree(cache_dir, ignore_errors=True)  # start cold: the first pass is the miss cost
    arms = measure(model, device, args, amp_dtype, cache_dir)

    rows = []
    for name, r in arms.items():
        arm_flops = flops[args.pack_length if name.endswith("packed") else 0]
        f = arm_flops["llm"] + (0 if name.startswith("cached") else arm_flops["vision"])  # a hit runs no tower
        r["flops_per_step"] = f
        r["mfu"] = f / r["step_s"] / peak
        # On a shared host the fastest step is the least disturbed one: report it beside the median.
        r["best_step_s"] = min(r["all_step_s"])
        r["mfu_best_step"] = f / r["best_step_s"] / peak
        r["vision_mfu"] = (arm_flops["vision"] / r["phases_s"]["vision"] / peak) if name == "uncached" else None
        r["llm_mfu"] = arm_flops["llm"] / (r["phases_s"]["llm_fwd"] + r["phases_s"]["llm_bwd"]) / peak
        if name != "uncached":
            r["speedup_vs_uncached"] = arms["uncached"]["step_s"] / r["step_s"]
            r["speedup_best_step"] = arms["uncached"]["best_step_s"] / r["best_step_s"]
            r["speedup_cpu"] = arms["uncached"]["cpu_step_s"] / r["cpu_step_s"]
        rows.append({"arm": name, **{k: v for k, v in r.items() if not isinstance(v, (dict, list))},
                     **{f"{p}_s": r["phases_s"][p] for p in PHASES}})

    print(C.table(rows, [
        ("arm", "arm", "s"), ("step_s", "step s", ".3f"), ("cpu_step_s", "CPU s", ".3f"),
        ("samples_per_s", "samples/s", ".2f"), ("speedup_vs_uncached", "x plain", ".2f"),
        ("speedup_cpu", "x plain (CPU s)", ".2f"),
        ("answer_tokens_per_s", "answer tok/s", ".1f"), *[(f"{p}_s", f"{p} s", ".3f") for p in PHASES],
        ("mfu", "MFU", ".1%"), ("mfu_best_step", "MFU best", ".1%"), ("vision_mfu", "vision MFU", ".1%"), ("llm_mfu", "LLM MFU", ".1%"),
        ("peak_mem_gb", "peak GB", ".2f")]))
    if "compiled" in arms:
        llm = {n: arms[n]["phases_s"]["llm_fwd"] + arms[n]["phases_s"]["llm_bwd"] for n in ("uncached", "compiled")}
        arms["compiled"]["llm_phases_speedup"] = llm["uncached"] / llm["compiled"]  # the part compile touches
        print(f"run.compile: LLM fwd+bwd {llm['uncached']:.2f} -> {llm['compiled']:.2f} s "
              f"({arms['compiled']['llm_phases_speedup']:.2f}x); whole step "
              f"{arms['compiled']['speedup_vs_uncached']:.2f}x per step median, "
              f"{arms['compiled']['speedup_best_step']:.2f}x best step "
              f"(first steps, compilation included: {', '.join(f'{s:.1f}' for s in arms['compiled']['cold_step_s'])} s)")
    for name in ("cached", "packed", "cached+packed"):
        if name in arms:
            r = arms[name]
            print(f"{name}: {r['speedup_vs_uncached']:.2f}x per step median (wall), {r['speedup_cpu']:.2f}x in "
                  f"CPU time, {r['speedup_best_step']:.2f}x best step"
                  + (f" (cold steps {', '.join(f'{s:.2f}' for s in r['cold_step_s'])} s)" if name.startswith("cached")
                     else f" (run.pack_length {args.pack_length})"))

    result = {
        "benchmark": "train", "preset": args.preset, "machine": info, "device": str(device),
        "dtype": args.precision, "torch": torch.__version__,
        "config": {"vision": vars(model_cfg.vision), "qformer": vars(model_cfg.qformer),
                   "llm_hidden": model.llm.config.hidden_size, "llm_layers": model.llm.config.num_hidden_layers,
                   "llm_vocab": model.llm.config.vocab_size, "lora_r": model_cfg.llm.lora.r,
                   "batch": args.batch, "answer_tokens": list(args.answer_tokens), "steps": args.steps,
                   "pack_length": args.pack_length if args.pack else 0},
        "params": total, "trainable": trainable, "matmul_peak_flops": peak, "flops": flops, "arms": arms,
    }
    suffix = ("_cache" if args.feature_cache else "") + ("_pack" if args.pack else "") + ("_compile" if args.compile else "")
    out = C.write_json(C.result_path(args, f"train_{args.preset}_{args.precision}{suffix}.json"), result)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
