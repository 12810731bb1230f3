"""Chat latency before/after the compute-dtype policy (models/compute_dtype.py) and with int8 weights
(models/quantize.py), arms interleaved in one process.

    python -m benchmarks.chat                                  # tiny preset, its own dtype (fp32 on CPU)
    python -m benchmarks.chat --dtype bf16                     # tiny preset, bf16 weights
    python -m benchmarks.chat --full-size --batches 1          # TinyGPT-V stage 4, bf16, 448 px: TTFT
    python -m benchmarks.chat --full-size --image-size 224 --batches 4 --rounds 1
    python -m benchmarks.chat --full-size --batches 1 --arms auto int8 --rounds 2   # int8 vs bf16
    python -m benchmarks.chat --full-size --batches 1 --arms auto int8 --own-process  # + each arm's own peak

One model, random weights, built with `model.compute_dtype: storage` (every matmul in the weights'
dtype: the path before the policy, arm "storage"); arm "auto" applies the device's policy
(`compute_dtype.apply`) and removes it again, so both arms run the same weights; arm "int8" is "auto"
with the LLM's and the vision tower's Linears swapped for int8 ones quantized from those weights
(`model.{llm,vision}.quantize: int8`), swapped back for the other arms.  Rounds alternate the order
((storage, auto), (auto, storage), ...) and the table shows each arm's median over rounds; ratios
are against the first arm named.
With int8 and auto both run, the quality figures: per-position cosine of the prompt's logits, int8
against the exact computation of the same weights (every matmul and activation in fp32; auto
against it as the control, and int8 against auto), and greedy agreement over 32 tokens: the share
of int8's own free-running greedy output that matches auto's, and, fed auto's tokens in one forward
each, the share of steps where the two arms' argmax agree (with a control: auto's one-forward
argmax against its own cached generation).  --own-process then builds each
of auto and int8 as a user's build would (int8: `quantize: int8`, quantized while building) in a
process of its own, one after the other, and reports its peak RSS from start to the end of one turn
(the interleaved process holds both arms' weights, so its peak says nothing about either).
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
import contextlib
import gc
import json
import os
import statistics
import subprocess
import sys
import time

import torch

from tinygpt.common import device as devices
from tinygpt.models import compute_dtype, quantize
from tinygpt.models.llm import embedding_dtype

from . import _common as C
from . import generate

ARMS = ("storage", "auto", "int8")
METRICS = ("ttft_s", "encode_s", "median_ms_per_step", "total_tok_s", "decode_tok_s", "peak_mem_gb")


class Arms:
    """Switches one model between its storage-dtype build, the device's compute-dtype policy, and
    that policy with int8 Linears and input embeddings (built once from the same weights, then swapped
    in and out)."""

    def __init__(self, model, device):
        self.model, self.device, self.applied = model, device, None
        self.choices = []
        self.int8: list | None = None  # [parent, attribute, float layer, int8 layer]
        self.image_dtype: torch.dtype | None = None  # the image side's dtype while the int8 arm holds it in fp32

    def use(self, arm: str) -> None:
        if arm != "storage" and self.applied is None:
            self.applied = compute_dtype.apply(self.model, self.device, "auto")
            self.choices = [c.describe() for c in self.applied.choices]
        elif arm == "storage" and self.applied is not None:
            self._swap(False)
            self.applied.remove()
            self.applied = None
        self._swap(arm == "int8")

    @contextlib.contextmanager
    def exact(self):
        """The same weights with every matmul in fp32 (weights upcast, `model.compute_dtype: fp32`):
        the reference the quality figures are taken against.  Give it fp32 inputs and the
        activations stay fp32 throughout."""
        self.use("storage")
        applied = compute_dtype.apply(self.model, self.device, "fp32")
        try:
            yield
        finally:
            applied.remove()

    def _swap(self, int8: bool) -> None:
        if int8 and self.int8 is None:
            with torch.no_grad():
                self.int8 = [[parent, child, linear, quantize.int8_linear(linear, part)]
                             for part in ("llm", "vision")
                             for parent, child, linear in quantize.int8_targets(self.model, (part,))]
                table = quantize.int8_embedding_target(self.model)  # the input embeddings, as a build makes them
                if table is not None:
                    self.int8.append([*table, quantize.Int8Embedding.from_embedding(table[2])])
                for parent, child, linear, q in self.int8:
                    setattr(parent, child, q)
                # GELU into the int8 fc1s, as a build fuses it: its module then an identity, and back
                self.int8 += [[mlp, child, activation, getattr(mlp, child)]
                              for mlp, child, activation in quantize.fuse_activations(self.model)]
        for parent, child, linear, q in self.int8 or []:
            setattr(parent, child, q if int8 else linear)
        # the image side's float rest as a `quantize: int8` build stores it (fp32), and back (lossless)
        if int8 and self.image_dtype is None:
            self.image_dtype = next(self.model.visual_encoder.parameters()).dtype
            quantize.image_side_to(self.model, torch.float32)
        elif not int8 and self.image_dtype is not None:
            quantize.image_side_to(self.model, self.image_dtype)
            self.image_dtype = None

@torch.no_grad()
def quality(model, arms: Arms, prompt_tokens: int, new_tokens: int = 32, seed: int = 0) -> dict:
    """int8 against the exact computation of the same weights (every matmul and activation in fp32,
    `Arms.exact`) and against auto, on one image + prompt: per-position cosine of the prompt's logits
    (auto's own against exact as the control: on a CPU with bf16 units auto computes in bf16), and
    greedy agreement with auto's tokens fed (teacher-forced) and free-running."""
    g = torch.Generator().manual_seed(seed)
    size = model.cfg.vision.image_size
    images = torch.randn(1, 3, size, size, generator=g)
    ids = torch.randint(2, len(model.tokenizer), (1, prompt_tokens), generator=g)
    bos = torch.zeros(1, 1, dtype=torch.long)
    out = {}
    for arm in ("auto", "int8"):
        arms.use(arm)
        embed = model.llm.get_input_embeddings()
        embeds = torch.cat([embed(bos), model.encode_images(images).to(embedding_dtype(model.llm)), embed(ids)], dim=1)
        mask = torch.ones(embeds.shape[:2], dtype=torch.long)
        greedy = model.llm.generate(inputs_embeds=embeds, attention_mask=mask, do_sample=False, num_beams=1,
                                    min_new_tokens=new_tokens, max_new_tokens=new_tokens, pad_token_id=0, eos_token_id=0)
        out[arm] = {"embeds": embeds, "greedy": greedy[0]}
    reference = out["auto"]["greedy"]
    logits = {}
    for arm in ("auto", "int8"):  # each arm's prompt, then auto's greedy tokens fed
        arms.use(arm)
        embed = model.llm.get_input_embeddings()
        fed = torch.cat([out[arm]["embeds"], embed(reference[None, :-1])], dim=1)
        logits[arm] = model.llm(inputs_embeds=fed).logits[0].float()
    with arms.exact():
        embed = model.llm.get_input_embeddings()
        fed = torch.cat([embed(bos).float(), model.encode_images(images).float(), embed(ids).float(),
                         embed(reference[None, :-1]).float()], dim=1)
        logits["exact"] = model.llm(inputs_embeds=fed).logits[0].float()
    prompt = out["auto"]["embeds"].shape[1]

    def cosine(a: str, b: str) -> torch.Tensor:
        return torch.nn.functional.cosine_similarity(logits[a][:prompt], logits[b][:prompt], dim=-1)

    # Fed the same tokens, one forward each: int8's argmax against auto's at every step.  (auto's own
    # one-forward argmax is not always its cached generation's: random weights give near-ties that bf16
    # rounding in another order flips; that share is reported as the control.)
    forced = {arm: logits[arm][prompt - 1:].argmax(-1) for arm in logits}
    vs_exact, auto_vs_exact, vs_auto = cosine("int8", "exact"), cosine("auto", "exact"), cosine("int8", "auto")
    return {"positions": prompt,
            "min_cosine_vs_exact": vs_exact.min().item(), "median_cosine_vs_exact": vs_exact.median().item(),
            "auto_min_cosine_vs_exact": auto_vs_exact.min().item(),
            "auto_median_cosine_vs_exact": auto_vs_exact.median().item(),
            "min_cosine": vs_auto.min().item(), "median_cosine": vs_auto.median().item(),  # int8 vs auto
            "greedy_agreement_forced": (forced["int8"] == forced["auto"]).float().mean().item(),
            "auto_forced_vs_its_generation": (forced["auto"] == reference).float().mean().item(),
            "greedy_agreement_free": (out["int8"]["greedy"] == reference).float().mean().item(),
            "new_tokens": new_tokens}


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
    parser.add_argument("--arms", nargs="+", choices=ARMS, default=["storage", "auto"],
                        help="which arms to run, in this order (default storage auto; one arm re-measures it "
                             "without the others' cost; ratios are against the first)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default torch's)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--own-process", action="store_true",
                        help="also build each of auto and int8 as a user's build in a process of its own "
                             "(int8: `quantize: int8`) and run one turn: peak RSS of build + turn, per arm")
    parser.add_argument("--one-arm", choices=("auto", "int8"), help=argparse.SUPPRESS)  # --own-process's child
    C.add_output_args(parser)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.full_size:
        args.image_size = args.image_size or 448
        args.dtype = args.dtype or "bf16"
    new_tokens = args.new_tokens or (16 if args.full_size else 32)

    device = C.resolve(args.device)
    if args.one_arm:
        return _one_arm(args, device, new_tokens)
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
    quantize_s = None
    if "int8" in args.arms:  # quantized once, as a `quantize: int8` build does: not in a run
        t = time.perf_counter()
        arms.use("int8")
        quantize_s = time.perf_counter() - t
        generate.run_one(model, device, 1, 2, args.prompt_tokens)
        print(f"  int8: {len(arms.int8)} Linear layers quantized in {quantize_s:.1f} s", flush=True)
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
    quality_row = None
    if {"auto", "int8"} <= set(args.arms):
        quality_row = quality(model, arms, args.prompt_tokens)
        print("per-position logits cosine over {positions} positions, against the exact computation (fp32 "
              "throughout): int8 min {min_cosine_vs_exact:.5f} (median {median_cosine_vs_exact:.5f}), auto min "
              "{auto_min_cosine_vs_exact:.5f} (median {auto_median_cosine_vs_exact:.5f}); int8 vs auto min "
              "{min_cosine:.5f} (median {median_cosine:.5f}); greedy agreement {greedy_agreement_free:.0%} of {new_tokens} tokens free-running, "
              "{greedy_agreement_forced:.0%} fed auto's tokens (control: auto's one-forward argmax agrees with its "
              "own generation on {auto_forced_vs_its_generation:.0%})".format(**quality_row), flush=True)
    arms.use("storage")
    rows = [{"arm": arm, "batch": b, "runs": len(runs[arm, b]),
             **{k: statistics.median(x[k] for x in runs[arm, b] if x[k] is not None) for k in METRICS}}
            for b in args.batches for arm in args.arms]
    print(C.table(rows, [("batch", "batch", "d"), ("arm", "arm", "s"), ("ttft_s", "TTFT s", ".2f"),
                         ("encode_s", "encode s", ".2f"),
                         ("median_ms_per_step", "ms/token", ".0f"), ("total_tok_s", "total tok/s", ".2f"),
                         ("decode_tok_s", "decode tok/s", ".2f"), ("peak_mem_gb", "peak GB", ".2f")]))
    speedups = {}
    for b in args.batches:
        before = next(x for x in rows if x["arm"] == args.arms[0] and x["batch"] == b)
        for arm in args.arms[1:]:
            after = next(x for x in rows if x["arm"] == arm and x["batch"] == b)
            speedups[f"{arm}_vs_{args.arms[0]}_b{b}"] = ratio = {
                "ttft": after["ttft_s"] / before["ttft_s"], "total_tok_s": after["total_tok_s"] / before["total_tok_s"],
                "decode_tok_s": after["decode_tok_s"] / before["decode_tok_s"]}
            print(f"batch {b}: {arm} vs {args.arms[0]}: TTFT {ratio['ttft']:.2f}x, total tok/s "
                  f"{ratio['total_tok_s']:.2f}x, decode tok/s {ratio['decode_tok_s']:.2f}x")
    result = {
        "benchmark": "chat", "label": label, **commit, "machine": info,
        "loadavg_at_end": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "device": str(device), "torch": torch.__version__, "weights_dtype": args.dtype or "auto",
        "image_size": model_cfg.vision.image_size, "new_tokens": new_tokens, "prompt_tokens": args.prompt_tokens,
        "rounds": args.rounds, "arms": args.arms, "build_s": build_s, "apply_s": apply_s, "quantize_s": quantize_s,
        "weights_gb": C.param_bytes(model) / 1e9, "rss_after_build_bytes": rss_after_build,
        "choices": arms.choices, "policy": _policy(device, model), "matmul_peak_gflop_s": peaks,
        "rows": rows, "speedups": speedups, "int8_quality": quality_row, "runs": {f"{a}_b{b}": v for (a, b), v in runs.items()},
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
    slug += f"_{args.arms[0]}_only" if len(args.arms) == 1 else "" if args.arms == ["storage", "auto"] \
        else "_" + "-".join(args.arms)
    if args.own_process:  # after this process's runs, and with its model freed: one build at a time
        del model, arms
        gc.collect()
        result["own_process"] = {}
        for arm in ("auto", "int8"):
            own = result["own_process"][arm] = own_process(argv if argv is not None else sys.argv[1:], arm)
            print(f"{arm} in its own process: built in {own['build_s']:.0f} s, peak RSS {own['peak_rss_gb']:.2f} GB "
                  f"(build + one turn), weights {own['weights_gb']:.2f} GB; TTFT {own['ttft_s']:.2f} s, "
                  f"{own['median_ms_per_step']:.0f} ms/token", flush=True)
        slug += "_own-process"
    out = C.write_json(C.result_path(args, f"chat_{slug}.json"), result)
    print(f"wrote {out}")
    return 0


def _one_arm(args, device, new_tokens: int) -> int:
    """--own-process's child: the build a user gets for `args.one_arm` (auto: the weights' dtype and the
    device's policy; int8: the same config with `quantize: int8`), one warm-up and one batch-1 turn;
    prints one JSON line with the process's peak RSS since it started (VmHWM: build included)."""
    # int8: what a user writes, `quantize: int8` with the dtypes at auto (build.py: bf16 for the LLM's
    # float tensors, fp32 for the image side's)
    build_args = argparse.Namespace(full_size=args.full_size, cfg_path=None, preset=args.preset,
                                    image_size=args.image_size, dtype=None if args.one_arm == "int8" else args.dtype,
                                    training_build=False, compute_dtype="auto",
                                    quantize="int8" if args.one_arm == "int8" else "none")
    model, _, _, build_s = generate.build(build_args, device)
    build_peak = C.rss_breakdown()["VmHWM"]  # read now: each run_one starts a new peak window
    # int8 bytes from the shapes: unpacking every weight (int8_weight) leaves freed copies in the heap
    # that the turn's peak would count (0.25 GB)
    weights = C.param_bytes(model) + sum(m.in_features * m.out_features for m in model.modules()
                                         if isinstance(m, quantize.Int8Linear))
    generate.run_one(model, device, 1, 2, args.prompt_tokens)
    row = generate.run_one(model, device, 1, new_tokens, args.prompt_tokens)
    turn_peak = C.rss_breakdown()["VmHWM"]
    print(json.dumps({**row, "build_s": build_s, "weights_gb": weights / 1e9, "build_peak_rss_gb": build_peak / 1e9,
                      "turn_peak_rss_gb": turn_peak / 1e9, "peak_rss_gb": max(build_peak, turn_peak) / 1e9}))
    return 0


def own_process(argv: list[str], arm: str) -> dict:
    """Run `arm` alone in a child process (`--one-arm`) and return its JSON line."""
    out = subprocess.run([sys.executable, "-m", "benchmarks.chat", *argv, "--one-arm", arm],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _policy(device, model) -> dict:
    """The policy for the LLM's storage dtype, with the probe figures it was decided from."""
    policy = devices.compute_policy(device, model.llm.lm_head.weight.dtype)
    return {"storage": devices.dtype_name(policy.storage), "upcast_rows": policy.upcast_rows,
            "reason": policy.reason, "probe": policy.probe}


if __name__ == "__main__":
    sys.exit(main())
