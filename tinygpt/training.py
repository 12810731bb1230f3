"""`train.py`'s body: config -> device/process group -> model, task, runner -> train."""
from __future__ import annotations

import argparse
import logging

import tinygpt
from .common import device as devices
from .common import dist
from .common.errors import entry_point
from .common.registry import registry
from .common.rng import seed_everything


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="train.py", description="Train a TinyGPT-V stage from a YAML config.")
    parser.add_argument("--cfg-path", required=True, help="train_configs/<stage>.yaml")
    parser.add_argument("--options", nargs="*", default=[], help="overrides, e.g. run.max_epoch=2")
    return parser.parse_args(argv)


@entry_point("train.py")
def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        cfg = tinygpt.load_config(args.cfg_path, args.options)
        device = devices.resolve_device(cfg.run.device)
        info = dist.init_distributed(device)
        seed_everything(cfg.run.seed)  # identical initial weights on every rank
        model = tinygpt.build_model(cfg, device)
        seed_everything(cfg.run.seed + info.rank)  # distinct dropout / augmentation streams
        task = registry.get("task", cfg.run.task)(cfg)
        runner = registry.get("runner", cfg.run.runner)(cfg, model, task, device, info)
        summary = runner.train()
    finally:
        dist.cleanup()
    if info.is_main:
        print(f"checkpoint: {summary['checkpoint']}")
        if summary["loss_curve"]:
            print(f"loss curve: {summary['loss_curve']}")
    return 0
