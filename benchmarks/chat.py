"""Chat latency before/after the compute-dtype policy (models/compute_dtype.py), A/B in one process.

    python -m benchmarks.chat                                  # tiny preset, its own dtype (fp32 on CPU)
    python -m benchmarks.chat --dtype bf16                     # tiny preset, bf16 weights
    python -m benchmarks.chat --full-size --batches 1          # TinyGPT-V stage 4, bf16, 448 px: TTFT
    python -m benchmarks.chat --full-size --image-size 224 --batches 4 --rounds 1

One model, random weights, built with `model.compute_dtype: storage` (every matmul in the weights'
dtype: the path before the policy, arm "storage"); arm "auto" applies the device's policy
(`compute_dtype.apply`) and removes it again, so both arms run the same weights.  Rounds alternate
the order ((storage, auto), (auto, storage), ...) and the table shows each arm's median over rounds.
A run is benchmarks/generate.py's `run_one`: one image per prompt, 32 visual tokens + BOS + 32
random prompt tokens, greedy decoding of N new tokens with the KV cache, giving per arm and batch
  TTFT          image encode + prefill + first token (s); encode s: the image encode alone
  ms/token      the median decoding step of the run (all rows advance one token)
  total tok/s   B * N / the whole run: what batched generation delivers, encode included
  decode tok/s  tokens after the first, all rows, per second of decoding
  peak GB       peak RSS during the run (the whole process, weights included)
With --full-size the batch-1 step is also compared with the memory-bandwidth floor (LLM bytes
streamed per token / copy bandwidth measured in this process, as in benchmarks/generate.py).  The
JSON records the commit measured, the CPU, the load average, the policy's probe figures and the
fp32 matmul peak measured in the same process.
On a CPU without bf16 matmul units the storage arm at full size takes minutes per image (bf16
matmuls run at a few GFLOP/s there): use --rounds 1 and a few --batches.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

from tinygpt.common import device as devices
from tinygpt.models import compute_dtype

from . import _common as C
from . import generate

ARMS = ("storage", "auto")
METRICS = ("ttft_s", "encode_s", "median_ms_per_step", "total_tok_s", "decode_tok_s", "peak_mem_gb")


class Arms:
    """Switches one model between its storage-dtype build and the device's compute-dtype policy."""

    def __init__(self, model, device):
        self.model, self.device, self.applied = model, device, None
        self.choices = []

    def use(self, arm: str) -> None:
        if arm == "auto" and self.applied is None:
            self.applied = compute_dtype.apply(self.model, self.device, "auto")
            self.choices = [c.describe() for c in self.applied.choices]
        elif arm == "storage" and self.applied is not None:
            self.applied.remove()
            self.applied = None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full-size", action="store_true", help=f"{generate.FULL_SIZE_CFG}, random weights")
    parser.add_argument("--preset", default="tiny", choices=["tiny", "small"])
    parser.add_argument("--image-size", type=int, default=None, help="default: the preset's; full size 448")
    parser.add_argument("--dtype", choices=list(C.DTYPES), default=None,
                        help="weights' dtype (model.llm.dtype and model.vision.dtype); full size: bf16")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--new-tokens", type=int, default=None, help="default 32 (full size 16)")
    parser.add_argument("--prompt-tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5, help="A/B rounds (full size: 1 is minutes already)")
    parser.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS),
                        help="which arms to run (default both; one arm re-measures it without the other's cost)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default torch's)")
    parser.add_argument("--device", default="auto")
    C.add_output_args(parser)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.full_size:
        args.image_size = args.image_size or 448
        args.dtype = args.dtype or "bf16"
    new_tokens = args.new_tokens or (16 if args.full_size else 32)

    device = C.resolve(args.device)
    info, commit = C.machine(), C.git_commit()  # what is measured: the tree as the run starts
    bandwidth = C.copy_bandwidth(device) if args.full_size else None
    # What this device's fp32 matmuls reach (square 2048, best of ~2 s): the ceiling an fp32 TTFT is
    # bound by.  (Not bf16's: on an AVX2 CPU that one square matmul takes over a minute; the policy's
    # probe figures in the JSON say what bf16 reaches.)
    peaks = {"fp32": C.matmul_peak(device, torch.float32) / 1e9} if args.full_size else {}
    build_args = argparse.Namespace(full_size=args.full_size, cfg_path=None, preset=args.preset,
                                    image_size=args.image_size, dtype=args.dtype, training_build=False,
                                    compute_dtype="storage")
    model, model_cfg, label, build_s = generate.build(build_args, device)
    streamed = C.param_bytes(model.llm) - C.param_bytes(model.llm.get_input_embeddings())
    rss_after_build = C.rss_breakdown() if device.type == "cpu" else None  # VmHWM: the build's own peak
    print(f"{label} at {model_cfg.vision.image_size} px, weights {args.dtype or 'auto'}: built in {build_s:.1f} s, "
          f"{C.param_bytes(model) / 1e9:.2f} GB; device {device}, {info['cpu']}, load {info['loadavg_at_start']}; "
          "matmul peak: " + ", ".join(f"{k} {v:.1f} GFLOP/s" for k, v in peaks.items()), flush=True)

    arms = Arms(model, device)
    t = time.perf_counter()
    arms.use("auto")  # the probe and the conversion happen at build time for a user: not in a run
    apply_s = time.perf_counter() - t
    generate.run_one(model, device, 1, 2, args.prompt_tokens)  # warm-up of the new arm's kernels
    for line in arms.choices:
        print(f"  {line}")

    runs: dict[tuple[str, int], list[dict]] = {}
    for r in range(args.rounds):
        for arm in (args.arms if r % 2 == 0 else args.arms[::-1]):
            arms.use(arm)
            for b in args.batches:
                row = generate.run_one(model, device, b, new_tokens, args.prompt_tokens, seed=r)
                runs.setdefault((arm, b), []).append(row)
                print(f"  round {r} {arm:7s} batch {b}: TTFT {row['ttft_s']:.2f} s (encode {row['encode_s']:.2f}), "
                      f"{row['median_ms_per_step']:.0f} ms/token, {row['total_tok_s']:.2f} tok/s, "
                      f"peak {row['peak_mem_gb']:.2f} GB", flush=True)
    arms.use("storage")

    rows = [{"arm": arm, "batch": b, "runs": len(runs[arm, b]),
             **{k: statistics.median(x[k] for x in runs[arm, b] if x[k] is not None) for k in METRICS}}
            for b in args.batches for arm in args.arms]
    print(C.table(rows, [("batch", "batch", "d"), ("arm", "arm", "s"), ("ttft_s", "TTFT s", ".2f"),
                         ("encode_s", "encode s", ".2f"),
                         ("median_ms_per_step", "ms/token", ".0f"), ("total_tok_s", "total tok/s", ".2f"),
                         ("decode_tok_s", "decode tok/s", ".2f"), ("peak_mem_gb", "peak GB", ".2f")]))
    speedups = {}
    for b in args.batches if len(args.arms) == 2 else []:
        before, after = (next(x for x in rows if x["arm"] == a and x["batch"] == b) for a in ARMS)
        speedups[b] = {"ttft": before["ttft_s"] / after["ttft_s"],
                       "total_tok_s": after["total_tok_s"] / before["total_tok_s"],
                       "decode_tok_s": after["decode_tok_s"] / before["decode_tok_s"]}
        print(f"batch {b}: auto vs storage: TTFT {speedups[b]['ttft']:.2f}x faster, total tok/s "
              f"{speedups[b]['total_tok_s']:.2f}x, decode tok/s {speedups[b]['decode_tok_s']:.2f}x")
    result = {
        "benchmark": "chat", "label": label, **commit, "machine": info,
        "loadavg_at_end": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "device": str(device), "torch": torch.__version__, "weights_dtype": args.dtype or "auto",
        "image_size": model_cfg.vision.image_size, "new_tokens": new_tokens, "prompt_tokens": args.prompt_tokens,
        "rounds": args.rounds, "arms": args.arms, "build_s": build_s, "apply_s": apply_s,
        "weights_gb": C.param_bytes(model) / 1e9, "rss_after_build_bytes": rss_after_build,
        "choices": arms.choices, "policy": _policy(device, model), "matmul_peak_gflop_s": peaks,
        "rows": rows, "speedups": speedups, "runs": {f"{a}_b{b}": v for (a, b), v in runs.items()},
    }
    if bandwidth:
        floor_ms = 1000 * streamed / bandwidth
        result.update(bandwidth_gb_s=bandwidth / 1e9, llm_streamed_gb=streamed / 1e9, decode_floor_ms=floor_ms)
        for row in rows:
            if row["batch"] == 1:
                row["vs_floor"] = row["median_ms_per_step"] / floor_ms
                print(f"{row['arm']}: batch-1 decode {row['median_ms_per_step']:.0f} ms/token = "
                      f"{row['vs_floor']:.2f}x the bandwidth floor ({floor_ms:.0f} ms: {streamed / 1e9:.2f} GB "
                      f"at {bandwidth / 1e9:.1f} GB/s)")
    slug = ("full" if args.full_size else args.preset) + f"_{args.dtype or 'auto'}_{model_cfg.vision.image_size}px"
    slug += "_b" + "-".join(map(str, args.batches)) + (f"_{args.threads}thread" if args.threads else "")
    slug += "" if len(args.arms) == 2 else f"_{args.arms[0]}_only"
    out = C.write_json(C.result_path(args, f"chat_{slug}.json"), result)
    print(f"wrote {out}")
    return 0


def _policy(device, model) -> dict:
    """The policy for the LLM's storage dtype, with the probe figures it was decided from."""
    policy = devices.compute_policy(device, model.llm.lm_head.weight.dtype)
    return {"storage": devices.dtype_name(policy.storage), "upcast_rows": policy.upcast_rows,
            "reason": policy.reason, "probe": policy.probe}


if __name__ == "__main__":
    sys.exit(main())
