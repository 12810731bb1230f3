"""`python -m tinygpt.doctor [--cfg-path CFG] [--json]`: what this machine can run, and what is missing.

Reports torch / torch_npu / CUDA / CANN versions, the devices found, the device, collective backend
and dtypes tinygpt would use, what an inference model computes in there and why (half-precision
weights upcast to fp32 where half matmuls are slow: the matmul probe's figures, and with a config
each component's choice), whether `quantize: int8` (torch's dynamic quantized Linear) runs here and
how close it is, with a config what it quantizes, whether bitsandbytes can do an 8-bit matmul here, whether `java` runs
(pycocoevalcap's METEOR/SPICE need it), gradio / playwright presence, and with a config the files it
names that do not exist, one line per config entry (how many of its paths are missing, the first
one).  Exit status 0, or 1 when the config cannot run: it does not load, or an entry has none of its
paths (a shard range with some shards missing still runs: the gaps are skipped and counted).
"""
from __future__ import annotations

import argparse
import glob
import importlib
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import warnings
from typing import Any

import torch

from tinygpt.common import device as devices
from tinygpt.common.errors import entry_point


def _version(dist_name: str) -> str | None:
    try:
        return importlib.metadata.version(dist_name)
    except importlib.metadata.PackageNotFoundError:
        return None


# ----------------------------------------------------------------------------- checks
def check_bitsandbytes(device: torch.device | None) -> dict[str, Any]:
    """Import bitsandbytes and run one int8 linear layer against its fp32 reference on `device`."""
    out: dict[str, Any] = {"version": _version("bitsandbytes"), "imports": False, "int8_matmul": None}
    if out["version"] is None:
        out["error"] = "not installed (pip install -e .[quant])"
        return out
    try:
        with warnings.catch_warnings():  # its import-time deprecation chatter is not our finding
            warnings.simplefilter("ignore")
            bnb = importlib.import_module("bitsandbytes")
        out["imports"] = True
        if device is None:
            return out
        torch.manual_seed(0)
        layer = bnb.nn.Linear8bitLt(64, 64, bias=False, has_fp16_weights=False, threshold=6.0)
        reference = layer.weight.data.clone().float()
        layer = layer.to(device)  # quantizes the weight to int8 on the way
        x = torch.randn(4, 64, device=device)
        y = layer(x.to(torch.float16) if device.type != "cpu" else x).float().cpu()
        err = (y - x.cpu() @ reference.T).abs().max().item()
        # int8 row-wise quantization of N(0,1)-ish weights: errors are ~1% of the output scale
        out["int8_matmul"] = err < 0.05 * max(1.0, y.abs().max().item())
        out["max_abs_error"] = round(err, 5)
    except Exception as exc:  # bitsandbytes fails in many ways on unsupported hardware
        out["int8_matmul"] = False
        out["error"] = f"{type(exc).__name__}: {exc}"
    return out


def check_int8(device: torch.device | None, cfg_path: str | None) -> dict[str, Any]:
    """`model.{llm,vision}.quantize: int8` here: the quantized engine, one Int8Linear against its
    fp32 reference (relative error), and with a config which parts it quantizes."""
    from tinygpt.models.quantize import FULL_RANGE_ACTIVATIONS, describe_kernel

    out: dict[str, Any] = {"engine": torch.backends.quantized.engine, "kernel": describe_kernel(),
                           "full_range_activations": FULL_RANGE_ACTIVATIONS, "ok": None, "config": None}
    if cfg_path:
        from tinygpt.common.config import ConfigError, load_config

        try:
            model_cfg = load_config(cfg_path).model
            out["config"] = {"llm": model_cfg.llm.quantize, "vision": model_cfg.vision.quantize}
        except ConfigError:
            pass  # check_config reports it
    if device is None or device.type != "cpu":
        out["error"] = f"CPU only; the device here is {device}"
        return out
    from tinygpt.models.quantize import int8_linear

    try:
        gen = torch.Generator().manual_seed(0)
        layer = torch.nn.Linear(256, 256)
        x = torch.randn(4, 256, generator=gen)
        want = layer(x)
        # the LLM's kernel, and the image side's (the same one where oneDNN's is not used)
        errors = [((int8_linear(layer, part)(x) - want).norm() / want.norm()).item() for part in ("llm", "vision")]
        out.update(ok=max(errors) < 0.05, relative_error=round(max(errors), 4))  # 8-bit weights and inputs: ~1-2%
    except Exception as exc:  # a torch build without fbgemm/oneDNN
        out.update(ok=False, error=f"{type(exc).__name__}: {exc}")
    return out


