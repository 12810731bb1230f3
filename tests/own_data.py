"""Small generated datasets in the formats users bring (docs/own-data.md), with the awkward cases
each format has, and a stage YAML around the tiny test model (tests/tiny.py) that reads them.

Images are flat colour squares whose colour is the answer, so a few dozen steps learn something.
"""
from __future__ import annotations

import json
from pathlib import Path

from omegaconf import OmegaConf
from PIL import Image

from tiny import tiny_model_config

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220), "yellow": (230, 220, 20)}
QUESTION = "what colour is the image?"


def write_images(root: Path, per_colour: int, folder: str = "train", size: int = 28) -> list[tuple[str, str]]:
    """(relative path, colour) of `per_colour` images of each colour under root/<folder>/<colour>/."""
    out = []
    for colour, rgb in COLOURS.items():
        (root / folder / colour).mkdir(parents=True, exist_ok=True)
        for k in range(per_colour):
            rel = f"{folder}/{colour}/{k}.png"
            Image.new("RGB", (size, size), tuple(max(0, c - 7 * k) for c in rgb)).save(root / rel)
            out.append((rel, colour))
    return out


def write_vqa_jsonl(path: Path, images: list[tuple[str, str]], awkward: bool = True) -> None:
    """One {"image", "question", "answer"} line per image; with `awkward`, also a line that is not
    JSON, a record without an answer and a record whose image does not exist (3 skips)."""
    lines = [json.dumps({"image": rel, "question": QUESTION, "answer": colour, "id": i})
             for i, (rel, colour) in enumerate(images)]
    if awkward:
        lines[1:1] = ['{"image": "train/red/0.png", "question": ',  # cut short
                      json.dumps({"image": images[0][0], "question": QUESTION})]
        lines.append(json.dumps({"image": "train/red/missing.png", "question": QUESTION, "answer": "red"}))
    path.write_text("\n".join(lines) + "\n")


def write_stage(path: Path, root: Path, datasets: dict, *, template: str = "[INST] {} [/INST]", end_sym: str = "###",
                ckpt: tuple = (), run: dict | None = None, **model) -> Path:
    """A stage YAML: the tiny test model (tokenizer + Phi config under `root`), `datasets`, `run`."""
    model_cfg = OmegaConf.to_container(OmegaConf.structured(tiny_model_config(root)))
    model_cfg.update(prompt_template=template, end_sym=end_sym, ckpt=list(ckpt), **model)
    model_cfg["llm"]["lora"]["dropout"] = 0.0
    run_cfg = {"device": "cpu", "num_workers": 0, "batch_size_train": 4, "iters_per_epoch": 4, "max_epoch": 1,
               "warmup_steps": 1, "log_every": 1, "tensorboard": False, "seed": 0,
               "output_dir": str(path.parent / "output" / path.stem)}
    run_cfg.update(run or {})
    path.write_text(OmegaConf.to_yaml({"model": model_cfg, "datasets": datasets, "run": run_cfg}))
    return path


def vis(size: int = 28) -> dict:
    """A resize-only image processor (a crop could cut the colour out: not here, but keep it whole)."""
    return {"name": "blip2_image_train", "image_size": size, "min_scale": 1.0}
