"""Length bucketing (run.group_by_length) before/after: padding and training-step speed on real batches.

    python -m benchmarks.bucketing                               # tiny stage 2 on data/synthetic
    python -m benchmarks.bucketing --cfg-path train_configs/tiny/stage4.yaml --dataset coco_vqa

Builds the stage's model (random weights: speed does not depend on them) and one dataset of the
stage, then takes the same number of batches from a plain and a bucketed loader and runs a full
training step (forward, backward, AdamW) on each, alternating arms batch by batch so that host load
hits both alike.  Padding = answer tokens the batch pads to / answer tokens it holds (1.0 = none).
"""
from __future__ import annotations

import argparse
import statistics

import torch

import tinygpt
from tinygpt.common.optim import build_optimizer
from tinygpt.datasets import build_dataset, build_loader
from tinygpt.tasks.image_text import ImageTextTask

from . import _common as C

ARMS = ("plain", "bucketed")


def padding(tokenizer, answers: list[str]) -> tuple[int, int]:
    """(tokens held, tokens padded to) for one batch's answers."""
    lengths = [len(ids) for ids in tokenizer(answers, add_special_tokens=False)["input_ids"]]
    return sum(lengths), max(lengths) * len(lengths)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cfg-path", default="train_configs/tiny/stage2.yaml")
    parser.add_argument("--dataset", default=None, help="which entry of datasets: (default: the first)")
    parser.add_argument("--batches", type=int, default=30, help="timed steps per arm")
    parser.add_argument("--options", nargs="*", default=[])
    C.add_output_args(parser)
    args = parser.parse_args(argv)

    cfg = tinygpt.load_config(args.cfg_path, args.options + ["model.ckpt=[]"])
    name = args.dataset or next(iter(cfg.datasets))
    if name not in cfg.datasets:
        parser.error(f"{args.cfg_path} has no dataset {name!r} (it has {', '.join(cfg.datasets)})")
    device = torch.device("cpu")
    model = tinygpt.build_model(cfg, device, load_weights=False)
    model.train()
    optimizer = build_optimizer(model, cfg.run)
    task = ImageTextTask(cfg)
    dataset = build_dataset(name, cfg)
    batch = cfg.datasets[name].batch_size or cfg.run.batch_size_train
    loaders = {arm: iter(build_loader(dataset, batch, name=name, seed=cfg.run.seed, group_by_length=arm == "bucketed"))
               for arm in ARMS}

    def step(samples) -> float:
        with C.Timer(device) as t:
            loss = task.train_step(model, samples)
            (loss.total / loss.units.clamp(min=1)).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        return t.seconds

    step(next(loaders["plain"]))  # warm-up: allocator, thread pools
    runs = {arm: {"step_s": [], "held": 0, "padded": 0} for arm in ARMS}
    for _ in range(args.batches):
        for arm in ARMS:
            samples = next(loaders[arm])
            held, padded = padding(model.tokenizer, samples["answer"])
            runs[arm]["held"] += held
            runs[arm]["padded"] += padded
            runs[arm]["step_s"].append(step(samples))
    rows = []
    for arm in ARMS:
        r = runs[arm]
        median = statistics.median(r["step_s"])
        rows.append({"arm": arm, "batch": batch, "padding": r["padded"] / r["held"], "step_s": median,
                     "samples_per_s": batch / median, "all_step_s": r["step_s"]})
    rows[1]["speedup"] = rows[0]["step_s"] / rows[1]["step_s"]
    print(C.table(rows, [("arm", "arm", "s"), ("batch", "batch", "d"), ("padding", "padded/held tokens", ".2f"),
                         ("step_s", "median step s", ".4f"), ("samples_per_s", "samples/s", ".1f"),
                         ("speedup", "speed-up", ".2f")]))
    payload = {"benchmark": "bucketing", "machine": C.machine(), "device": str(device), "dtype": "fp32",
               "torch": torch.__version__, "config": args.cfg_path, "dataset": name, "options": args.options,
               "rows": rows}
    path = C.write_json(C.result_path(args, f"bucketing_{name}.json"), payload)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
