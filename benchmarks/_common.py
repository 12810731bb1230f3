"""What every benchmark shares: the machine record, in-run hardware ceilings (memory bandwidth,
matmul peak), model presets, a tokenizer-free build, timers and the JSON writer.

Not an entry point (no `main`): `benchmarks/{generate,train,...}.py` are.
"""
from __future__ import annotations

import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path

import torch

from tinygpt.common import device as devices
from tinygpt.common import jsonfile
from tinygpt.common.config import Config, ModelConfig
from tinygpt.models.phi import write_phi_config

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"  # the project's record (tracked): written only with --record
SCRATCH = ROOT / "output" / "benchmarks"  # where a run writes otherwise (ignored by git)
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
GIB = 1024 ** 3


# ----------------------------------------------------------------------------- machine
def machine() -> dict:
    """Host + device description stored with every result (figures are only comparable within one)."""
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    mem = None
    try:
        with open("/proc/meminfo") as f:
            mem = int(next(line.split()[1] for line in f if line.startswith("MemTotal"))) * 1024
    except (OSError, StopIteration):
        pass
    info = {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "memory_bytes": mem,
        "loadavg_at_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    desc = devices.describe()
    info["devices"] = desc.get("devices")
    return info


def git_commit() -> dict:
    """The commit a benchmark measured, and whether tracked files differed from it."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True).stdout.strip()

    try:
        return {"commit": git("rev-parse", "HEAD") or None, "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}
    except OSError:  # no git here
        return {"commit": None, "dirty": None}


def resolve(device: str) -> torch.device:
    return devices.resolve_device(device)


# ----------------------------------------------------------------------------- ceilings
def copy_bandwidth(device: torch.device, nbytes: int = 1 * GIB, repeats: int = 5) -> float:
    """Sustained memory bandwidth in bytes/s from a large tensor copy (read + write both counted).

    A decode step streams every weight once, so `weight bytes / this` is the memory-bound floor
    for one token at batch 1."""
    n = nbytes // 4
    src = torch.empty(n, dtype=torch.float32, device=device).uniform_()
    dst = torch.empty_like(src)
    dst.copy_(src)  # first touch / page faults outside the timing
    best = float("inf")
    for _ in range(repeats):
        synchronize(device)
        t = time.perf_counter()
        dst.copy_(src)
        synchronize(device)
        best = min(best, time.perf_counter() - t)
    del src, dst
    return 2 * n * 4 / best


def matmul_peak(device: torch.device, dtype: torch.dtype = torch.float32, n: int = 2048, seconds: float = 2.0) -> float:
    """Best achieved FLOP/s of a square [n, n] @ [n, n] matmul: the ceiling MFU is measured against."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b  # warm-up (kernel selection, caches)
    flops = 2 * n ** 3
    best, spent = float("inf"), 0.0
    while spent < seconds:
        synchronize(device)
        t = time.perf_counter()
        a @ b
        synchronize(device)
        dt = time.perf_counter() - t
        best, spent = min(best, dt), spent + dt
    return flops / best


def linear_probe(device: torch.device, dtype: torch.dtype, rows=(1, 2, 8), k: int = 2560, n: int = 10240) -> list[dict]:
    """Time one Phi-2 MLP-sized linear [M, 2560] @ [2560, 10240]^T per M: the effective weight
    streaming rate tells a slow small-M kernel apart from a memory-bound one.  (The 52 MB bf16
    weight may sit in a large L3, so this is an upper bound on what decode can stream.)"""
    w = torch.randn(n, k, device=device, dtype=dtype)
    out = []
    for m in rows:
        x = torch.randn(m, k, device=device, dtype=dtype)
        torch.nn.functional.linear(x, w)
        best = float("inf")
        for _ in range(20):
            synchronize(device)
            t = time.perf_counter()
            torch.nn.functional.linear(x, w)
            synchronize(device)
            best = min(best, time.perf_counter() - t)
        out.append({"m": m, "ms": best * 1e3, "weight_gb_s": w.numel() * w.element_size() / best / 1e9,
                    "gflop_s": 2 * m * k * n / best / 1e9})
    return out


# ----------------------------------------------------------------------------- models
def write_word_tokenizer(directory: Path, n_words: int = 1000) -> Path:
    """A whitespace word-level tokenizer over `w0 .. w{n-1}` (+ Phi-2's special token) so a benchmark
    controls token counts exactly (`"w1 w2 w3"` is 3 tokens) without any downloaded tokenizer."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<|endoftext|>": 0, "<unk>": 1}
    vocab.update({f"w{i}": i + 2 for i in range(n_words)})
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                   unk_token="<unk>", pad_token="<|endoftext|>")
    directory.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(directory)
    return directory


def preset(name: str, workdir: Path) -> ModelConfig:
    """Model presets for benchmarks (random weights):

    tiny  - the test model of tests/tiny.py (every dimension a few dozen; overhead-dominated).
    small - matmul-dominated and ViT-g-proportioned but narrow: a 39-block ViT at a quarter of
            ViT-g's width (352, mlp 1536 = ViT-g's 4.36x ratio), 224 px (257 tokens), a 4-layer
            Q-Former at width 384, 32 queries, and a 6-layer Phi of width 960 (12 heads x 80 as Phi-2, vocab 51200).
            Vision and LLM cost keep roughly TinyGPT-V's ratio, so the frozen-feature cache
            speed-up measured here is indicative of full size.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    tok = workdir / "tokenizer"
    if not (tok / "tokenizer.json").exists():
        write_word_tokenizer(tok)
    cfg = ModelConfig()
    cfg.llm.tokenizer = str(tok)
    if name == "tiny":
        cfg.vision.image_size, cfg.vision.patch_size = 28, 14
        cfg.vision.width, cfg.vision.depth, cfg.vision.heads, cfg.vision.mlp_dim = 32, 2, 2, 64
        cfg.qformer.num_query_tokens, cfg.qformer.width, cfg.qformer.depth = 4, 32, 2
        cfg.qformer.heads, cfg.qformer.mlp_dim = 2, 64
        cfg.proj_mid_dim = 48
        cfg.llm.hf_config = str(write_phi_config(workdir / "phi_tiny.json", 1024, 64, 2, 4))
        cfg.llm.lora.r = 4
    elif name == "small":
        cfg.vision.image_size = 224
        cfg.vision.width, cfg.vision.depth, cfg.vision.heads, cfg.vision.mlp_dim = 352, 39, 4, 1536
        cfg.qformer.width, cfg.qformer.depth, cfg.qformer.heads, cfg.qformer.mlp_dim = 384, 4, 6, 1536
        cfg.proj_mid_dim = 1024
        cfg.llm.hf_config = str(write_phi_config(workdir / "phi_small.json", 51200, 960, 6, 12))
        cfg.llm.lora.r = 16
    else:
        raise ValueError(f"unknown preset {name!r} (tiny, small)")
    cfg.max_txt_len = 160
    return cfg


