"""Per-step A/B of the folded LoRA forward (models/lora.py `FoldedLoraLinear`, the default) against
peft's own forward, on a recipe's real stages: each stage built as `train.py` builds it (its YAML,
the checkpoints it names: run `bash quickstart.sh` first), its own data loader and optimizer.

    python -m benchmarks.lora_fold                          # the tiny recipe's stages 2-4
    python -m benchmarks.lora_fold --cfg-path train_configs/tiny/stage3.yaml --rounds 5 --steps 60

After --warmup steps the arms take turns (ABBA), --steps optimizer steps each, --rounds times, so
that load from other processes (and the feature cache filling) hits both alike; each arm's figure is the median step (samples/s), with the
per-round ratios beside it.  Both arms train the same model in turn (its weights move on; the time
of a step does not depend on them).  The fold changes nothing in what is computed:
tests/models/test_lora_fold.py checks losses and gradients equal.
The JSON (output/benchmarks/lora_fold.json; with --record benchmarks/results/) records the machine, the load and the commit.
"""
from __future__ import annotations

import argparse
import contextlib
import statistics
import time

from peft.tuners.lora import Linear as PeftLoraLinear

import tinygpt
from tinygpt.common import device as devices
from tinygpt.common import dist
from tinygpt.models.lora import FoldedLoraLinear
from tinygpt.training import build_stage

from . import _common as C

ARMS = ("peft", "folded")


@contextlib.contextmanager
def arm(name: str):
    """`peft`: every FoldedLoraLinear runs peft's forward for the duration; `folded`: as built."""
    if name == "folded":
        yield
        return
    folded = FoldedLoraLinear.forward
    FoldedLoraLinear.forward = PeftLoraLinear.forward
    try:
        yield
    finally:
        FoldedLoraLinear.forward = folded


def measure_stage(path: str, args, device, info) -> dict:
    cfg = tinygpt.load_config(path, [f"run.output_dir={C.workdir('lora_fold')}/{path.replace('/', '_')}",
                                     "run.iters_per_epoch=1000000"])
    model, task, runner = build_stage(cfg, device, info)
    batches = task.build_train_loader(info, device)
    runner.ddp.train()
    n_adapters = sum(isinstance(m, FoldedLoraLinear) for m in model.modules())
    for _ in range(args.warmup):
        runner._train_step(batches)
    steps = {name: [] for name in ARMS}
    rounds = []
    for n in range(args.rounds):
        medians = {}
        for name in (ARMS if n % 2 == 0 else ARMS[::-1]):  # ABBA: neither arm always goes first
            times = []
            with arm(name):
                for _ in range(args.steps):
                    began = time.perf_counter()
                    runner._train_step(batches)
                    C.synchronize(device)
                    times.append(time.perf_counter() - began)
            steps[name] += times
            medians[name] = statistics.median(times)
        rounds.append(medians["peft"] / medians["folded"])
    batch = cfg.run.batch_size_train * cfg.run.accum_grad_iters
    row = {"stage": path, "lora_layers": n_adapters, "batch": batch, "rounds_x": [round(x, 3) for x in rounds]}
    for name in ARMS:
        row[f"{name}_sps"] = batch / statistics.median(steps[name])
    row["x"] = row["folded_sps"] / row["peft_sps"]
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cfg-path", nargs="+", default=[f"train_configs/tiny/stage{n}.yaml" for n in (2, 3, 4)],
                        help="stage YAMLs (LoRA on an LLM that trains; default: the tiny recipe's stages 2-4)")
    parser.add_argument("--steps", type=int, default=40, help="steps per arm per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=10)
    C.add_output_args(parser)
    args = parser.parse_args(argv)
    info_machine, commit = C.machine(), C.git_commit()
    device = devices.resolve_device("auto")
    info = dist.init_distributed(device)
    rows = []
    for path in args.cfg_path:
        rows.append(measure_stage(path, args, device, info))
        r = rows[-1]
        print(f"{r['stage']}: peft {r['peft_sps']:.1f} -> folded {r['folded_sps']:.1f} samples/s ({r['x']:.2f}x; "
              f"rounds {r['rounds_x']})", flush=True)
    print(C.table(rows, [("stage", "stage", "s"), ("lora_layers", "LoRA layers", "d"), ("peft_sps", "peft samples/s", ".1f"),
                         ("folded_sps", "folded samples/s", ".1f"), ("x", "x", ".2f")]))
    result = {"benchmark": "lora_fold", **commit, "machine": info_machine,
              "loadavg_at_end": C.machine()["loadavg_at_start"], "device": str(device), "steps": args.steps,
              "rounds": args.rounds, "warmup": args.warmup, "rows": rows}
    print(f"wrote {C.write_json(C.result_path(args, 'lora_fold.json'), result)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
