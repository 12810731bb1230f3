"""The accelerator check (`scripts/accelerator_check.sh [--device cpu|cuda|npu]`): one command that says
whether tinygpt's one code path works on this device, in a few minutes.

    bash scripts/accelerator_check.sh --device cuda            # or npu; cpu: what CI runs
    python -m benchmarks.accelerator_check --device cpu --steps 40 --no-tests --out /tmp/acc.json

Steps, each recorded in the JSON (`--out`, default benchmarks/results/accelerator_<device>.json,
with a markdown table beside it as .md):
  1. doctor     `python -m tinygpt.doctor --json`: versions, devices, dtypes tinygpt picks
  2. tests      pytest on the tests that exercise the device path (DEVICE_TESTS; --no-tests skips)
  3. training   the tiny recipe's stage 1 (train_configs/tiny/stage1.yaml: every part trains) for
                --steps optimizer steps on a generated corpus, twice from the same seed and data:
                on the device under its autocast (`--precision auto`: bf16 on 910B-class NPUs and
                GPUs of compute capability >= 8, fp16 + GradScaler on older chips, none on a CPU,
                where bf16 autocast steps run minutes on a shared 2-core host) and on the CPU in fp32.  Passes when the mean loss
                over the last quarter of logged steps agrees within LOSS_TOLERANCE (relative) and no
                logged step differs by more than twice that: bf16 rounds every matmul input to 8
                mantissa bits, which moves a tiny model's loss by a few per cent, not its course
  4. inference  the fp32 run's checkpoint built for inference twice, on the CPU in fp32 and on the
                device with bf16 weights, on the caption prompt of EVAL_IMAGES images with the CPU's
                greedy caption fed to both: per-position logits cosine (>= COSINE_MIN) and greedy
                agreement, the share of caption tokens the device would pick too (>= GREEDY_MIN).
                (Free-running captions are not compared: one near-tie early changes the rest.)
  5. throughput training samples/s of both runs (median logged window) and batched generation on
                the device (batch 8, 16 new tokens: benchmarks/generate.py's run_one)
Exit status 0 when every step passes, 1 otherwise (the report says which).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

import tinygpt
from tinygpt import training
from tinygpt.common import device as devices
from tinygpt.datasets.synthetic import generate as synthetic

from . import _common as C
from . import generate as gen_bench

STAGE = C.ROOT / "train_configs/tiny/stage1.yaml"
DEVICE_TESTS = ("tests/common/test_device.py", "tests/common/test_doctor.py", "tests/common/test_no_device_names.py",
                "tests/models/test_half_precision.py", "tests/models/test_compute_dtype.py",
                "tests/models/test_inference_mode.py")
LOSS_TOLERANCE = 0.05
COSINE_MIN = 0.99
GREEDY_MIN = 0.9
GREEDY_TOKENS = 16
EVAL_IMAGES = 8


def run_doctor() -> dict:
    proc = subprocess.run([sys.executable, "-m", "tinygpt.doctor", "--json"], capture_output=True, text=True,
                          cwd=C.ROOT)
    return json.loads(proc.stdout) if proc.returncode == 0 else {"error": proc.stderr.strip().splitlines()[-1:]}


def run_tests(tests: list[str]) -> dict:
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests],
                          capture_output=True, text=True, cwd=C.ROOT)
    lines = proc.stdout.strip().splitlines()
    return {"tests": tests, "ok": proc.returncode == 0, "summary": lines[-1] if lines else proc.stderr[-300:],
            "seconds": time.perf_counter() - t}


def train(corpus: Path, out: Path, device: str, precision: str, steps: int) -> dict:
    """Stage 1 of the tiny recipe for `steps` steps; its logged losses and throughput."""
    options = [f"model.llm.tokenizer={corpus / 'tokenizer'}", f"datasets.laion.storage=[{corpus / 'train'}]",
               f"run.device={device}", f"run.precision={precision}", f"run.output_dir={out}",
               f"run.iters_per_epoch={steps}", "run.max_epoch=1", f"run.warmup_steps={max(1, steps // 10)}",
               f"run.log_every={max(1, steps // 20)}", "run.num_workers=0", "model.feature_cache=null"]
    t = time.perf_counter()
    training.main(["--cfg-path", str(STAGE), "--options", *options])
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return {"device": device, "precision": precision, "steps": steps, "wall_s": time.perf_counter() - t,
            "loss": [(r["step"], r["loss"]) for r in rows],
            "samples_per_s": statistics.median(r["samples_per_s"] for r in rows),
            "checkpoint": str(out / "checkpoint_final.safetensors")}


def compare_losses(accel: dict, cpu: dict) -> dict:
    a, c = [loss for _, loss in accel["loss"]], [loss for _, loss in cpu["loss"]]
    tail = max(1, len(c) // 4)
    end_a, end_c = statistics.mean(a[-tail:]), statistics.mean(c[-tail:])
    worst = max(abs(x - y) / abs(y) for x, y in zip(a, c))
    end = abs(end_a - end_c) / abs(end_c)
    return {"final_mean_device": end_a, "final_mean_cpu": end_c, "final_relative_diff": end,
            "worst_step_relative_diff": worst, "tolerance": LOSS_TOLERANCE,
            "ok": end <= LOSS_TOLERANCE and worst <= 2 * LOSS_TOLERANCE}


def inference_model(checkpoint: str, corpus: Path, device, dtype: str):
    cfg = tinygpt.load_config(STAGE, [f"model.llm.tokenizer={corpus / 'tokenizer'}", f"model.ckpt=[{checkpoint}]",
                                      f"model.llm.dtype={dtype}", f"model.vision.dtype={dtype}"])
    return tinygpt.build_model(cfg, device, training=False)


@torch.no_grad()
def compare_inference(checkpoint: str, corpus: Path, device: torch.device) -> tuple[dict, object]:
    """CPU fp32 against the device in bf16 on the caption prompt: the CPU's greedy continuation
    (GREEDY_TOKENS) is fed to both; per-position logits cosine over prompt and continuation, and
    the share of continuation positions where the device's argmax is the CPU's token."""
    reference = inference_model(checkpoint, corpus, "cpu", "fp32")
    model = inference_model(checkpoint, corpus, device, "bf16")
    size = reference.cfg.vision.image_size
    images = torch.rand(EVAL_IMAGES, 3, size, size, generator=torch.Generator().manual_seed(0)) * 2 - 1
    prompts = ["<Img><ImageHere></Img>"] * EVAL_IMAGES  # stage 1: the visual tokens alone, a caption follows
    logits, ids = [], None
    for m, where in ((reference, "cpu"), (model, device)):
        embeds, mask, _ = m.embed_inputs(prompts, m.encode_images(images.to(where)))
        if ids is None:
            ids = m.llm.generate(inputs_embeds=embeds, attention_mask=mask, do_sample=False, num_beams=1,
                                 max_new_tokens=GREEDY_TOKENS, min_new_tokens=GREEDY_TOKENS,
                                 pad_token_id=m.tokenizer.pad_token_id)
        fed = ids[:, :-1].to(where)
        embeds = torch.cat([embeds, m.llm.get_input_embeddings()(fed).to(embeds.dtype)], dim=1)
        mask = torch.cat([mask, torch.ones_like(fed)], dim=1)
        logits.append(m.llm(inputs_embeds=embeds, attention_mask=mask).logits.float().cpu())
    cosine = torch.nn.functional.cosine_similarity(logits[0], logits[1], dim=-1)
    agree = (logits[1][:, -GREEDY_TOKENS:].argmax(-1) == ids).float().mean().item()
    out = {"min_cosine": cosine.min().item(), "median_cosine": cosine.median().item(), "cosine_min": COSINE_MIN,
           "greedy_agreement": agree, "greedy_min": GREEDY_MIN, "greedy_tokens": GREEDY_TOKENS,
           "example": reference.tokenizer.decode(ids[0], skip_special_tokens=True),
           "ok": cosine.min().item() >= COSINE_MIN and agree >= GREEDY_MIN}
    del reference
    return out, model


def table(report: dict) -> str:
    tr, inf, thr = report["training"], report["inference"], report["throughput"]
    rows = [("doctor", "ok" if "error" not in report["doctor"] else "error",
             f"device {report['doctor'].get('environment', {}).get('device')}"),
            ("tests", "skipped" if report["tests"] is None else ("ok" if report["tests"]["ok"] else "FAILED"),
             "" if report["tests"] is None else report["tests"]["summary"]),
            (f"training {tr['device_run']['precision']} vs cpu fp32", "ok" if tr["ok"] else "FAILED",
             f"final loss {tr['final_mean_device']:.4f} vs {tr['final_mean_cpu']:.4f} "
             f"({tr['final_relative_diff']:.1%}; worst step {tr['worst_step_relative_diff']:.1%}; tolerance "
             f"{tr['tolerance']:.0%})"),
            ("inference bf16 vs cpu fp32", "ok" if inf["ok"] else "FAILED",
             f"logits cosine min {inf['min_cosine']:.4f} (>= {COSINE_MIN}); greedy agreement "
             f"{inf['greedy_agreement']:.0%} of {GREEDY_TOKENS} tokens x {EVAL_IMAGES} images (>= {GREEDY_MIN:.0%})"),
            ("training throughput", "", f"{thr['train_samples_per_s_device']:.1f} samples/s on the device, "
                                        f"{thr['train_samples_per_s_cpu']:.1f} on the CPU (fp32)"),
            ("batched generation", "", f"batch {thr['generate_batch']}: {thr['generate_total_tok_s']:.1f} tok/s, "
                                       f"TTFT {thr['generate_ttft_s']:.2f} s, {thr['generate_ms_per_step']:.1f} ms/step")]
    head = [f"# Accelerator check: {report['device']} ({report['device_name']})", "",
            f"commit {report['commit']}, torch {report['torch']}, {report['steps']} training steps", "",
            "| check | result | figures |", "|---|---|---|"]
    return "\n".join(head + [f"| {a} | {b} | {c} |" for a, b, c in rows]) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", help="cpu, cuda, npu (default: what tinygpt picks)")
    parser.add_argument("--steps", type=int, default=300, help="training steps of each run")
    parser.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp16", "fp32"],
                        help="the device run's run.precision (auto: the chip's half precision; fp32 on a CPU)")
    parser.add_argument("--no-tests", action="store_true", help="skip the pytest step (CI runs it already)")
    parser.add_argument("--out", default=None, help="JSON path (default benchmarks/results/accelerator_<device>.json)")
    args = parser.parse_args(argv)
    device = devices.resolve_device(args.device)
    desc = devices.describe(str(device))
    name = next((d["name"] for d in desc["devices"] if d["type"] == device.type), C.machine()["cpu"])
    started = time.perf_counter()
    print(f"accelerator check on {device} ({name})", flush=True)
    report = {"device": str(device), "device_name": name, **C.git_commit(), "torch": torch.__version__,
              "steps": args.steps, "machine": C.machine(), "doctor": run_doctor()}
    print("doctor: recorded", flush=True)
    report["tests"] = None if args.no_tests else run_tests(list(DEVICE_TESTS))
    if report["tests"]:
        print(f"tests: {report['tests']['summary']}", flush=True)
    with tempfile.TemporaryDirectory(prefix="tinygpt_acc_") as work:
        work = Path(work)
        cfg = tinygpt.load_config(STAGE)
        synthetic(str(work / "corpus"), train_images=256, eval_images=4, image_size=cfg.model.vision.image_size,
                  shard_size=64, questions_per_image=1)
        precision = devices.dtype_name(devices.autocast_dtype(device, args.precision))
        accel = train(work / "corpus", work / "device", str(device), precision, args.steps)
        cpu = train(work / "corpus", work / "cpu", "cpu", "fp32", args.steps)
        report["training"] = {**compare_losses(accel, cpu), "device_run": accel, "cpu_run": cpu}
        print(f"training: {report['training']['ok']}", flush=True)
        report["inference"], model = compare_inference(cpu["checkpoint"], work / "corpus", device)
        print(f"inference: {report['inference']['ok']}", flush=True)
        row = gen_bench.run_one(model, device, 8, 16, 16)
    report["throughput"] = {"train_samples_per_s_device": accel["samples_per_s"],
                            "train_samples_per_s_cpu": cpu["samples_per_s"], "generate_batch": 8,
                            "generate_total_tok_s": row["total_tok_s"], "generate_ttft_s": row["ttft_s"],
                            "generate_ms_per_step": row["median_ms_per_step"]}
    report["ok"] = bool(report["training"]["ok"] and report["inference"]["ok"]
                        and (report["tests"] is None or report["tests"]["ok"]))
    report["wall_s"] = time.perf_counter() - started
    out = Path(args.out or C.RESULTS / f"accelerator_{device.type}.json")
    C.write_json(out, report)
    markdown = table(report)
    out.with_suffix(".md").write_text(markdown)
    print(markdown)
    print(f"{'PASS' if report['ok'] else 'FAIL'} in {report['wall_s']:.0f} s; wrote {out} and {out.with_suffix('.md')}")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
