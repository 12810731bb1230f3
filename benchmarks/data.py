"""Data pipeline benchmark: images/s of the two kinds of training input, against what a training
step consumes.

    python dataset/make_synthetic.py --out /tmp/bench_syn --train-images 400 --eval-images 40
    python -m benchmarks.data --data /tmp/bench_syn                       # workers 0 1 2, 224 and 48 px

Pipelines, built exactly as a run builds them (`build_dataset` + `build_loader`, the registered
builders, `collate`):
  laion     webdataset shards (`<key>.jpg` + `<key>.json`), a shuffle buffer, JPEG decode, transform
  coco_vqa  a LAVIS JSON annotation file + an image directory (one file open + decode per question)
both with the training transform `blip2_image_train` (TinyGPT-V's whole-image bicubic resize,
CLIP-normalised) and the `blip_caption` text processor.  Per (pipeline, image size, num_workers):
  startup s   DataLoader iterator creation to an epoch's first batch (worker start, shard open), median
  images/s    steady state: images after each epoch's first batch / the seconds they took
  incl. startup  every image / the whole time (this tiny set restarts workers every 400 images)
A pipeline keeps up when its steady images/s exceeds the training step's appetite, read from the
committed `benchmarks/results/train_<preset>_*.json` (samples/s of the median step).  The synthetic
images are 112 px JPEGs; real LAION/COCO images are ~500 px and decode ~10-20x slower, so the margins
here are upper bounds.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import statistics
import sys
import time

import torch

from tinygpt.common.config import Config, DatasetConfig, ProcessorConfig

from . import _common as C

PIPELINES = ("laion", "coco_vqa")


def dataset_config(name: str, data: str, image_size: int) -> DatasetConfig:
    vis = ProcessorConfig(name="blip2_image_train", image_size=image_size)
    if name == "laion":
        return DatasetConfig(builder="laion", storage=[os.path.join(data, "train")], vis_processor=vis)
    return DatasetConfig(builder="coco_vqa", storage=[os.path.join(data, "vqa", "vqa_train.json")],
                         image_root=os.path.join(data, "images"), vis_processor=vis)


def measure(name: str, data: str, image_size: int, workers: int, batch: int, images: int, seed: int = 0) -> dict:
    """Iterate epochs of the pipeline until `images` images came out.  Each epoch starts fresh
    workers (they are not persistent, as in training), so every epoch's first batch is timed apart
    (startup) and the steady rate counts the images after it: with the 400-image synthetic set an
    epoch is short, and real epochs (millions of images) pay the startup once."""
    from tinygpt.datasets import build_dataset, build_loader

    cfg = Config(datasets={name: dataset_config(name, data, image_size)})
    cfg.run.seed = seed
    dataset = build_dataset(name, cfg)
    loader = build_loader(dataset, batch, name=name, num_workers=workers, seed=seed)
    seen, epoch, steady_images, steady_s, startups = 0, 0, 0, 0.0, []
    t_all = time.perf_counter()
    while seen < images:
        dataset.set_epoch(epoch)
        if hasattr(loader.sampler, "set_epoch"):
            loader.sampler.set_epoch(epoch)
        t0 = time.perf_counter()
        t_first = None
        for b in loader:
            n = b["image"].shape[0]
            seen += n
            if t_first is None:
                t_first = time.perf_counter()
                startups.append(t_first - t0)
            else:
                steady_images += n
            if seen >= images:
                break
        if t_first is not None:
            steady_s += time.perf_counter() - t_first
        epoch += 1
    total_s = time.perf_counter() - t_all
    return {"pipeline": name, "image_size": image_size, "num_workers": workers, "batch": batch,
            "images": seen, "epochs": epoch, "startup_s": statistics.median(startups),
            "images_per_s": steady_images / max(steady_s, 1e-9), "images_per_s_incl_startup": seen / total_s}


def appetite() -> dict:
    """samples/s of the training benchmark's committed results (median step, per preset and arm)."""
    out = {}
    for path in sorted(glob.glob(str(C.RESULTS / "train_*.json"))):
        with open(path) as f:
            result = json.load(f)
        for arm, r in result.get("arms", {}).items():
            out[f"{os.path.basename(path)}:{arm}"] = {
                "preset": result.get("preset"), "arm": arm, "samples_per_s": r["samples_per_s"],
                "image_size": result.get("config", {}).get("vision", {}).get("image_size"),
                "loadavg_at_start": result.get("machine", {}).get("loadavg_at_start")}
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="/tmp/bench_syn", help="output of dataset/make_synthetic.py")
    parser.add_argument("--pipelines", nargs="+", default=list(PIPELINES), choices=PIPELINES)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--image-sizes", type=int, nargs="+", default=[224, 48],
                        help="transform output size (224: full size; 48: the tiny recipe)")
    parser.add_argument("--batch", type=int, default=32, help="the tiny recipe's batch_size_train")
    parser.add_argument("--images", type=int, default=800, help="images per measurement (several epochs)")
    parser.add_argument("--repeats", type=int, default=3, help="round-robin repeats of every setting; median reported")
    C.add_output_args(parser)
    args = parser.parse_args(argv)
    if not os.path.isdir(os.path.join(args.data, "train")):
        parser.error(f"{args.data} has no train/ shards: run `python dataset/make_synthetic.py --out {args.data} "
                     "--train-images 400 --eval-images 40` first")

    info = C.machine()
    settings = [(size, name, w) for size in args.image_sizes for name in args.pipelines for w in args.workers]
    for name in args.pipelines:  # warm-up: imports, codecs, thread pools (the first pass ran 30x slower)
        measure(name, args.data, args.image_sizes[0], 0, args.batch, 2 * args.batch)
    runs = {s: [] for s in settings}
    for _ in range(args.repeats):  # round-robin, so that host load hits every setting alike
        for size, name, w in settings:
            runs[(size, name, w)].append(measure(name, args.data, size, w, args.batch, args.images))
            r = runs[(size, name, w)][-1]
            print(f"  {name} {size}px workers={w}: {r['images_per_s']:.0f} images/s "
                  f"(startup {r['startup_s']:.2f} s)", flush=True)
    rows = []
    for setting in settings:
        row = dict(runs[setting][0])
        for key in ("startup_s", "images_per_s", "images_per_s_incl_startup"):
            row[key] = statistics.median(r[key] for r in runs[setting])
        row["all_images_per_s"] = [r["images_per_s"] for r in runs[setting]]
        rows.append(row)

    need = appetite()
    tiny = [v["samples_per_s"] for v in need.values() if v["preset"] == "tiny" and v["arm"] == "uncached"]
    tiny_rate = tiny[0] if tiny else None
    for r in rows:
        r["x_tiny_step"] = r["images_per_s"] / tiny_rate if tiny_rate else None
    print(C.table(rows, [("pipeline", "pipeline", "s"), ("image_size", "px", "d"), ("num_workers", "workers", "d"),
                         ("startup_s", "startup s", ".2f"), ("images_per_s", "images/s (median)", ".0f"),
                         ("images_per_s_incl_startup", "incl. startup", ".0f"),
                         ("x_tiny_step", "x tiny step", ".2f")]))
    for key, v in need.items():
        print(f"training appetite {key}: {v['samples_per_s']:.1f} samples/s ({v['image_size']} px)")
    result = {"benchmark": "data", "machine": info, "torch": torch.__version__, "data": args.data,
              "batch": args.batch, "images_per_measurement": args.images, "rows": rows, "appetite": need,
              "tiny_step_samples_per_s": tiny_rate}
    out = C.write_json(C.result_path(args, "data.json"), result)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
