"""Quantized Linear kernels side by side on CPU, at TinyGPT-V's shapes (what `model.*.quantize` chose from).

    python -m benchmarks.quant_kernels                      # every arm, every shape, 5 rounds
    python -m benchmarks.quant_kernels --threads 1 --rounds 7
    python -m benchmarks.quant_kernels --record             # also writes benchmarks/results/quant_kernels.json

Shapes: Phi-2 decoding one token (M=1: dense 2560x2560, fc1 2560->10240, fc2 10240->2560), Phi-2's
prefill (M=65: 32 visual + BOS + 32 prompt tokens, fc1) and the ViT-g linears at a 448 px image's
1025 tokens (qkv 1408->4224, fc1 1408->6144, fc2 6144->1408).  Arms, each a maintained kernel:
  bf16           F.linear on bf16 weights (the storage-dtype path; decoding today)
  fp32_upcast    bf16 weights upcast to fp32 a slice at a time (compute_dtype.upcast_linear; prefill today)
  int8_dynamic   torch's dynamic quantized Linear (fbgemm/oneDNN: int8 weights per output channel,
                 activations quantized per call; what `quantize: int8` builds for the LLM, models/quantize.py)
  int8_onednn    oneDNN's int8 matmul (onednn::qlinear_pointwise) on the same int8 values, the input
                 quantized per call (quantize.Int8LinearManyRows: the image side's, on VNNI CPUs)
  int8_wo        torch.ops.aten._weight_int8pack_mm: int8 weights per output channel, bf16 activations
  torchao_int8_wo / torchao_int8_dq   torchao's Int8WeightOnlyConfig / Int8DynamicActivationInt8WeightConfig
  bnb_int8       bitsandbytes Linear8bitLt (LLM.int8(), threshold 6)
  int4_wo        torch.ops.aten._weight_int4pack_mm_for_cpu, groups of 128 (min/max per group)
Each arm cycles through enough copies of its weights to exceed the last-level cache (decoding
streams weights from memory; a single cached matrix would flatter small-M kernels).  Rounds run the
arms in rotated order; the table shows each arm's median ms per call over rounds, its ratio to bf16,
the weight bytes read per ms (GB/s), and its relative error ||y - y_fp32|| / ||y_fp32|| against fp32
weights.  An arm whose package is missing or whose kernel fails is reported as such, not dropped.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings
from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

from tinygpt.models import compute_dtype, quantize

from . import _common as C

# (name, rows M, in K, out N)
SHAPES = (("phi2 dense decode", 1, 2560, 2560), ("phi2 fc1 decode", 1, 2560, 10240),
          ("phi2 fc2 decode", 1, 10240, 2560), ("phi2 fc1 prefill", 65, 2560, 10240),
          ("vit-g qkv 448px", 1025, 1408, 4224), ("vit-g fc1 448px", 1025, 1408, 6144),
          ("vit-g fc2 448px", 1025, 6144, 1408))
STREAM_BYTES = 128 * 2 ** 20  # weight bytes each arm cycles through: 4x a 32 MB L3
INT4_GROUP = 128


def _int8_rows(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    scale = w.abs().amax(1).clamp(min=1e-12) / 127
    return torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8), scale


def _int4_groups(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The packed weight and [K/G, N, 2] (scale, zero) for _weight_int4pack_mm_for_cpu:
    w ~ (q - 8) * scale + zero, q in 0..15, per group of INT4_GROUP input features."""
    n, k = w.shape
    g = w.reshape(n, k // INT4_GROUP, INT4_GROUP)
    low, high = g.amin(-1, keepdim=True), g.amax(-1, keepdim=True)
    scale = (high - low).clamp(min=1e-12) / 15
    q = torch.round((g - low) / scale).clamp(0, 15).to(torch.int32).reshape(n, k)
    zeros = low + 8 * scale
    scales_zeros = torch.stack([scale.squeeze(-1), zeros.squeeze(-1)], -1).transpose(0, 1).contiguous()
    return torch.ops.aten._convert_weight_to_int4pack_for_cpu(q, 1), scales_zeros.bfloat16()


def _plain(w: torch.Tensor, dtype: torch.dtype) -> nn.Linear:
    layer = nn.Linear(w.shape[1], w.shape[0], bias=False, dtype=dtype)
    layer.weight.data.copy_(w)
    return layer


def _torchao(config_name: str) -> Callable[[torch.Tensor], Callable]:
    def make(w):
        import torchao.quantization as ao

        layer = _plain(w, torch.bfloat16)
        ao.quantize_(layer, getattr(ao, config_name)())
        return lambda x: layer(x.bfloat16())
    return make


def _bnb(w):
    import bitsandbytes as bnb

    layer = bnb.nn.Linear8bitLt(w.shape[1], w.shape[0], bias=False, has_fp16_weights=False, threshold=6.0)
    layer.weight = bnb.nn.Int8Params(w.clone(), requires_grad=False, has_fp16_weights=False)
    layer = layer.to("cpu")
    return lambda x: layer(x)


def _int8_wo(w):
    q, scale = _int8_rows(w)
    scale = scale.bfloat16()
    return lambda x: torch.ops.aten._weight_int8pack_mm(x.bfloat16(), q, scale)


def _int4_wo(w):
    packed, scales_zeros = _int4_groups(w)
    return lambda x: torch.ops.aten._weight_int4pack_mm_for_cpu(x.bfloat16(), packed, INT4_GROUP, scales_zeros)


def _bf16(w):
    wb = w.bfloat16()
    return lambda x: F.linear(x.bfloat16(), wb)


def _upcast(w):
    wb = w.bfloat16()
    return lambda x: compute_dtype.upcast_linear(x, wb, None, torch.float32)


def _dynamic(w):
    layer = quantize.int8_linear(_plain(w, torch.float32))
    return lambda x: layer(x)


def _onednn(w):
    layer = quantize.Int8LinearManyRows.from_linear(_plain(w, torch.float32))
    return lambda x: layer(x)


# arm -> (weight builder, weight bytes per element)
ARMS: dict[str, tuple[Callable, float]] = {
    "bf16": (_bf16, 2), "fp32_upcast": (_upcast, 2), "int8_dynamic": (_dynamic, 1), "int8_onednn": (_onednn, 1),
    "int8_wo": (_int8_wo, 1),
    "torchao_int8_wo": (_torchao("Int8WeightOnlyConfig"), 1),
    "torchao_int8_dq": (_torchao("Int8DynamicActivationInt8WeightConfig"), 1),
    "bnb_int8": (_bnb, 1), "int4_wo": (_int4_wo, 0.5),
}


def measure(shape: tuple, arms: list[str], rounds: int, seed: int = 0) -> list[dict]:
    """One shape: each arm's median ms per call over `rounds` rotated rounds, error vs fp32."""
    _, m, k, n = shape
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(m, k, generator=gen)
    weights = [torch.randn(n, k, generator=gen) * k ** -0.5 for _ in range(2)]
    reference = F.linear(x, weights[0])
    built, failed = {}, {}
    for arm in arms:
        make, per_element = ARMS[arm]
        copies = max(1, min(8, round(STREAM_BYTES / (n * k * per_element))))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fns = [make(weights[i % 2]) for i in range(copies)]
                y = fns[0](x).float()
        except Exception as exc:  # a kernel missing for this CPU or package version is a finding
            failed[arm] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
            continue
        built[arm] = (fns, ((y - reference).norm() / reference.norm()).item(), per_element)
    times: dict[str, list[float]] = {arm: [] for arm in built}
    order = list(built)
    for r in range(rounds):
        for arm in order[r % len(order):] + order[:r % len(order)] if order else []:
            fns = built[arm][0]
            calls = len(fns) if m == 1 else 1
            start = time.perf_counter()
            for i in range(calls):
                fns[i % len(fns)](x)
            times[arm].append(1e3 * (time.perf_counter() - start) / calls)
    base = statistics.median(times["bf16"]) if "bf16" in times else None
    rows = []
    for arm in arms:
        if arm in failed:
            rows.append({"shape": shape[0], "arm": arm, "error": failed[arm]})
            continue
        ms = statistics.median(times[arm])
        rows.append({"shape": shape[0], "m": m, "k": k, "n": n, "arm": arm, "ms": ms,
                     "vs_bf16": ms / base if base else None, "weight_gb_s": n * k * built[arm][2] / ms / 1e6,
                     "rel_error": built[arm][1]})
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arms", nargs="+", choices=list(ARMS), default=list(ARMS))
    parser.add_argument("--shapes", nargs="+", type=int, default=None,
                        help=f"indices into the shape list (default all {len(SHAPES)})")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default torch's)")
    parser.add_argument("--record", action="store_true", help="write benchmarks/results/quant_kernels[_Nthread].json")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    info, commit = C.machine(), C.git_commit()
    print(f"{info['cpu']}, {torch.get_num_threads()} thread(s), torch {torch.__version__}, "
          f"quantized engine {torch.backends.quantized.engine}, load {info['loadavg_at_start']}", flush=True)
    rows = []
    for i in args.shapes if args.shapes is not None else range(len(SHAPES)):
        shape = SHAPES[i]
        rows += measure(shape, args.arms, args.rounds)
        print(f"  {shape[0]} done", flush=True)
    print(C.table([r for r in rows if "ms" in r],
                  [("shape", "shape", "s"), ("m", "M", "d"), ("arm", "arm", "s"), ("ms", "ms", ".3f"),
                   ("vs_bf16", "vs bf16", ".2f"), ("weight_gb_s", "weight GB/s", ".1f"),
                   ("rel_error", "rel. error", ".4f")]))
    for row in rows:
        if "error" in row:
            print(f"{row['shape']}: {row['arm']} failed: {row['error']}")
    if args.record:
        slug = f"_{args.threads}thread" if args.threads else ""
        out = C.write_json(C.RESULTS / f"quant_kernels{slug}.json",
                           {"benchmark": "quant_kernels", **commit, "machine": info, "rounds": args.rounds,
                            "threads": torch.get_num_threads(), "engine": torch.backends.quantized.engine,
                            "loadavg_at_end": os.getloadavg(), "rows": rows})
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
