"""`train.py`'s body: config -> device/process group -> model, task, runner -> train.

Several `--cfg-path` files run one after another in this process (a recipe's stages: the
quickstart trains its four this way): imports and the process group are set up once, every stage
otherwise starts as a run of its own would (seeded from its config, model built from its YAML and
the checkpoints it names), so the weights are those of one process per stage (tested).  Every
config is read and checked before the first stage trains: a typo in the last one costs seconds.
Each stage writes `<run.output_dir>/train_summary.json` (steps, final loss, checkpoint, wall and
CPU seconds from the start of that stage, the first including the imports).
"""
from __future__ import annotations

import argparse
import gc
import logging
import os
import resource
import time

import tinygpt
from .common import atomic
from .common import device as devices
from .common import dist
from .common.config import require_writable_dir
from .common.errors import UserError, entry_point
from .common.registry import registry
from .common.rng import seed_everything


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="train.py", description="Train a TinyGPT-V stage from a YAML config.")
    parser.add_argument("--cfg-path", required=True, nargs="+",
                        help="train_configs/<stage>.yaml; several: trained in this order in one process")
    parser.add_argument("--options", nargs="*", default=[], help="overrides for every config, e.g. run.max_epoch=2")
    parser.add_argument("--overwrite", action="store_true",
                        help="train into a run.output_dir that holds a finished run (its files are replaced)")
    return parser.parse_args(argv)


def refuse_finished_runs(paths, configs, overwrite: bool) -> None:
    """A run.output_dir holding a finished run (checkpoint_final.safetensors) is not trained into by
    surprise: that would append to its metrics and replace its checkpoint."""
    for path, cfg in zip(paths, configs):
        final = os.path.join(cfg.run.output_dir, "checkpoint_final.safetensors")
        if os.path.exists(final) and not overwrite and not cfg.run.resume_ckpt_path:
            raise UserError(f"{path}: run.output_dir {cfg.run.output_dir} holds a finished run ({final}); "
                            f"train elsewhere (--options run.output_dir=DIR), continue it "
                            f"(run.resume_ckpt_path=...), or replace it with --overwrite")


def _cpu_seconds() -> float:
    """User + system CPU of this process and of its finished children (data-loader workers)."""
    return sum(r.ru_utime + r.ru_stime for r in (resource.getrusage(resource.RUSAGE_SELF),
                                                 resource.getrusage(resource.RUSAGE_CHILDREN)))


def build_stage(cfg, device, info):
    """A stage as it starts training: (model, task, runner), seeded from its config (benchmarks that
    time a recipe's own steps build it here too)."""
    seed_everything(cfg.run.seed)  # identical initial weights on every rank
    model = tinygpt.build_model(cfg, device)
    seed_everything(cfg.run.seed + info.rank)  # distinct dropout / augmentation streams
    task = registry.get("task", cfg.run.task)(cfg)
    return model, task, registry.get("runner", cfg.run.runner)(cfg, model, task, device, info)


@entry_point("train.py")
def main(argv=None) -> int:
    began, began_cpu = time.monotonic(), _cpu_seconds()
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    configs = [tinygpt.load_config(path, args.options) for path in args.cfg_path]
    outputs = [cfg.run.output_dir for cfg in configs]
    if len(set(outputs)) < len(outputs):
        raise UserError(f"--cfg-path: two configs write to the same run.output_dir ({outputs}); each stage needs its own")
    for cfg in configs:
        require_writable_dir(cfg.source, "run.output_dir", cfg.run.output_dir)
    refuse_finished_runs(args.cfg_path, configs, args.overwrite)
    device = devices.resolve_device(configs[0].run.device)
    for path, cfg in zip(args.cfg_path[1:], configs[1:]):
        if devices.resolve_device(cfg.run.device) != device:
            raise UserError(f"{path}: run.device {cfg.run.device!r} differs from {args.cfg_path[0]}'s "
                            f"({configs[0].run.device!r}); stages trained in one process share one device")
    info = dist.init_distributed(device)
    try:
        for path, cfg in zip(args.cfg_path, configs):
            summary = build_stage(cfg, device, info)[2].train()
            gc.collect()  # the finished stage's model and optimizer state, before the next is built
            now, cpu = time.monotonic(), _cpu_seconds()
            summary.update(config=path, wall_s=round(now - began, 1), cpu_s=round(cpu - began_cpu, 1))
            began, began_cpu = now, cpu
            if info.is_main:
                atomic.write_json(os.path.join(cfg.run.output_dir, "train_summary.json"), summary)
                print(f"checkpoint: {summary['checkpoint']}")
                if summary["loss_curve"]:
                    print(f"loss curve: {summary['loss_curve']}")
    finally:
        dist.cleanup()
    return 0