def check_java() -> dict[str, Any]:
    """`java -version` works? pycocoevalcap runs METEOR and SPICE as Java subprocesses."""
    path = shutil.which("java")
    if path is None:
        return {"ok": False, "path": None, "error": "java not on PATH (apt-get install default-jre-headless)"}
    try:
        proc = subprocess.run([path, "-version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"ok": False, "path": path, "error": str(exc)}
    lines = (proc.stderr or proc.stdout).strip().splitlines()
    return {"ok": proc.returncode == 0, "path": path, "version": lines[0] if lines else ""}


def check_packages() -> dict[str, Any]:
    """Optional serving / UI-test packages, and the system Chromium the browser test drives
    (Playwright never downloads a browser here: scripts/setup.sh --browser installs Debian's)."""
    return {"gradio": _version("gradio"), "playwright": _version("playwright"),
            "playwright_chromium": shutil.which("chromium") is not None}


def _expand(pattern: str) -> list[str]:
    """Local paths a storage entry stands for: brace ranges (webdataset shards) and globs."""
    paths = [pattern]
    if "{" in pattern:
        try:
            from braceexpand import braceexpand

            paths = list(braceexpand(pattern))
        except ImportError:
            pass
    out = []
    for p in paths:
        out += glob.glob(p) if glob.has_magic(p) else [p]
    return out or paths


def config_files(cfg) -> list[dict[str, Any]]:
    """Every local file/directory a config names: [{key, path, exists}], in config order.

    Relative paths are checked against the current directory (where train.py runs).  Remote
    storage (http://, s3://, pipe:...) is listed with exists=None: we cannot check it from here.
    """
    named: list[tuple[str, str | None]] = [
        ("model.vision.weights", cfg.model.vision.weights),
        ("model.qformer.weights", cfg.model.qformer.weights),
        ("model.llm.hf_config", cfg.model.llm.hf_config),
        ("model.llm.weights", cfg.model.llm.weights),
        ("model.llm.tokenizer", cfg.model.llm.tokenizer),
    ]
    named += [(f"model.ckpt[{i}]", p) for i, p in enumerate(cfg.model.ckpt)]
    for name, ds in cfg.datasets.items():
        named += [(f"datasets.{name}.storage[{i}]", p) for i, p in enumerate(ds.storage)]
        named += [(f"datasets.{name}.image_root", ds.image_root),
                  (f"datasets.{name}.prompts_path", ds.prompts_path)]
    rows = []
    for key, value in named:
        if not value:
            continue
        if "://" in value or value.startswith("pipe:"):
            rows.append({"key": key, "path": value, "exists": None})
            continue
        for path in _expand(value):
            rows.append({"key": key, "path": path, "exists": os.path.exists(path)})
    return rows


def check_config(cfg_path: str) -> dict[str, Any]:
    from tinygpt.common.config import ConfigError, load_config

    try:
        cfg = load_config(cfg_path)
    except ConfigError as exc:
        return {"path": cfg_path, "error": str(exc), "files": [], "missing": []}
    rows = config_files(cfg)
    return {"path": cfg_path, "error": None, "device": cfg.run.device, "precision": cfg.run.precision,
            "strategy": cfg.run.distributed_strategy, "files": rows, "missing": missing_by_entry(rows)}


def missing_by_entry(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Missing paths grouped per config entry: [{key, missing, of, first, fatal}], fatal when the
    entry has none of its paths (11,749 missing LAION shards are one line, not 11,749)."""
    groups: dict[str, dict[str, Any]] = {}
    for row in rows:
        group = groups.setdefault(row["key"], {"key": row["key"], "missing": 0, "of": 0, "first": None})
        group["of"] += 1
        if row["exists"] is False:
            group["missing"] += 1
            group["first"] = group["first"] or row["path"]
    out = [g for g in groups.values() if g["missing"]]
    for g in out:
        g["fatal"] = g["missing"] == g["of"]
    return out


def cannot_run(report: dict[str, Any]) -> bool:
    cfg = report["config"]
    return bool(cfg) and (bool(cfg["error"]) or any(g["fatal"] for g in cfg["missing"]))


def check_compute(device: torch.device | None, cfg_path: str | None) -> dict[str, Any] | None:
    """What inference models compute in on `device` (models/compute_dtype.py): the policy for bf16
    weights with the figures it was decided from, and with a config, each component's choice."""
    if device is None:
        return None
    from tinygpt.common.config import ConfigError, load_config
    from tinygpt.models import compute_dtype

    policy = devices.compute_policy(device, torch.bfloat16)
    out: dict[str, Any] = {"device": str(device), "bf16_weights": {
        "upcast_rows": policy.upcast_rows, "reason": policy.reason,
        "probe": {str(rows): figures for rows, figures in (policy.probe or {}).items()}}, "components": None}
    if cfg_path:
        try:
            choices = compute_dtype.plan(load_config(cfg_path).model, device)
        except (ConfigError, devices.DeviceError) as exc:
            out["components_error"] = str(exc)
        else:
            out["components"] = [{"component": c.component, "storage": devices.dtype_name(c.storage),
                                  "rows_per_image": c.rows, "compute": c.compute, "reason": c.reason,
                                  "line": c.describe()} for c in choices]
    return out


def collect(cfg_path: str | None = None) -> dict[str, Any]:
    """The whole report as a JSON-serialisable dict."""
    config = check_config(cfg_path) if cfg_path else None
    requested = (config or {}).get("device") or "auto"
    precision = (config or {}).get("precision") or "auto"
    env = devices.describe(requested, precision)
    chosen = torch.device(env["device"]) if env["device"] else None
    return {"environment": env, "compute": check_compute(chosen, cfg_path), "int8": check_int8(chosen, cfg_path),
            "bitsandbytes": check_bitsandbytes(chosen), "java": check_java(),
            "packages": check_packages(), "config": config}


# ----------------------------------------------------------------------------- output
def _mark(ok: bool | None) -> str:
    return {True: "ok", False: "NO", None: "--"}[ok]


def format_report(report: dict[str, Any]) -> str:
    env, lines = report["environment"], []
    lines.append(f"python {env['python']}  torch {env['torch']}  on {env['platform']}")
    lines.append(f"torch_npu: {env['torch_npu_version'] or '-'}  ({env['npu_status']})")
    lines.append(f"CUDA runtime (torch build): {env['cuda_runtime'] or '-'}   CANN: {env['cann_version'] or '-'}")
    for key, value in env["env"].items():
        lines.append(f"  env {key}={value}")
    lines.append(f"devices: {len(env['devices'])} accelerator(s), {env['cpu_count']} CPU(s)")
    for d in env["devices"]:
        extra = f" capability {d['capability']}" if "capability" in d else ""
        lines.append(f"  {d['type']}:{d['index']} {d['name']}{extra} bf16={d['bf16']}")
    if env["error"]:
        lines.append(f"would use: NOTHING -- {env['error']}")
    else:
        lines.append(f"would use: device {env['device']}, backend {env['backend']}, "
                     f"autocast {env['autocast_dtype']}, frozen towers {env['frozen_dtype']}")
    lines += _compute_lines(report["compute"])
    int8 = report["int8"]
    asked = ", ".join(f"{part} {choice}" for part, choice in (int8["config"] or {}).items())
    lines.append(f"[{_mark(int8['ok'])}] quantize: int8 ({int8['kernel']})"
                 + (f": relative error {int8['relative_error']}" if "relative_error" in int8 else "")
                 + (f" ({int8['error']})" if int8.get("error") else "") + (f"; config: {asked}" if asked else ""))
    bnb = report["bitsandbytes"]
    lines.append(f"[{_mark(bool(bnb['imports']))}] bitsandbytes {bnb['version'] or '-'}; int8 matmul here: "
                 f"{_mark(bnb['int8_matmul'])}" + (f" ({bnb['error']})" if bnb.get("error") else ""))
    java = report["java"]
    lines.append(f"[{_mark(java['ok'])}] java: {java.get('version') or java.get('error')}")
    pk = report["packages"]
    lines.append(f"[{_mark(pk['gradio'] is not None)}] gradio {pk['gradio'] or 'not installed'}")
    lines.append(f"[{_mark(pk['playwright'] is not None)}] playwright {pk['playwright'] or 'not installed'}"
                 f" (chromium installed: {pk['playwright_chromium']})")
    cfg = report["config"]
    if cfg:
        if cfg["error"]:
            lines.append(f"config {cfg['path']}: ERROR {cfg['error']}")
        else:
            missing = sum(g["missing"] for g in cfg["missing"])
            lines.append(f"config {cfg['path']}: {len(cfg['files'])} path(s) named, {missing} missing")
            for g in cfg["missing"]:
                count = f"{g['missing']} of {g['of']} missing, e.g." if g["of"] > 1 else "missing:"
                lines.append(f"  {'MISSING' if g['fatal'] else 'some missing'} {g['key']}: {count} {g['first']}")
            if cannot_run(report):
                lines.append(f"config {cfg['path']} cannot run as it is: an entry above has none of its files")
    return "\n".join(lines)


def _compute_lines(compute: dict[str, Any] | None) -> list[str]:
    if compute is None:
        return []
    bf16 = compute["bf16_weights"]
    rule = ("every matmul in bf16" if bf16["upcast_rows"] is None
            else f"fp32 (weights upcast on the fly) from {bf16['upcast_rows']} rows, bf16 below")
    lines = [f"compute dtype on {compute['device']}, bf16 weights: {rule}", f"  why: {bf16['reason']}"]
    if bf16["probe"]:
        lines.append("  probe, one [rows, 1024] x [1024, 1024] linear, bf16 / fp32 with upcast: " + ", ".join(
            f"{rows} rows {f['native_ms']:.2f} / {f['upcast_ms']:.2f} ms" for rows, f in bf16["probe"].items()))
    if compute.get("components_error"):
        lines.append(f"  per component: cannot tell ({compute['components_error']})")
    for row in compute["components"] or []:
        lines.append(f"  {row['line']}")
    return lines


@entry_point("python -m tinygpt.doctor")
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tinygpt.doctor", description=__doc__.splitlines()[0])
    parser.add_argument("--cfg-path", help="a train/eval YAML whose named files to check")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    report = collect(args.cfg_path)
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 1 if cannot_run(report) else 0


if __name__ == "__main__":
    sys.exit(main())