def with_bench_tokenizer(cfg: Config | ModelConfig, workdir: Path):
    """Point a config whose tokenizer is absent (full size: no Phi-2 download here) at the benchmark
    word tokenizer.  Generation benchmarks feed token ids directly, so only its special ids matter."""
    model_cfg = cfg.model if isinstance(cfg, Config) else cfg
    if not model_cfg.llm.tokenizer or not os.path.exists(model_cfg.llm.tokenizer):
        tok = workdir / "tokenizer"
        if not (tok / "tokenizer.json").exists():
            write_word_tokenizer(tok)
        model_cfg.llm.tokenizer = str(tok)
    for key in ("weights",):
        setattr(model_cfg.vision, key, None)
        setattr(model_cfg.qformer, key, None)
        setattr(model_cfg.llm, key, None)
    model_cfg.ckpt = []
    return cfg


def workdir(name: str) -> Path:
    path = Path(tempfile.gettempdir()) / f"tinygpt_bench_{name}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def rss_breakdown() -> dict | None:
    """Resident bytes of this process by kind (Linux): anon = heap and tensors, file = mapped
    files (torch's shared libraries, ~0.2-0.4 GB once touched).  A CPU peak-RSS figure includes both."""
    out = {}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                key = line.split(":", 1)[0]
                if key in ("VmRSS", "RssAnon", "RssFile", "RssShmem", "VmHWM"):
                    out[key] = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return out or None


def param_bytes(module: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters())


# ----------------------------------------------------------------------------- output
def synchronize(device: torch.device | str) -> None:
    """Wait for the device's queued kernels (before reading a timer); a no-op on CPU."""
    mod = devices.accelerator_module(device)
    if mod is not None:
        mod.synchronize(device)


class Timer:
    """Wall-clock seconds of a block, synchronised with the device at both ends."""

    def __init__(self, device: torch.device):
        self.device = device
        self.seconds = 0.0

    def __enter__(self):
        synchronize(self.device)
        self._t = time.perf_counter()
        return self

    def __exit__(self, *exc):
        synchronize(self.device)
        self.seconds = time.perf_counter() - self._t


def add_output_args(parser) -> None:
    """--out / --record: a benchmark never rewrites the tracked record unless asked to."""
    parser.add_argument("--out", default=None, help="JSON path (default: output/benchmarks/<name>.json)")
    parser.add_argument("--record", action="store_true",
                        help="write into benchmarks/results/ instead (the tracked record the docs quote)")


def result_path(args, name: str) -> Path:
    """Where a run's JSON goes: --out, else benchmarks/results/<name> with --record, else output/benchmarks/."""
    return Path(args.out) if args.out else (RESULTS if args.record else SCRATCH) / name


def write_json(path: str | os.PathLike, payload: dict) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(jsonfile.dumps(payload, indent=2, default=str) + "\n")  # strict: a NaN figure is null
    return path


def table(rows: list[dict], columns: list[tuple[str, str, str]]) -> str:
    """Markdown table; columns = (key, header, format spec)."""
    out = ["| " + " | ".join(h for _, h, _ in columns) + " |",
           "|" + "|".join("---:" for _ in columns) + "|"]
    for row in rows:
        cells = []
        for key, _, spec in columns:
            v = row.get(key)
            cells.append("-" if v is None else format(v, spec))
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)
